/*
 * hll: HyperLogLog registers, their two in-memory forms, the canonical
 * encoding and Ertl's improved estimator.
 *
 *   add(hash) ---> sparse: sorted uint32 array, entry = index << 8 | rank
 *                    |  more than HLL_SPARSE_MEMORY_MAX entries
 *                    v
 *                  dense: one byte per register (16384 bytes)
 *
 * Both forms keep NONZERO, the number of non-zero registers, so that the
 * encoder can pick the canonical form (sparse up to HLL_SPARSE_MAX, else
 * dense) without looking at the registers.
 */
#include "hll.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "xalloc.h"

#define HLL_ENTRY_RANK_BITS 8
#define HLL_ENTRY_RANK_MASK 0xffu
#define HLL_SPARSE_INITIAL_CAP 4
#define HLL_DENSE_REGISTER_MASK ((1u << HLL_DENSE_REGISTER_BITS) - 1)
/* Histogram buckets for the estimator: register values 0 .. q+1. */
#define HLL_HISTOGRAM_SIZE (HLL_RANK_MAX + 1)
#define HLL_VARINT_PAYLOAD_BITS 7
/* alpha_inf = 1 / (2 ln 2), the estimator's constant for large m. */
#define HLL_ALPHA_INF (1.0 / (2.0 * 0.693147180559945309417))

struct hll {
    uint8_t *dense;        /* HLL_REGISTERS bytes, or NULL while sparse */
    uint32_t *sparse;      /* sorted by index; NULL when empty or dense */
    uint32_t sparse_len;
    uint32_t sparse_cap;
    uint32_t nonzero;      /* non-zero registers, in either form */
};

/* ------------------------------------------------------------------ */
/* Registers                                                           */

static inline uint32_t
hll_entry(uint32_t index, unsigned rank)
{
    return index << HLL_ENTRY_RANK_BITS | rank;
}

static inline uint32_t
hll_entry_index(uint32_t entry)
{
    return entry >> HLL_ENTRY_RANK_BITS;
}

static inline unsigned
hll_entry_rank(uint32_t entry)
{
    return entry & HLL_ENTRY_RANK_MASK;
}

struct hll *
hll_create(void)
{
    return xcalloc(1, sizeof(struct hll));
}

void
hll_destroy(struct hll *h)
{
    if (h == NULL)
        return;
    free(h->dense);
    free(h->sparse);
    free(h);
}

struct hll *
hll_clone(const struct hll *h)
{
    struct hll *c = hll_create();

    c->nonzero = h->nonzero;
    if (h->dense != NULL) {
        c->dense = xmalloc(HLL_REGISTERS);
        memcpy(c->dense, h->dense, HLL_REGISTERS);
    } else if (h->sparse_len > 0) {
        c->sparse = xmalloc(h->sparse_len * sizeof(uint32_t));
        memcpy(c->sparse, h->sparse, h->sparse_len * sizeof(uint32_t));
        c->sparse_len = c->sparse_cap = h->sparse_len;
    }
    return c;
}

/* Switches H to the dense form (a no-op if it is dense already). */
static void
hll_densify(struct hll *h)
{
    if (h->dense != NULL)
        return;
    h->dense = xcalloc(HLL_REGISTERS, 1);
    for (uint32_t i = 0; i < h->sparse_len; i++)
        h->dense[hll_entry_index(h->sparse[i])] =
            (uint8_t)hll_entry_rank(h->sparse[i]);
    free(h->sparse);
    h->sparse = NULL;
    h->sparse_len = h->sparse_cap = 0;
}

/* The position of the first sparse entry whose index is >= INDEX. */
static uint32_t
hll_sparse_find(const struct hll *h, uint32_t index)
{
    uint32_t lo = 0, hi = h->sparse_len;
    uint32_t key = hll_entry(index, 0);

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;

        if (h->sparse[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* register[INDEX] := max(register[INDEX], RANK); RANK is 1..HLL_RANK_MAX. */
static void
hll_set_max(struct hll *h, uint32_t index, unsigned rank)
{
    uint32_t pos;

    if (h->dense == NULL) {
        pos = hll_sparse_find(h, index);
        if (pos < h->sparse_len && hll_entry_index(h->sparse[pos]) == index) {
            if (hll_entry_rank(h->sparse[pos]) < rank)
                h->sparse[pos] = hll_entry(index, rank);
            return;
        }
        if (h->sparse_len < HLL_SPARSE_MEMORY_MAX) {
            if (h->sparse_len == h->sparse_cap) {
                h->sparse_cap = h->sparse_cap == 0 ? HLL_SPARSE_INITIAL_CAP
                                                   : h->sparse_cap * 2;
                h->sparse = xrealloc(h->sparse,
                                     h->sparse_cap * sizeof(uint32_t));
            }
            memmove(h->sparse + pos + 1, h->sparse + pos,
                    (h->sparse_len - pos) * sizeof(uint32_t));
            h->sparse[pos] = hll_entry(index, rank);
            h->sparse_len++;
            h->nonzero++;
            return;
        }
        hll_densify(h);
    }
    if (h->dense[index] < rank) {
        if (h->dense[index] == 0)
            h->nonzero++;
        h->dense[index] = (uint8_t)rank;
    }
}

void
hll_add_hash(struct hll *h, uint64_t hash)
{
    uint32_t index = (uint32_t)(hash >> HLL_RANK_BITS);
    uint64_t rest = hash << HLL_PRECISION;   /* the other 50 bits, on top */
    unsigned rank = rest == 0 ? HLL_RANK_MAX
                              : (unsigned)__builtin_clzll(rest) + 1;

    hll_set_max(h, index, rank);
}

void
hll_add(struct hll *h, const void *data, size_t len)
{
    hll_add_hash(h, hash_string64(data, len));
}

/* DST (sparse) := max(DST, SRC (sparse)) by one pass over both arrays. */
static void
hll_merge_sparse(struct hll *dst, const struct hll *src)
{
    uint32_t n = dst->sparse_len + src->sparse_len;
    uint32_t *out = xmalloc((n == 0 ? 1 : n) * sizeof(uint32_t));
    uint32_t i = 0, j = 0, k = 0;

    while (i < dst->sparse_len && j < src->sparse_len) {
        uint32_t a = dst->sparse[i], b = src->sparse[j];

        if (hll_entry_index(a) < hll_entry_index(b)) {
            out[k++] = a;
            i++;
        } else if (hll_entry_index(b) < hll_entry_index(a)) {
            out[k++] = b;
            j++;
        } else {
            out[k++] = a > b ? a : b;   /* same index: the larger rank */
            i++;
            j++;
        }
    }
    while (i < dst->sparse_len)
        out[k++] = dst->sparse[i++];
    while (j < src->sparse_len)
        out[k++] = src->sparse[j++];
    free(dst->sparse);
    dst->sparse = out;
    dst->sparse_len = k;
    dst->sparse_cap = n;
    dst->nonzero = k;
    if (k > HLL_SPARSE_MEMORY_MAX)
        hll_densify(dst);
}

/* DST (dense) := max(DST, SRC (dense)); a loop the compiler vectorizes. */
static void
hll_merge_dense(struct hll *dst, const struct hll *src)
{
    uint8_t *d = dst->dense;
    const uint8_t *s = src->dense;
    uint32_t nonzero = 0;

    for (uint32_t i = 0; i < HLL_REGISTERS; i++) {
        d[i] = d[i] > s[i] ? d[i] : s[i];
        nonzero += d[i] != 0;
    }
    dst->nonzero = nonzero;
}

void
hll_merge(struct hll *dst, const struct hll *src)
{
    if (dst == src || src->nonzero == 0)
        return;
    if (dst->dense == NULL && src->dense == NULL) {
        hll_merge_sparse(dst, src);
        return;
    }
    if (src->dense == NULL) {
        for (uint32_t i = 0; i < src->sparse_len; i++)
            hll_set_max(dst, hll_entry_index(src->sparse[i]),
                        hll_entry_rank(src->sparse[i]));
        return;
    }
    hll_densify(dst);
    hll_merge_dense(dst, src);
}

size_t
hll_nonzero(const struct hll *h)
{
    return h->nonzero;
}

unsigned
hll_register(const struct hll *h, uint32_t index)
{
    uint32_t pos;

    if (h->dense != NULL)
        return h->dense[index];
    pos = hll_sparse_find(h, index);
    if (pos < h->sparse_len && hll_entry_index(h->sparse[pos]) == index)
        return hll_entry_rank(h->sparse[pos]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Estimator (Ertl 2017, "improved estimator")                         */

/* sigma(x) = x + sum_{k>=1} x^(2^k) 2^(k-1), for x in [0, 1]. */
static double
hll_sigma(double x)
{
    double y = 1.0, z = x, z_old;

    if (x == 1.0)
        return INFINITY;
    do {
        x *= x;
        z_old = z;
        z += x * y;
        y += y;
    } while (z != z_old);
    return z;
}

/* tau(x) = (1 - x - sum_{k>=1} (1 - x^(2^-k))^2 2^-k) / 3, x in [0, 1]. */
static double
hll_tau(double x)
{
    double y = 1.0, z, z_old;

    if (x == 0.0 || x == 1.0)
        return 0.0;
    z = 1.0 - x;
    do {
        x = sqrt(x);
        z_old = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
    } while (z != z_old);
    return z / 3.0;
}

double
hll_estimate(const struct hll *h)
{
    uint32_t counts[HLL_HISTOGRAM_SIZE] = { 0 };
    const double m = (double)HLL_REGISTERS;
    double z;

    if (h->nonzero == 0)
        return 0.0;
    if (h->dense != NULL) {
        for (uint32_t i = 0; i < HLL_REGISTERS; i++)
            counts[h->dense[i]]++;
    } else {
        counts[0] = HLL_REGISTERS - h->sparse_len;
        for (uint32_t i = 0; i < h->sparse_len; i++)
            counts[hll_entry_rank(h->sparse[i])]++;
    }
    z = m * hll_tau(1.0 - counts[HLL_RANK_BITS + 1] / m);
    for (int k = HLL_RANK_BITS; k >= 1; k--)
        z = 0.5 * (z + counts[k]);
    z += m * hll_sigma(counts[0] / m);
    return HLL_ALPHA_INF * m * m / z;
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */

static void
hll_error(char *err, size_t errlen, const char *reason)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "hll: %s", reason);
}

static size_t
hll_varint_size(uint64_t v)
{
    size_t n = 1;

    while (v >>= HLL_VARINT_PAYLOAD_BITS)
        n++;
    return n;
}

/* Reads a varint and rejects a non-minimal one (so the form stays
 * canonical). 0, or -1. */
static int
hll_get_minimal_varint(struct buf_reader *in, uint64_t *v)
{
    size_t start = in->pos;

    if (buf_get_varint(in, v) != 0)
        return -1;
    return in->pos - start == hll_varint_size(*v) ? 0 : -1;
}

static void
hll_encode_sparse(const struct hll *h, struct buf_writer *out)
{
    uint32_t prev = 0;

    buf_put_u8(out, HLL_FORM_SPARSE);
    buf_put_varint(out, h->nonzero);
    if (h->dense == NULL) {
        for (uint32_t i = 0; i < h->sparse_len; i++) {
            uint32_t index = hll_entry_index(h->sparse[i]);

            buf_put_varint(out, index - prev);
            buf_put_u8(out, (uint8_t)hll_entry_rank(h->sparse[i]));
            prev = index;
        }
        return;
    }
    for (uint32_t index = 0; index < HLL_REGISTERS; index++) {
        if (h->dense[index] == 0)
            continue;
        buf_put_varint(out, index - prev);
        buf_put_u8(out, h->dense[index]);
        prev = index;
    }
}

/* Register I occupies bits 6*I .. 6*I+5 of the body, counting bit 0 as the
 * least significant bit of the first byte. */
static void
hll_encode_dense(const struct hll *h, struct buf_writer *out)
{
    uint8_t packed[HLL_DENSE_BYTES];
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t n = 0;

    for (uint32_t i = 0; i < HLL_REGISTERS; i++) {
        acc |= (uint32_t)h->dense[i] << bits;
        bits += HLL_DENSE_REGISTER_BITS;
        while (bits >= 8) {
            packed[n++] = (uint8_t)acc;
            acc >>= 8;
            bits -= 8;
        }
    }
    buf_put_u8(out, HLL_FORM_DENSE);
    buf_put_bytes(out, packed, sizeof(packed));
}

void
hll_encode(const struct hll *h, struct buf_writer *out)
{
    /* The form goes by NONZERO alone, never by the in-memory form (a
     * decoded sketch may be dense in memory yet encode sparse). */
    if (h->nonzero <= HLL_SPARSE_MAX)
        hll_encode_sparse(h, out);
    else
        hll_encode_dense(h, out);
}

static struct hll *
hll_decode_sparse(struct buf_reader *in, char *err, size_t errlen)
{
    struct hll *h = NULL;
    uint64_t count;
    uint32_t index = 0;

    if (hll_get_minimal_varint(in, &count) != 0) {
        hll_error(err, errlen, "bad sparse count");
        goto fail;
    }
    if (count > HLL_SPARSE_MAX) {
        hll_error(err, errlen, "sparse form with too many entries");
        goto fail;
    }
    /* Each entry takes at least two bytes: reject before allocating. */
    if (count * 2 > buf_remaining(in)) {
        hll_error(err, errlen, "truncated sparse entries");
        goto fail;
    }
    h = hll_create();
    if (count > HLL_SPARSE_MEMORY_MAX) {
        h->dense = xcalloc(HLL_REGISTERS, 1);
    } else if (count > 0) {
        h->sparse = xmalloc((size_t)count * sizeof(uint32_t));
        h->sparse_cap = (uint32_t)count;
    }
    for (uint64_t i = 0; i < count; i++) {
        uint64_t delta;
        uint8_t rank;

        if (hll_get_minimal_varint(in, &delta) != 0
            || buf_get_u8(in, &rank) != 0) {
            hll_error(err, errlen, "truncated or bad sparse entry");
            goto fail;
        }
        if (i > 0 && delta == 0) {
            hll_error(err, errlen, "duplicate register index");
            goto fail;
        }
        if (delta >= HLL_REGISTERS - index) {
            hll_error(err, errlen, "register index out of range");
            goto fail;
        }
        if (rank == 0 || rank > HLL_RANK_MAX) {
            hll_error(err, errlen, "rank out of range");
            goto fail;
        }
        index += (uint32_t)delta;
        if (h->dense != NULL)
            h->dense[index] = rank;
        else
            h->sparse[h->sparse_len++] = hll_entry(index, rank);
    }
    h->nonzero = (uint32_t)count;
    return h;

fail:
    hll_destroy(h);
    return NULL;
}

static struct hll *
hll_decode_dense(struct buf_reader *in, char *err, size_t errlen)
{
    struct hll *h = NULL;
    const uint8_t *packed;
    uint32_t acc = 0, nonzero = 0;
    unsigned bits = 0;
    size_t n = 0;

    if (buf_get_bytes(in, &packed, HLL_DENSE_BYTES) != 0) {
        hll_error(err, errlen, "truncated dense registers");
        goto fail;
    }
    h = hll_create();
    h->dense = xmalloc(HLL_REGISTERS);
    for (uint32_t i = 0; i < HLL_REGISTERS; i++) {
        unsigned rank;

        while (bits < HLL_DENSE_REGISTER_BITS) {
            acc |= (uint32_t)packed[n++] << bits;
            bits += 8;
        }
        rank = acc & HLL_DENSE_REGISTER_MASK;
        acc >>= HLL_DENSE_REGISTER_BITS;
        bits -= HLL_DENSE_REGISTER_BITS;
        if (rank > HLL_RANK_MAX) {
            hll_error(err, errlen, "rank out of range");
            goto fail;
        }
        h->dense[i] = (uint8_t)rank;
        nonzero += rank != 0;
    }
    if (nonzero <= HLL_SPARSE_MAX) {
        hll_error(err, errlen, "dense form with too few registers set");
        goto fail;
    }
    h->nonzero = nonzero;
    return h;

fail:
    hll_destroy(h);
    return NULL;
}

struct hll *
hll_decode(struct buf_reader *in, char *err, size_t errlen)
{
    uint8_t form;

    if (buf_get_u8(in, &form) != 0) {
        hll_error(err, errlen, "missing form byte");
        return NULL;
    }
    if (form == HLL_FORM_SPARSE)
        return hll_decode_sparse(in, err, errlen);
    if (form == HLL_FORM_DENSE)
        return hll_decode_dense(in, err, errlen);
    hll_error(err, errlen, "unknown form");
    return NULL;
}
