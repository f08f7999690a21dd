/*
 * testrand: a small seeded PRNG for property tests and benchmarks, so every
 * run sees the same "random" inputs. xorshift-style generator seeded through
 * a splitmix64 step; not for anything but tests.
 */
#ifndef TALLY_TESTRAND_H
#define TALLY_TESTRAND_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* How many random cases to run: N, or 20 N when TALLY_LONG=1 (make
 * check-long). */
static inline int
testrand_scale(int n)
{
    const char *s = getenv("TALLY_LONG");

    return s != NULL && s[0] == '1' ? n * 20 : n;
}

struct testrand {
    uint64_t s;
};

static inline void
testrand_seed(struct testrand *r, uint64_t seed)
{
    r->s = seed + 0x9e3779b97f4a7c15ULL;
}

static inline uint64_t
testrand_next(struct testrand *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static inline uint64_t
testrand_below(struct testrand *r, uint64_t n)
{
    return n == 0 ? 0 : testrand_next(r) % n;
}

/* Uniform in [0, 1). */
static inline double
testrand_unit(struct testrand *r)
{
    return (double)(testrand_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Standard normal (Box-Muller). */
static inline double
testrand_normal(struct testrand *r)
{
    double u1 = testrand_unit(r), u2 = testrand_unit(r);

    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#endif
