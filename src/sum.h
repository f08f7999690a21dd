/*
 * sum: a compensated (Neumaier) double accumulator, used wherever a state
 * keeps a sum (counter, percentile). It keeps integer totals exact below
 * 2^53 like a plain double does, and keeps non-integer totals of one sign
 * within far less than 1e-9 relative of the exact sum whatever the order of
 * adding and merging.
 */
#ifndef TALLY_SUM_H
#define TALLY_SUM_H

#include "buf.h"

struct sum {
    double hi;     /* running sum */
    double lo;     /* accumulated rounding error of HI */
};

static inline void
sum_add(struct sum *s, double v)
{
    double t = s->hi + v;

    if ((s->hi < 0 ? -s->hi : s->hi) >= (v < 0 ? -v : v))
        s->lo += (s->hi - t) + v;
    else
        s->lo += (v - t) + s->hi;
    s->hi = t;
}

static inline void
sum_merge(struct sum *dst, const struct sum *src)
{
    sum_add(dst, src->hi);
    dst->lo += src->lo;
}

static inline double
sum_value(const struct sum *s)
{
    return s->hi + s->lo;
}

/* Encodes the value (one number): a zigzag varint when it is an integer of
 * magnitude below 2^53, else tag + binary64. See schema/state-encoding.md. */
void sum_encode(const struct sum *s, struct buf_writer *w);
/* 0, or -1 on short/malformed input or a non-finite value. */
int sum_decode(struct sum *s, struct buf_reader *r);

#endif
