/*
 * number: the one checked way to turn text into a number, and a total
 * order on doubles. Each parser
 * takes the whole of S (LEN bytes, no NUL needed) and rejects empty input,
 * leading or trailing junk (including spaces), overflow, NaN and infinity.
 */
#ifndef TALLY_NUMBER_H
#define TALLY_NUMBER_H

#include <stddef.h>
#include <stdint.h>

/* Maps a finite double to an integer with the same order, in which -0.0
 * comes just before +0.0, so ties between doubles break the same way
 * everywhere. */
int64_t number_order_key(double v);

/* Each returns 0 and stores the value, or -1 without touching *OUT. */
int number_parse_double(const char *s, size_t len, double *out);
int number_parse_int64(const char *s, size_t len, int64_t *out);
int number_parse_uint64(const char *s, size_t len, uint64_t *out);

#endif
