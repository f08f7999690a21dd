/*
 * hll: a HyperLogLog distinct-count sketch with precision 14, as pure math
 * over memory. No windows and no JSON here; unique.c wraps it as a state.
 *
 *   value bytes --hash_string64--> 64-bit hash h
 *       index = top 14 bits of h                  (0 .. 16383)
 *       rank  = leading zeros of the other 50 bits, plus 1   (1 .. 51)
 *       register[index] = max(register[index], rank)
 *
 *   merge    = register-wise max (exact, associative, commutative)
 *   estimate = Ertl's improved estimator (2017), no bias tables
 *
 * In memory a sketch starts sparse (a sorted array of (index, rank) pairs)
 * and turns into a byte-per-register array once it holds more than
 * HLL_SPARSE_MEMORY_MAX pairs. The in-memory form is invisible from
 * outside: the encoding depends only on the register contents.
 *
 * Encoding (schema/state-unique.md has every byte):
 *   sparse  (at most HLL_SPARSE_MAX non-zero registers)
 *       HLL_FORM_SPARSE, varint count, count x (varint index delta, rank)
 *   dense   (more than HLL_SPARSE_MAX non-zero registers)
 *       HLL_FORM_DENSE, 16384 registers x 6 bits, little-endian bit order
 */
#ifndef TALLY_HLL_H
#define TALLY_HLL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define HLL_PRECISION 14
#define HLL_REGISTERS (1u << HLL_PRECISION)            /* m = 16384 */
#define HLL_HASH_BITS 64
#define HLL_RANK_BITS (HLL_HASH_BITS - HLL_PRECISION)  /* q = 50 */
#define HLL_RANK_MAX (HLL_RANK_BITS + 1)                /* 51 */
/* Bits per register in the dense encoding, and its size in bytes. */
#define HLL_DENSE_REGISTER_BITS 6
#define HLL_DENSE_BYTES (HLL_REGISTERS * HLL_DENSE_REGISTER_BITS / 8)
/* The canonical-form threshold: a sketch with at most this many non-zero
 * registers encodes sparse, any other dense. A sparse body is at most
 * 2 (count) + 2 per entry + 127 (deltas of 128 or more, whose sum stays
 * below 16384) bytes, so at 6000 entries it is at most 12129 bytes,
 * always below the 12288 of the dense body. */
#define HLL_SPARSE_MAX 6000
/* Pairs kept in the in-memory sparse array before switching to dense
 * (4 bytes each, so at most 4 KiB against the dense 16 KiB). */
#define HLL_SPARSE_MEMORY_MAX 1024
/* Form bytes of the encoding. */
#define HLL_FORM_SPARSE 1
#define HLL_FORM_DENSE 2

struct hll;

/* Returns a new empty sketch owned by the caller (no register storage is
 * allocated until the first add). */
struct hll *hll_create(void);
/* Frees H and everything it owns. NULL is allowed. */
void hll_destroy(struct hll *h);
/* Returns a new independent copy of H (borrowed), owned by the caller. */
struct hll *hll_clone(const struct hll *h);

/* Adds the LEN bytes at DATA (borrowed, not kept) to H. */
void hll_add(struct hll *h, const void *data, size_t len);
/* Adds an already computed 64-bit hash (as hash_string64 would give). */
void hll_add_hash(struct hll *h, uint64_t hash);
/* DST := register-wise max(DST, SRC). SRC is borrowed and unchanged. */
void hll_merge(struct hll *dst, const struct hll *src);

/* The number of non-zero registers (0 means nothing was ever added). */
size_t hll_nonzero(const struct hll *h);
/* The value (0 .. HLL_RANK_MAX) of register INDEX; INDEX must be below
 * HLL_REGISTERS. */
unsigned hll_register(const struct hll *h, uint32_t index);
/* The estimated number of distinct values added; 0 for an empty sketch,
 * +infinity for a saturated one (every register at HLL_RANK_MAX). */
double hll_estimate(const struct hll *h);

/* Appends the canonical encoding of H (borrowed) to OUT. */
void hll_encode(const struct hll *h, struct buf_writer *out);
/* Decodes one sketch from IN (borrowed; left just past the sketch).
 * Returns a new sketch owned by the caller, or NULL on any truncated,
 * malformed or non-canonical input, with a reason in ERR (ERRLEN bytes,
 * NUL-terminated; ERR may be NULL). Never reads past IN. */
struct hll *hll_decode(struct buf_reader *in, char *err, size_t errlen);

#endif
