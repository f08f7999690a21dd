/*
 * ddsketch: a mergeable quantile sketch with relative error (DDSketch,
 * Masson, Rim and Lee, VLDB 2019). Pure arithmetic over memory: no windows,
 * no JSON. The percentile state type (percentile.c) is built on it.
 *
 *   value x ──┬── x >= MIN_INDEXABLE ───▶ positive store, bin index(x)
 *             ├── |x| < MIN_INDEXABLE ──▶ zero count
 *             └── x <= -MIN_INDEXABLE ──▶ negative store, bin index(-x)
 *
 *   index(m) = ceil(ln(m) / ln(gamma)), gamma = (1 + alpha) / (1 - alpha)
 *   bin i holds magnitudes in (gamma^(i-1), gamma^i]; its representative
 *   value 2 gamma^i / (gamma + 1) is within alpha (relative) of all of them.
 *
 * Each store is a dense array of uint64 counts with an index offset. It
 * spans at most DDSKETCH_MAX_BINS bins: with M the highest non-empty index
 * of a store, every count of index below M - DDSKETCH_MAX_BINS + 1 is moved
 * into that bin (the lowest kept one). The rule depends only on M, which is
 * the maximum over everything ever added, so the bins are a function of the
 * multiset of values alone: add and merge are exactly associative and
 * commutative. Collapsing costs accuracy only for the smallest magnitudes
 * of a store whose values span more than gamma^4096 (about 4e35).
 *
 * The byte encoding is described in schema/state-percentile.md.
 */
#ifndef TALLY_DDSKETCH_H
#define TALLY_DDSKETCH_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Fixed by format version 1; changing any of these changes the format. */
#define DDSKETCH_RELATIVE_ACCURACY 0.01
/* gamma = 1.01 / 0.99 rounded to binary64, and 1 / ln(gamma). */
#define DDSKETCH_GAMMA 1.0202020202020201
#define DDSKETCH_INDEX_FACTOR 49.998333288886784
/* Magnitudes below this count as zero. */
#define DDSKETCH_MIN_INDEXABLE 1e-9
/* Largest magnitude accepted (equals EVENT_VALUE_MAX of event.h). */
#define DDSKETCH_VALUE_MAX 1e100
/* index(DDSKETCH_MIN_INDEXABLE) and index(DDSKETCH_VALUE_MAX). */
#define DDSKETCH_INDEX_MIN (-1036)
#define DDSKETCH_INDEX_MAX 11513
/* Most bins one store spans (highest index - lowest index + 1). */
#define DDSKETCH_MAX_BINS 4096
/* Most values one sketch holds (zero count and both stores together). */
#define DDSKETCH_COUNT_MAX (UINT64_C(1) << 62)

struct ddsketch;

/* Returns a new empty sketch owned by the caller. */
struct ddsketch *ddsketch_create(void);
/* Frees S and everything it owns. S may be NULL. */
void ddsketch_destroy(struct ddsketch *s);
/* Returns a new independent copy of S (borrowed), owned by the caller. */
struct ddsketch *ddsketch_clone(const struct ddsketch *s);

/* Adds X once / N times. 0, or -1 (S unchanged) if X is NaN, |X| >
 * DDSKETCH_VALUE_MAX, or the total would exceed DDSKETCH_COUNT_MAX.
 * Adding N = 0 is a no-op returning 0. Allocates only when X falls outside
 * the bins already covered by its store. */
int ddsketch_add(struct ddsketch *s, double x);
int ddsketch_add_count(struct ddsketch *s, double x, uint64_t n);

/* DST := DST + SRC (SRC borrowed, not changed). 0, or -1 (DST unchanged)
 * if the total would exceed DDSKETCH_COUNT_MAX. */
int ddsketch_merge(struct ddsketch *dst, const struct ddsketch *src);

/* Number of values added (zeros and both stores). */
uint64_t ddsketch_count(const struct ddsketch *s);
/* 1 if the sketch holds no value. */
int ddsketch_empty(const struct ddsketch *s);
/* 1 if A and B hold exactly the same counts in every bin, else 0. */
int ddsketch_equal(const struct ddsketch *a, const struct ddsketch *b);

/* The estimate of the RANK-th smallest value (1-based): walks the
 * negative store from the most negative bin, then the zeros, then the
 * positive store upwards. Zeros come back as exactly 0. NAN if RANK is 0
 * or above the count. */
double ddsketch_quantile_at_rank(const struct ddsketch *s, uint64_t rank);

/* The bin index of a magnitude M with DDSKETCH_MIN_INDEXABLE <= M <=
 * DDSKETCH_VALUE_MAX (the result is then within [DDSKETCH_INDEX_MIN,
 * DDSKETCH_INDEX_MAX]). */
int32_t ddsketch_index(double m);
/* The representative magnitude of bin INDEX: 2 gamma^INDEX / (gamma + 1). */
double ddsketch_bin_value(int32_t index);
/* Count held in bin INDEX of the negative store (NEGATIVE != 0) or of the
 * positive store; the zero count is ddsketch_zero_count. */
uint64_t ddsketch_bin_count(const struct ddsketch *s, int negative,
                            int32_t index);
uint64_t ddsketch_zero_count(const struct ddsketch *s);

/* 1 if MIN and MAX can be the smallest and largest of the values held in S:
 * each falls in the class (negative, zero, positive) of the lowest / highest
 * non-empty class of S, and each maps to the bin its role demands (the
 * largest magnitude of a store to its highest bin, the smallest to its
 * lowest bin after collapsing). Also requires MIN == MAX when S holds one
 * value. For an empty S returns 0. Used by decoders. */
int ddsketch_extremes_consistent(const struct ddsketch *s, double min,
                                 double max);

/* Appends the encoding of S (a varint body length, then the body) to OUT.
 * Equal bins give equal bytes. */
void ddsketch_encode(const struct ddsketch *s, struct buf_writer *out);
/* Decodes one encoded sketch from IN. Returns a new sketch owned by the
 * caller, or NULL on truncated, malformed or out-of-range input (never
 * reading past IN; the reader must then be abandoned). Allocates at most
 * DDSKETCH_MAX_BINS-sized arrays whatever the input. */
struct ddsketch *ddsketch_decode(struct buf_reader *in);

#endif
