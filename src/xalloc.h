/*
 * xalloc: the one allocation wrapper. Every allocation in libtally goes
 * through here; the out-of-memory policy (log to stderr and abort) lives in
 * one place, so callers never check for NULL.
 */
#ifndef TALLY_XALLOC_H
#define TALLY_XALLOC_H

#include <stddef.h>

/* Each returns memory the caller owns and frees with free(); never NULL. */
void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Copies LEN bytes of S and appends a NUL. */
char *xstrndup(const char *s, size_t len);

#endif
