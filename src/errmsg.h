/*
 * errmsg: the one way tally writes a reason into a caller's error buffer
 * (the "0 or -1 with a reason in ERR" convention of every module).
 */
#ifndef TALLY_ERRMSG_H
#define TALLY_ERRMSG_H

#include <stddef.h>

/* Formats into ERR (ERRLEN bytes, always NUL-terminated, cut if too
 * long); does nothing when ERR is NULL or ERRLEN is 0. */
void errmsg_say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
