/*
 * sum: the encoding of a compensated sum. On the wire a sum is one number
 * (HI + LO rounded); a decoded sum starts with LO = 0.
 *
 *   byte 0 = 0: integer follows as a zigzag varint (|v| < 2^53)
 *   byte 0 = 1: binary64 follows, little-endian
 */
#include "sum.h"

#include <math.h>

#define SUM_TAG_INTEGER 0
#define SUM_TAG_DOUBLE 1
#define SUM_INTEGER_LIMIT 9007199254740992.0   /* 2^53 */

void
sum_encode(const struct sum *s, struct buf_writer *w)
{
    double v = sum_value(s);

    if (v == trunc(v) && fabs(v) < SUM_INTEGER_LIMIT) {
        buf_put_u8(w, SUM_TAG_INTEGER);
        buf_put_svarint(w, (int64_t)v);
    } else {
        buf_put_u8(w, SUM_TAG_DOUBLE);
        buf_put_double(w, v);
    }
}

int
sum_decode(struct sum *s, struct buf_reader *r)
{
    uint8_t tag;
    int64_t i;
    double d;

    if (buf_get_u8(r, &tag) != 0)
        return -1;
    switch (tag) {
    case SUM_TAG_INTEGER:
        if (buf_get_svarint(r, &i) != 0)
            return -1;
        if (i >= (int64_t)SUM_INTEGER_LIMIT || i <= -(int64_t)SUM_INTEGER_LIMIT)
            return -1;
        d = (double)i;
        break;
    case SUM_TAG_DOUBLE:
        if (buf_get_double(r, &d) != 0 || !isfinite(d))
            return -1;
        if (d == trunc(d) && fabs(d) < SUM_INTEGER_LIMIT)
            return -1;             /* canonical form is the integer tag */
        break;
    default:
        return -1;
    }
    s->hi = d;
    s->lo = 0;
    return 0;
}
