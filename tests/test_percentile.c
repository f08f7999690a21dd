/*
 * test_percentile: the `percentile` state type (percentile.c) and the
 * DDSketch under it (ddsketch.c).
 *
 *   mapping / collapse      constants, bin bounds, the collapse rule
 *   merge properties        fold(all) == merge(fold(parts)) in random
 *                           orders and tree shapes, over thousands of sets
 *   codec                   round trips, exact bytes, truncation, fuzzing,
 *                           rejection of each kind of bad field
 *   accuracy / exactness    1% quantiles on 1M-value sets, exact fields
 *
 * All randomness comes from fixed seeds (testrand.h).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "buf.h"
#include "ddsketch.h"
#include "event.h"
#include "state.h"
#include "sum.h"
#include "testrand.h"
#include "xalloc.h"

#define ops (&percentile_ops)

/* Property test sizes. */
#define PROPERTY_SETS 1500          /* of each kind, integer and not */
#define PROPERTY_VALUES_MAX 400
#define PROPERTY_PARTS_MAX 8
/* Fuzzing. */
#define FUZZ_FLIPS 6000
#define FUZZ_RANDOM 4000
#define FUZZ_RANDOM_LEN_MAX 80
/* Accuracy. */
#define ACCURACY_VALUES 1000000
/* Relative error allowed: alpha plus floating-point slack at bin edges. */
#define ACCURACY_BOUND (DDSKETCH_RELATIVE_ACCURACY * (1 + 1e-9))
/* Sum tolerance against the long-double reference (DESIGN.md "Numbers");
 * mixed-sign sets also get 1e-15 of the sum of magnitudes, the rounding
 * of the reference itself under cancellation. */
#define SUM_RELATIVE_TOLERANCE 1e-9
#define SUM_CANCELLATION_SLACK 1e-15
/* Bytes for a sketch of 60,000 lognormal(0, 1) values must stay below. */
#define LOGNORMAL_BYTES_LIMIT 1024

/* ------------------------------------------------------------------ */
/* Helpers                                                              */

static void
fold_value(void *state, double v)
{
    struct event ev = { .type = EVENT_PERCENTILE, .value = v };

    ops->fold(state, &ev);
}

static void *
fold_values(const double *v, size_t n)
{
    void *state = ops->create(NULL);

    for (size_t i = 0; i < n; i++)
        fold_value(state, v[i]);
    return state;
}

/* Returns the encoding of STATE (caller frees), length in *LEN. */
static uint8_t *
encode_state(const void *state, size_t *len)
{
    struct buf_writer w;

    buf_writer_create(&w, 64);
    ops->encode(state, &w);
    return buf_writer_release(&w, len);
}

/* Decodes exactly LEN bytes (copied to an exact-size heap block so ASan
 * sees any overread). NULL if decode fails or leaves bytes unread. */
static void *
decode_exact(const uint8_t *data, size_t len)
{
    uint8_t *copy = xmalloc(len == 0 ? 1 : len);
    struct buf_reader r;
    char err[128];
    void *state;

    memcpy(copy, data, len);
    buf_reader_init(&r, copy, len);
    state = ops->decode(&r, err, sizeof(err));
    if (state != NULL && buf_remaining(&r) != 0) {
        ops->destroy(state);
        state = NULL;
    }
    free(copy);
    return state;
}

/* The fields of an encoded state, with the sketch bytes (its framing
 * included) pointing into the encoding. */
struct parsed_state {
    uint64_t count;
    struct sum sum;
    double min, max;
    const uint8_t *sketch;
    size_t sketch_len;
    size_t sketch_offset;
};

static void
parse_state(const uint8_t *data, size_t len, struct parsed_state *p)
{
    struct buf_reader r;
    uint8_t b;

    memset(p, 0, sizeof(*p));
    buf_reader_init(&r, data, len);
    assert_int_equal(buf_get_u8(&r, &b), 0);
    assert_int_equal(b, EVENT_PERCENTILE);
    assert_int_equal(buf_get_u8(&r, &b), 0);
    assert_int_equal(b, STATE_FORMAT_VERSION);
    assert_int_equal(buf_get_varint(&r, &p->count), 0);
    assert_int_equal(sum_decode(&p->sum, &r), 0);
    if (p->count > 0) {
        assert_int_equal(buf_get_double(&r, &p->min), 0);
        assert_int_equal(buf_get_double(&r, &p->max), 0);
    }
    p->sketch_offset = r.pos;
    p->sketch = data + r.pos;
    p->sketch_len = buf_remaining(&r);
}

static void
assert_same_bits(double a, double b)
{
    assert_memory_equal(&a, &b, sizeof(a));
}

static void
assert_render_equal(const void *a, const void *b)
{
    struct json_object *ja = ops->render(a, NULL);
    struct json_object *jb = ops->render(b, NULL);

    assert_string_equal(json_object_to_json_string(ja),
                        json_object_to_json_string(jb));
    assert_true(json_object_equal(ja, jb));
    json_object_put(ja);
    json_object_put(jb);
}

/* Encodes, decodes, re-encodes: same bytes, same rendering. */
static void
assert_round_trip(const void *state)
{
    size_t len, len2;
    uint8_t *bytes = encode_state(state, &len);
    void *decoded = decode_exact(bytes, len);
    uint8_t *bytes2;

    assert_non_null(decoded);
    bytes2 = encode_state(decoded, &len2);
    assert_int_equal(len, len2);
    assert_memory_equal(bytes, bytes2, len);
    assert_render_equal(state, decoded);
    free(bytes2);
    free(bytes);
    ops->destroy(decoded);
}

static int
compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------ */
/* Mapping and collapse                                                 */

static void
test_mapping_constants(void **unused)
{
    struct testrand r;
    double worst = 0;

    (void)unused;
    assert_true(DDSKETCH_GAMMA == (1 + DDSKETCH_RELATIVE_ACCURACY)
                                  / (1 - DDSKETCH_RELATIVE_ACCURACY));
    assert_true(DDSKETCH_INDEX_FACTOR == 1 / log(DDSKETCH_GAMMA));
    assert_true(DDSKETCH_VALUE_MAX == EVENT_VALUE_MAX);
    assert_int_equal(ddsketch_index(DDSKETCH_MIN_INDEXABLE), DDSKETCH_INDEX_MIN);
    assert_int_equal(ddsketch_index(DDSKETCH_VALUE_MAX), DDSKETCH_INDEX_MAX);
    assert_int_equal(ddsketch_index(1.0), 0);
    assert_int_equal(ddsketch_index(1.01), 1);
    assert_int_equal(ddsketch_index(2.0), 35);
    assert_int_equal(ddsketch_index(0.5), -34);
    /* Every value is within alpha of its bin's representative value. */
    testrand_seed(&r, 1);
    for (int i = 0; i < 200000; i++) {
        double m = pow(10, -9 + 109 * testrand_unit(&r));
        double rep, err;

        if (m > DDSKETCH_VALUE_MAX)
            m = DDSKETCH_VALUE_MAX;
        rep = ddsketch_bin_value(ddsketch_index(m));
        err = fabs(rep - m) / m;
        if (err > worst)
            worst = err;
    }
    assert_true(worst <= ACCURACY_BOUND);
    assert_true(worst > 0.0099);   /* the bound is nearly reached */
    print_message("mapping: worst representative error %.6f%%\n",
                  worst * 100);
}

static void
test_add_limits(void **unused)
{
    struct ddsketch *s = ddsketch_create();

    (void)unused;
    assert_int_equal(ddsketch_add(s, NAN), -1);
    assert_int_equal(ddsketch_add(s, INFINITY), -1);
    assert_int_equal(ddsketch_add(s, -INFINITY), -1);
    assert_int_equal(ddsketch_add(s, 1.0000001e100), -1);
    assert_true(ddsketch_empty(s));
    assert_int_equal(ddsketch_add(s, 1e100), 0);
    assert_int_equal(ddsketch_add(s, -1e100), 0);
    assert_int_equal(ddsketch_add(s, 9.99e-10), 0);     /* counts as zero */
    assert_int_equal(ddsketch_add(s, -9.99e-10), 0);
    assert_int_equal(ddsketch_add(s, 1e-9), 0);
    assert_int_equal(ddsketch_zero_count(s), 2);
    assert_int_equal(ddsketch_bin_count(s, 0, DDSKETCH_INDEX_MAX), 1);
    assert_int_equal(ddsketch_bin_count(s, 1, DDSKETCH_INDEX_MAX), 1);
    assert_int_equal(ddsketch_count(s), 5);
    assert_int_equal(ddsketch_add_count(s, 1, 0), 0);
    assert_int_equal(ddsketch_add_count(s, 1, DDSKETCH_COUNT_MAX - 5), 0);
    assert_int_equal(ddsketch_add(s, 1), -1);
    assert_true(ddsketch_count(s) == DDSKETCH_COUNT_MAX);
    assert_int_equal(ddsketch_merge(s, s), -1);
    assert_true(ddsketch_count(s) == DDSKETCH_COUNT_MAX);
    assert_true(isnan(ddsketch_quantile_at_rank(s, 0)));
    assert_true(isnan(ddsketch_quantile_at_rank(s, DDSKETCH_COUNT_MAX + 1)));
    ddsketch_destroy(s);
}

static void
test_collapse_rule(void **unused)
{
    struct ddsketch *a = ddsketch_create(), *b = ddsketch_create();
    int32_t top, lowest;

    (void)unused;
    /* 1e-9 .. 1e100 spans far more than DDSKETCH_MAX_BINS bins. */
    assert_int_equal(ddsketch_add(a, 1e-9), 0);
    assert_int_equal(ddsketch_add(a, 1e-5), 0);
    assert_int_equal(ddsketch_add(a, 1e60), 0);
    top = ddsketch_index(1e60);
    lowest = top - DDSKETCH_MAX_BINS + 1;
    assert_true(ddsketch_index(1e-5) < lowest);
    assert_int_equal(ddsketch_bin_count(a, 0, lowest), 2);
    assert_int_equal(ddsketch_bin_count(a, 0, DDSKETCH_INDEX_MIN), 0);
    assert_int_equal(ddsketch_bin_count(a, 0, top), 1);
    /* A value below the kept range lands in the lowest kept bin. */
    assert_int_equal(ddsketch_add(a, 3e-7), 0);
    assert_int_equal(ddsketch_bin_count(a, 0, lowest), 3);
    /* A value inside the kept range keeps its own bin. */
    assert_int_equal(ddsketch_add(a, 1e40), 0);
    assert_int_equal(ddsketch_bin_count(a, 0, ddsketch_index(1e40)), 1);
    /* Same values in another order, through merges: same bins. */
    assert_int_equal(ddsketch_add(b, 1e40), 0);
    {
        struct ddsketch *c = ddsketch_create(), *d = ddsketch_create();

        assert_int_equal(ddsketch_add(c, 1e60), 0);
        assert_int_equal(ddsketch_add(c, 3e-7), 0);
        assert_int_equal(ddsketch_add(d, 1e-5), 0);
        assert_int_equal(ddsketch_add(d, 1e-9), 0);
        assert_int_equal(ddsketch_merge(b, d), 0);
        assert_int_equal(ddsketch_merge(b, c), 0);
        ddsketch_destroy(c);
        ddsketch_destroy(d);
    }
    assert_true(ddsketch_equal(a, b));
    /* A new top moves the floor up and collapses again: all five values
     * below 1e100 (1e60 included) end in the new lowest kept bin. */
    assert_int_equal(ddsketch_add(a, 1e100), 0);
    assert_true(ddsketch_index(1e60) < DDSKETCH_INDEX_MAX - DDSKETCH_MAX_BINS + 1);
    assert_int_equal(ddsketch_bin_count(a, 0,
                                        DDSKETCH_INDEX_MAX - DDSKETCH_MAX_BINS + 1),
                     5);
    assert_int_equal(ddsketch_bin_count(a, 0, top), 0);
    assert_int_equal(ddsketch_count(a), 6);
    /* Negative store by magnitude, independently. */
    assert_int_equal(ddsketch_add(a, -1e-9), 0);
    assert_int_equal(ddsketch_add(a, -1e100), 0);
    assert_int_equal(ddsketch_bin_count(a, 1,
                                        DDSKETCH_INDEX_MAX - DDSKETCH_MAX_BINS + 1),
                     1);
    assert_true(ddsketch_quantile_at_rank(a, 1) < -9.8e99);
    ddsketch_destroy(a);
    ddsketch_destroy(b);
}

/* ------------------------------------------------------------------ */
/* Merge properties                                                     */

/* A value for a non-integer set, from one of several shapes. */
static double
random_real(struct testrand *r, int shape)
{
    double sign = testrand_below(r, 4) == 0 ? -1 : 1;

    switch (shape) {
    case 0:
        return sign * exp(testrand_normal(r) * 2);
    case 1:   /* around the zero threshold */
        return sign * pow(10, -12 + 5 * testrand_unit(r));
    case 2:   /* huge */
        return sign * pow(10, 100 * testrand_unit(r));
    case 3:   /* the whole range: collapses */
        return sign * pow(10, -9 + 109 * testrand_unit(r));
    case 4:
        return testrand_below(r, 2) ? 0.0 : -0.0;
    default:
        return sign * testrand_unit(r) * 1000;
    }
}

/* N values into V; integers (sum of magnitudes < 2^53) or not. */
static void
random_set(struct testrand *r, int integers, double *v, size_t n)
{
    if (integers) {
        double limit = pow(10, (double)testrand_below(r, 13));

        for (size_t i = 0; i < n; i++) {
            double x = floor(testrand_unit(r) * limit);

            v[i] = testrand_below(r, 3) == 0 ? -x : x;
        }
    } else {
        /* One to three shapes mixed per set. */
        int shapes[3];
        int nshapes = 1 + (int)testrand_below(r, 3);

        for (int k = 0; k < nshapes; k++)
            shapes[k] = (int)testrand_below(r, 6);
        for (size_t i = 0; i < n; i++)
            v[i] = random_real(r, shapes[testrand_below(r, (uint64_t)nshapes)]);
    }
}

/* Folds V into 2..8 parts, merges them in a random tree; returns it. */
static void *
fold_split_merge(struct testrand *r, const double *v, size_t n)
{
    void *parts[PROPERTY_PARTS_MAX];
    size_t nparts = 2 + testrand_below(r, PROPERTY_PARTS_MAX - 1);

    for (size_t k = 0; k < nparts; k++)
        parts[k] = ops->create(NULL);
    for (size_t i = 0; i < n; i++)
        fold_value(parts[testrand_below(r, nparts)], v[i]);
    while (nparts > 1) {
        size_t i = testrand_below(r, nparts);
        size_t j = testrand_below(r, nparts - 1);

        if (j >= i)
            j++;
        if (testrand_below(r, 4) == 0) {
            /* merge through a clone and an encode/decode round trip */
            size_t len;
            uint8_t *bytes = encode_state(parts[j], &len);
            void *decoded = decode_exact(bytes, len);
            void *copy = ops->clone(parts[i]);

            assert_non_null(decoded);
            assert_int_equal(ops->merge(copy, decoded), 0);
            ops->destroy(parts[i]);
            parts[i] = copy;
            ops->destroy(decoded);
            free(bytes);
        } else {
            assert_int_equal(ops->merge(parts[i], parts[j]), 0);
        }
        ops->destroy(parts[j]);
        parts[j] = parts[--nparts];
    }
    return parts[0];
}

static void
check_merge_property(int integers, uint64_t seed)
{
    struct testrand r;
    double *v = xmalloc(PROPERTY_VALUES_MAX * sizeof(*v));
    int collapsed = 0;

    testrand_seed(&r, seed);
    for (int set = 0; set < testrand_scale(PROPERTY_SETS); set++) {
        size_t n = testrand_below(&r, PROPERTY_VALUES_MAX + 1);
        void *whole, *merged;
        uint8_t *a, *b;
        size_t alen, blen;
        struct parsed_state pa, pb;

        random_set(&r, integers, v, n);
        whole = fold_values(v, n);
        merged = fold_split_merge(&r, v, n);
        a = encode_state(whole, &alen);
        b = encode_state(merged, &blen);
        if (integers) {
            assert_int_equal(alen, blen);
            assert_memory_equal(a, b, alen);
        } else {
            long double ref = 0, abs_total = 0;
            double tol;

            parse_state(a, alen, &pa);
            parse_state(b, blen, &pb);
            assert_int_equal(pa.count, n);
            assert_int_equal(pb.count, n);
            if (n > 0) {
                assert_same_bits(pa.min, pb.min);
                assert_same_bits(pa.max, pb.max);
            }
            assert_int_equal(pa.sketch_len, pb.sketch_len);
            assert_memory_equal(pa.sketch, pb.sketch, pa.sketch_len);
            for (size_t i = 0; i < n; i++) {
                ref += v[i];
                abs_total += fabsl((long double)v[i]);
            }
            tol = (double)(SUM_RELATIVE_TOLERANCE * fabsl(ref)
                           + SUM_CANCELLATION_SLACK * abs_total);
            assert_true(fabsl((long double)sum_value(&pa.sum) - ref) <= tol);
            assert_true(fabsl((long double)sum_value(&pb.sum) - ref) <= tol);
            if (pa.sketch_len > 0 && n > 0) {
                void *d = decode_exact(a, alen);

                assert_non_null(d);
                ops->destroy(d);
            }
        }
        /* The collapse rule was exercised when a store spans the max. */
        {
            double lo = INFINITY, hi = 0;

            for (size_t i = 0; i < n; i++) {
                double m = fabs(v[i]);

                if (m >= DDSKETCH_MIN_INDEXABLE && m < lo)
                    lo = m;
                if (m > hi)
                    hi = m;
            }
            if (hi >= DDSKETCH_MIN_INDEXABLE && lo <= hi
                && ddsketch_index(hi) - ddsketch_index(lo) >= DDSKETCH_MAX_BINS)
                collapsed++;
        }
        free(a);
        free(b);
        ops->destroy(whole);
        ops->destroy(merged);
    }
    if (!integers)
        assert_true(collapsed > testrand_scale(PROPERTY_SETS) / 10);
    print_message("merge property (%s): %d sets, %d wide enough to collapse\n",
                  integers ? "integers" : "reals", testrand_scale(PROPERTY_SETS), collapsed);
    free(v);
}

static void
test_merge_property_integers(void **unused)
{
    (void)unused;
    check_merge_property(1, 101);
}

static void
test_merge_property_reals(void **unused)
{
    (void)unused;
    check_merge_property(0, 202);
}

static void
test_merge_empty_and_self(void **unused)
{
    double v[] = { 3, -1, 0, 7.5, 1e-12 };
    void *a = fold_values(v, 5), *e = ops->create(NULL);
    void *doubled = fold_values(v, 5);
    size_t alen, blen;
    uint8_t *ab, *bb;

    (void)unused;
    assert_true(ops->empty(e));
    assert_false(ops->empty(a));
    ab = encode_state(a, &alen);
    assert_int_equal(ops->merge(a, e), 0);       /* x + 0 == x */
    bb = encode_state(a, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(ab, bb, alen);
    free(bb);
    assert_int_equal(ops->merge(e, a), 0);       /* 0 + x == x */
    bb = encode_state(e, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(ab, bb, alen);
    free(bb);
    for (int i = 0; i < 5; i++)
        fold_value(doubled, v[i]);
    assert_int_equal(ops->merge(a, a), 0);       /* x + x, aliased */
    free(ab);
    ab = encode_state(doubled, &alen);
    bb = encode_state(a, &blen);
    assert_int_equal(alen, blen);
    assert_memory_equal(ab, bb, alen);
    free(ab);
    free(bb);
    ops->destroy(a);
    ops->destroy(e);
    ops->destroy(doubled);
}

/* ------------------------------------------------------------------ */
/* Codec                                                                */

static void
test_empty_encoding(void **unused)
{
    static const uint8_t expected[] = { 0x03, 0x01, 0x00, 0x00, 0x00,
                                        0x03, 0x00, 0x00, 0x00 };
    void *e = ops->create(NULL);
    size_t len;
    uint8_t *bytes = encode_state(e, &len);
    struct json_object *j = ops->render(e, NULL);
    static const char *const nulls[] = { "min", "max", "p50", "p90",
                                         "p95", "p99", "p999" };

    (void)unused;
    assert_int_equal(len, sizeof(expected));
    assert_memory_equal(bytes, expected, len);
    assert_round_trip(e);
    assert_int_equal(json_object_object_length(j), 9);
    assert_int_equal(json_object_get_int64(json_object_object_get(j, "count")), 0);
    assert_true(json_object_is_type(json_object_object_get(j, "sum"),
                                    json_type_double));
    assert_true(json_object_get_double(json_object_object_get(j, "sum")) == 0);
    for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++) {
        struct json_object *f = NULL;

        assert_true(json_object_object_get_ex(j, nulls[i], &f));
        assert_null(f);
    }
    json_object_put(j);
    free(bytes);
    ops->destroy(e);
}

/* The worked example of schema/state-percentile.md. */
static void
test_worked_example(void **unused)
{
    static const double v[] = { -2, 0, 1, 1, 3 };
    static const uint8_t expected[] = {
        0x03, 0x01, 0x05, 0x00, 0x06,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x40,
        0x0c, 0x01,
        0x02, 0x00, 0x01, 0x02, 0x35, 0x01, 0x01,
        0x01, 0x46, 0x01, 0x01,
    };
    void *s = fold_values(v, 5);
    size_t len;
    uint8_t *bytes = encode_state(s, &len);

    (void)unused;
    assert_int_equal(len, sizeof(expected));
    assert_memory_equal(bytes, expected, len);
    assert_round_trip(s);
    free(bytes);
    ops->destroy(s);
}

/* Gaps of empty bins: bridged inside a run when that is no dearer. */
static void
test_sketch_bridging(void **unused)
{
    /* bins 0 and 3: two empty bins, a tie, bridged into one run */
    static const uint8_t bridged[] = { 0x09, 0x00, 0x01, 0x00, 0x04, 0x01,
                                       0x01, 0x00, 0x02, 0x00 };
    /* bins 0 and 4: three empty bins, cheaper as two runs */
    static const uint8_t split[] = { 0x09, 0x00, 0x02, 0x00, 0x01, 0x01,
                                     0x02, 0x01, 0x01, 0x00 };
    static const struct {
        double second;
        const uint8_t *bytes;
        size_t len;
    } cases[] = {
        { .second = 1.06, .bytes = bridged, .len = sizeof(bridged) },
        { .second = 1.08, .bytes = split, .len = sizeof(split) },
    };

    (void)unused;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct ddsketch *s = ddsketch_create(), *d;
        struct buf_writer w;
        struct buf_reader r;

        assert_int_equal(ddsketch_add(s, 1), 0);
        assert_int_equal(ddsketch_add(s, cases[c].second), 0);
        buf_writer_create(&w, 0);
        ddsketch_encode(s, &w);
        assert_int_equal(w.len, cases[c].len);
        assert_memory_equal(w.data, cases[c].bytes, w.len);
        buf_reader_init(&r, w.data, w.len);
        d = ddsketch_decode(&r);
        assert_non_null(d);
        assert_int_equal(buf_remaining(&r), 0);
        assert_true(ddsketch_equal(s, d));
        ddsketch_destroy(d);
        buf_writer_destroy(&w);
        ddsketch_destroy(s);
    }
}

/* 1 if the framed sketch BODY decodes with ddsketch_decode. */
static int
sketch_decodes(const uint8_t *body, size_t len)
{
    struct buf_writer w;
    struct buf_reader r;
    struct ddsketch *s;
    uint8_t *copy;
    size_t n;

    buf_writer_create(&w, 16);
    buf_put_varint(&w, len);
    buf_put_bytes(&w, body, len);
    copy = buf_writer_release(&w, &n);
    buf_reader_init(&r, copy, n);
    s = ddsketch_decode(&r);
    ddsketch_destroy(s);
    free(copy);
    return s != NULL;
}

static void
test_sketch_decode_rejects(void **unused)
{
    static const uint8_t good[] = { 0x00, 0x01, 0x00, 0x03, 0x01, 0x01, 0x02,
                                    0x00 };
    static const uint8_t zero_first[] = { 0x00, 0x01, 0x00, 0x02, 0x00, 0x02,
                                          0x00 };
    static const uint8_t zero_last[] = { 0x00, 0x01, 0x00, 0x02, 0x02, 0x03,
                                         0x00 };
    static const uint8_t gap_past_max[] = { 0x00, 0x02, 0x00, 0x01, 0x01,
                                            0xff, 0xff, 0x03, 0x01, 0x01,
                                            0x00 };
    static const uint8_t long_run[] = { 0x00, 0x01, 0x00, 0x81, 0x20, 0x01,
                                        0x00 };

    (void)unused;
    assert_true(sketch_decodes(good, sizeof(good)));
    assert_false(sketch_decodes(good, sizeof(good) - 1));
    assert_false(sketch_decodes(zero_first, sizeof(zero_first)));
    assert_false(sketch_decodes(zero_last, sizeof(zero_last)));
    assert_false(sketch_decodes(gap_past_max, sizeof(gap_past_max)));
    /* runs at bins 0 and 4096 span 4097 bins; 0 and 4095 are fine */
    {
        uint8_t span[] = { 0x00, 0x02, 0x00, 0x01, 0x01, 0xfe, 0x1f, 0x01,
                           0x01, 0x00 };

        assert_false(sketch_decodes(span, sizeof(span)));
        span[5] = 0xfd;
        assert_true(sketch_decodes(span, sizeof(span)));
    }
    /* a run of 4097 bins, more than a store may span */
    assert_false(sketch_decodes(long_run, sizeof(long_run)));
}

/* A few valid states of different shapes, for the codec tests. */
#define SAMPLE_STATES 7
static void *
sample_state(int which)
{
    struct testrand r;
    void *s = ops->create(NULL);

    testrand_seed(&r, 300 + (uint64_t)which);
    switch (which) {
    case 0:
        break;
    case 1:
        fold_value(s, 42);
        break;
    case 2:
        for (int i = 1; i <= 10; i++)
            fold_value(s, i);
        break;
    case 3:
        for (int i = 0; i < 2000; i++)
            fold_value(s, exp(testrand_normal(&r)));
        break;
    case 4:
        for (int i = 0; i < 500; i++)
            fold_value(s, random_real(&r, (int)testrand_below(&r, 6)));
        break;
    case 5:
        for (int i = 0; i < 300; i++)
            fold_value(s, random_real(&r, 3));
        break;
    default:
        for (int i = 0; i < 50; i++)
            fold_value(s, -(double)testrand_below(&r, 1000) - 0.5);
        break;
    }
    return s;
}

static void
test_round_trip(void **unused)
{
    (void)unused;
    for (int k = 0; k < SAMPLE_STATES; k++) {
        void *s = sample_state(k);
        void *c = ops->clone(s);
        size_t len, len2;
        uint8_t *before = encode_state(s, &len), *after;

        assert_round_trip(s);
        assert_round_trip(c);
        fold_value(c, 1);          /* the clone is independent */
        fold_value(c, -1e50);
        after = encode_state(s, &len2);
        assert_int_equal(len, len2);
        assert_memory_equal(before, after, len);
        assert_round_trip(c);
        free(before);
        free(after);
        ops->destroy(c);
        ops->destroy(s);
    }
}

static void
test_truncations(void **unused)
{
    (void)unused;
    for (int k = 0; k < SAMPLE_STATES; k++) {
        void *s = sample_state(k);
        size_t len;
        uint8_t *bytes = encode_state(s, &len);

        for (size_t cut = 0; cut < len; cut++)
            assert_null(decode_exact(bytes, cut));
        free(bytes);
        ops->destroy(s);
    }
}

/* A decoded fuzz state must behave: re-encode, decode, same bytes. */
static void
check_fuzzed(const uint8_t *data, size_t len, int *accepted)
{
    void *s = decode_exact(data, len);
    size_t len2;
    uint8_t *again;
    void *s2;

    if (s == NULL)
        return;
    (*accepted)++;
    again = encode_state(s, &len2);
    s2 = decode_exact(again, len2);
    assert_non_null(s2);
    assert_render_equal(s, s2);
    json_object_put(ops->render(s2, NULL));
    free(again);
    ops->destroy(s2);
    ops->destroy(s);
}

static void
test_fuzz(void **unused)
{
    struct testrand r;
    uint8_t *samples[SAMPLE_STATES];
    size_t lens[SAMPLE_STATES];
    int accepted = 0;

    (void)unused;
    testrand_seed(&r, 77);
    for (int k = 0; k < SAMPLE_STATES; k++) {
        void *s = sample_state(k);

        samples[k] = encode_state(s, &lens[k]);
        ops->destroy(s);
    }
    for (int i = 0; i < testrand_scale(FUZZ_FLIPS); i++) {
        int k = (int)testrand_below(&r, SAMPLE_STATES);
        uint8_t *copy = xmalloc(lens[k]);
        int flips = 1 + (int)testrand_below(&r, 3);

        memcpy(copy, samples[k], lens[k]);
        for (int f = 0; f < flips; f++) {
            size_t at = testrand_below(&r, lens[k]);

            if (testrand_below(&r, 2))
                copy[at] ^= (uint8_t)(1u << testrand_below(&r, 8));
            else
                copy[at] = (uint8_t)testrand_next(&r);
        }
        check_fuzzed(copy, lens[k], &accepted);
        free(copy);
    }
    for (int i = 0; i < testrand_scale(FUZZ_RANDOM); i++) {
        size_t len = testrand_below(&r, FUZZ_RANDOM_LEN_MAX + 1);
        uint8_t *buf = xmalloc(len + 2);

        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)testrand_next(&r);
        /* mostly a valid prefix, so the body gets exercised */
        if (len >= 2 && testrand_below(&r, 4) != 0) {
            buf[0] = EVENT_PERCENTILE;
            buf[1] = STATE_FORMAT_VERSION;
        }
        check_fuzzed(buf, len, &accepted);
        free(buf);
    }
    for (int k = 0; k < SAMPLE_STATES; k++)
        free(samples[k]);
    print_message("fuzz: %d of %d mutated inputs decoded (all re-encode)\n",
                  accepted, testrand_scale(FUZZ_FLIPS + FUZZ_RANDOM));
}

/* Decodes exactly BYTES and expects rejection. */
static void
expect_rejected(const uint8_t *bytes, size_t len)
{
    void *s = decode_exact(bytes, len);

    if (s != NULL)
        ops->destroy(s);
    assert_null(s);
}

static void
put_double_at(uint8_t *p, double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(bits >> (8 * i));
}

/* Builds a state encoding from parts: header fields, then a raw sketch
 * body (framed here). */
static uint8_t *
build_state(uint64_t count, double sum, double min, double max,
            const uint8_t *body, size_t body_len, size_t *len)
{
    struct buf_writer w;
    struct sum s = { .hi = sum, .lo = 0 };

    buf_writer_create(&w, 64);
    buf_put_u8(&w, EVENT_PERCENTILE);
    buf_put_u8(&w, STATE_FORMAT_VERSION);
    buf_put_varint(&w, count);
    sum_encode(&s, &w);
    if (count > 0) {
        buf_put_double(&w, min);
        buf_put_double(&w, max);
    }
    buf_put_varint(&w, body_len);
    buf_put_bytes(&w, body, body_len);
    return buf_writer_release(&w, len);
}

/* 1 if the state built from these parts decodes. */
static int
built_decodes(uint64_t count, double sum, double min, double max,
              const uint8_t *body, size_t body_len)
{
    size_t len;
    uint8_t *bytes = build_state(count, sum, min, max, body, body_len, &len);
    void *s = decode_exact(bytes, len);
    int ok = s != NULL;

    ops->destroy(s);
    free(bytes);
    return ok;
}

static void
test_decode_rejects(void **unused)
{
    static const double v[] = { 1, 2, 3 };
    void *s = fold_values(v, 3);
    size_t len;
    uint8_t *good = encode_state(s, &len);
    uint8_t *bad = xmalloc(len + 1);
    struct parsed_state p;
    size_t min_at, max_at;

    (void)unused;
    parse_state(good, len, &p);
    max_at = p.sketch_offset - 8;
    min_at = max_at - 8;
    assert_int_equal(p.count, 3);
    /* wrong type byte, wrong version */
    memcpy(bad, good, len);
    bad[0] = EVENT_COUNTER;
    expect_rejected(bad, len);
    memcpy(bad, good, len);
    bad[1] = STATE_FORMAT_VERSION + 1;
    expect_rejected(bad, len);
    bad[1] = 0;
    expect_rejected(bad, len);
    /* count disagreeing with the sketch */
    memcpy(bad, good, len);
    bad[2] = 4;
    expect_rejected(bad, len);
    bad[2] = 2;
    expect_rejected(bad, len);
    /* min > max; NaN and infinities; -0; out of event range */
    memcpy(bad, good, len);
    put_double_at(bad + min_at, 3);
    put_double_at(bad + max_at, 1);
    expect_rejected(bad, len);
    put_double_at(bad + min_at, NAN);
    put_double_at(bad + max_at, 3);
    expect_rejected(bad, len);
    put_double_at(bad + min_at, 1);
    put_double_at(bad + max_at, INFINITY);
    expect_rejected(bad, len);
    put_double_at(bad + min_at, -INFINITY);
    put_double_at(bad + max_at, 3);
    expect_rejected(bad, len);
    /* min or max not in the bins the sketch says */
    put_double_at(bad + min_at, 1.5);
    expect_rejected(bad, len);
    put_double_at(bad + min_at, 1);
    put_double_at(bad + max_at, 3.5);
    expect_rejected(bad, len);
    put_double_at(bad + max_at, 2.99);     /* same bin as 3: accepted */
    assert_int_equal(ddsketch_index(2.99), ddsketch_index(3));
    {
        void *ok = decode_exact(bad, len);

        assert_non_null(ok);
        ops->destroy(ok);
    }
    /* trailing junk inside the sketch framing */
    memcpy(bad, good, p.sketch_offset);
    bad[p.sketch_offset] = (uint8_t)(good[p.sketch_offset] + 1);
    memcpy(bad + p.sketch_offset + 1, good + p.sketch_offset + 1,
           len - p.sketch_offset - 1);
    bad[len] = 0;
    assert_true(good[p.sketch_offset] < 0x7f);
    expect_rejected(bad, len + 1);
    /* sanity: the untouched encoding decodes */
    {
        void *ok = decode_exact(good, len);

        assert_non_null(ok);
        ops->destroy(ok);
    }
    free(bad);
    free(good);
    ops->destroy(s);

    /* Hand-built states. Body: zero count, positive runs, negative runs. */
    {
        /* one run at index 0 (value 1), count 2 */
        static const uint8_t one[] = { 0x00, 0x01, 0x00, 0x01, 0x02, 0x00 };
        /* index INDEX_MAX + 1 */
        uint8_t high[16];
        struct buf_writer w;
        size_t n;

        assert_true(built_decodes(2, 2, 1, 1, one, sizeof(one)));
        assert_false(built_decodes(2, 2, 1, 1, one, sizeof(one) - 1));
        assert_false(built_decodes(3, 2, 1, 1, one, sizeof(one)));
        assert_false(built_decodes(2, 2, -0.0, 1, one, sizeof(one)));
        assert_false(built_decodes(0, 0, 0, 0, one, sizeof(one)));
        {
            static const uint8_t empty[] = { 0x00, 0x00, 0x00 };

            assert_true(built_decodes(0, 0, 0, 0, empty, sizeof(empty)));
            assert_false(built_decodes(0, 1, 0, 0, empty, sizeof(empty)));
        }
        /* one value: min must equal max */
        {
            static const uint8_t single[] = { 0x00, 0x01, 0x00, 0x01, 0x01,
                                              0x00 };

            assert_true(built_decodes(1, 1, 1, 1, single, sizeof(single)));
            assert_false(built_decodes(1, 1, 0.995, 1, single, sizeof(single)));
        }
        /* zero-count run ends; zero count in a bridged middle is fine */
        {
            static const uint8_t zero_first[] = { 0x00, 0x01, 0x00, 0x02,
                                                  0x00, 0x02, 0x00 };
            static const uint8_t zero_last[] = { 0x00, 0x01, 0x00, 0x02, 0x02,
                                                 0x03, 0x00 };
            static const uint8_t zero_mid[] = { 0x00, 0x01, 0x00, 0x03, 0x01,
                                                0x01, 0x02, 0x00 };
            /* counts 1, 0, 1 at indexes 0..2: values 1 and 1.04 */

            assert_false(built_decodes(1, 1.01, 1.01, 1.01, zero_first,
                                       sizeof(zero_first)));
            assert_false(built_decodes(2, 2, 1, 1, zero_last,
                                       sizeof(zero_last)));
            assert_true(built_decodes(2, 2.04, 1, 1.04, zero_mid,
                                      sizeof(zero_mid)));
            /* a negative count */
            {
                static const uint8_t negative[] = { 0x00, 0x01, 0x00, 0x02,
                                                    0x01, 0x03, 0x00 };

                assert_false(built_decodes(1, 1, 1, 1.02, negative,
                                           sizeof(negative)));
            }
        }
        /* index out of range */
        buf_writer_create(&w, 16);
        buf_put_varint(&w, 0);
        buf_put_varint(&w, 1);
        buf_put_svarint(&w, DDSKETCH_INDEX_MAX + 1);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 0);
        n = w.len;
        memcpy(high, w.data, n);
        buf_writer_destroy(&w);
        assert_false(built_decodes(1, 1e100, 1e100, 1e100, high, n));
        buf_writer_create(&w, 16);
        buf_put_varint(&w, 0);
        buf_put_varint(&w, 1);
        buf_put_svarint(&w, DDSKETCH_INDEX_MAX);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 0);
        assert_true(built_decodes(1, 1e100, 1e100, 1e100, w.data, w.len));
        buf_writer_destroy(&w);
        /* below the minimum index */
        buf_writer_create(&w, 16);
        buf_put_varint(&w, 0);
        buf_put_varint(&w, 1);
        buf_put_svarint(&w, DDSKETCH_INDEX_MIN - 1);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 0);
        assert_false(built_decodes(1, 1e-9, 1e-9, 1e-9, w.data, w.len));
        buf_writer_destroy(&w);
        /* a store spanning more than DDSKETCH_MAX_BINS */
        buf_writer_create(&w, 16);
        buf_put_varint(&w, 0);
        buf_put_varint(&w, 2);
        buf_put_svarint(&w, 0);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, DDSKETCH_MAX_BINS - 2);   /* next run at 4096 */
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 0);
        assert_false(built_decodes(2, 0, 1, ddsketch_bin_value(4096), w.data,
                                   w.len));
        /* one bin less is fine */
        w.data[5] = (uint8_t)(w.data[5] - 1);
        assert_true(built_decodes(2, 0, 1, ddsketch_bin_value(4095), w.data,
                                  w.len));
        buf_writer_destroy(&w);
        /* total count above DDSKETCH_COUNT_MAX */
        buf_writer_create(&w, 16);
        buf_put_varint(&w, DDSKETCH_COUNT_MAX);
        buf_put_varint(&w, 1);
        buf_put_svarint(&w, 0);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 1);
        buf_put_varint(&w, 0);
        assert_false(built_decodes(DDSKETCH_COUNT_MAX + 1, 1, 0, 1, w.data,
                                   w.len));
        buf_writer_destroy(&w);
        buf_writer_create(&w, 16);
        buf_put_varint(&w, DDSKETCH_COUNT_MAX + 1);
        buf_put_varint(&w, 0);
        buf_put_varint(&w, 0);
        assert_false(built_decodes(DDSKETCH_COUNT_MAX + 1, 0, 0, 0, w.data,
                                   w.len));
        buf_writer_destroy(&w);
        /* too many runs claimed */
        buf_writer_create(&w, 16);
        buf_put_varint(&w, 0);
        buf_put_varint(&w, 100000);
        buf_put_varint(&w, 0);
        assert_false(built_decodes(0, 0, 0, 0, w.data, w.len));
        buf_writer_destroy(&w);
    }
}

static void
test_merge_overflow(void **unused)
{
    static const uint8_t zeros[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                     0x80, 0x80, 0x40, 0x00, 0x00 };
    size_t len;
    uint8_t *bytes, *before, *after;
    void *a, *b;

    (void)unused;
    /* 2^62 zeros: the largest state there can be */
    bytes = build_state(DDSKETCH_COUNT_MAX, 0, 0, 0, zeros, sizeof(zeros),
                        &len);
    a = decode_exact(bytes, len);
    assert_non_null(a);
    b = ops->clone(a);
    before = encode_state(a, &len);
    assert_int_equal(ops->merge(a, b), -1);
    after = encode_state(a, &len);
    assert_memory_equal(before, after, len);
    fold_value(a, 5);                 /* past the limit: left out */
    free(after);
    after = encode_state(a, &len);
    assert_memory_equal(before, after, len);
    free(after);
    free(before);
    free(bytes);
    ops->destroy(a);
    ops->destroy(b);
}

/* ------------------------------------------------------------------ */
/* Exact fields and accuracy                                            */

static double
field(struct json_object *j, const char *name)
{
    struct json_object *f = NULL;

    assert_true(json_object_object_get_ex(j, name, &f));
    assert_non_null(f);
    return json_object_get_double(f);
}

static void
test_render_one_to_ten(void **unused)
{
    void *s = ops->create(NULL);
    struct json_object *j;

    (void)unused;
    for (int i = 10; i >= 1; i--)
        fold_value(s, i);
    j = ops->render(s, NULL);
    assert_int_equal(json_object_object_length(j), 9);
    assert_true(json_object_is_type(json_object_object_get(j, "count"),
                                    json_type_int));
    assert_int_equal(json_object_get_int64(json_object_object_get(j, "count")),
                     10);
    assert_true(field(j, "sum") == 55);
    assert_true(field(j, "min") == 1);
    assert_true(field(j, "max") == 10);
    /* rank 5 (value 5), rank 9 (value 9), rank 10 clamped to max */
    assert_true(field(j, "p50") == ddsketch_bin_value(ddsketch_index(5)));
    assert_true(field(j, "p50") == 5.002829575110705);
    assert_true(field(j, "p90") == 8.9354186437635743);
    assert_true(field(j, "p95") == 10);
    assert_true(field(j, "p99") == 10);
    assert_true(field(j, "p999") == 10);
    assert_true(fabs(field(j, "p50") - 5) <= 0.05);
    assert_true(fabs(field(j, "p90") - 9) <= 0.09);
    json_object_put(j);
    ops->destroy(s);
}

/* Nearest rank exactly: values 1.05^k sit one per bin, so the quantile of
 * rank r is the representative of value r. */
static void
test_nearest_rank(void **unused)
{
    static const struct {
        uint64_t n;
        uint64_t r50, r90, r95, r99, r999;
    } cases[] = {
        { .n = 1, .r50 = 1, .r90 = 1, .r95 = 1, .r99 = 1, .r999 = 1 },
        { .n = 2, .r50 = 1, .r90 = 2, .r95 = 2, .r99 = 2, .r999 = 2 },
        { .n = 10, .r50 = 5, .r90 = 9, .r95 = 10, .r99 = 10, .r999 = 10 },
        { .n = 20, .r50 = 10, .r90 = 18, .r95 = 19, .r99 = 20, .r999 = 20 },
        { .n = 100, .r50 = 50, .r90 = 90, .r95 = 95, .r99 = 99, .r999 = 100 },
        { .n = 999, .r50 = 500, .r90 = 900, .r95 = 950, .r99 = 990,
          .r999 = 999 },
        { .n = 1000, .r50 = 500, .r90 = 900, .r95 = 950, .r99 = 990,
          .r999 = 999 },
        { .n = 1001, .r50 = 501, .r90 = 901, .r95 = 951, .r99 = 991,
          .r999 = 1000 },
    };

    (void)unused;
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        void *s = ops->create(NULL);
        struct json_object *j;
        const char *names[] = { "p50", "p90", "p95", "p99", "p999" };
        uint64_t ranks[] = { cases[c].r50, cases[c].r90, cases[c].r95,
                             cases[c].r99, cases[c].r999 };

        for (uint64_t k = 1; k <= cases[c].n; k++)
            fold_value(s, pow(1.05, (double)k));
        j = ops->render(s, NULL);
        for (int q = 0; q < 5; q++) {
            double x = pow(1.05, (double)ranks[q]);
            double want = ddsketch_bin_value(ddsketch_index(x));

            if (want > field(j, "max"))
                want = field(j, "max");
            if (want < field(j, "min"))
                want = field(j, "min");
            assert_true(field(j, names[q]) == want);
        }
        json_object_put(j);
        ops->destroy(s);
    }
}

static void
test_exact_integers(void **unused)
{
    struct testrand r;
    void *s = ops->create(NULL);
    struct json_object *j;
    double total = 0, lo = INFINITY, hi = -INFINITY;

    (void)unused;
    testrand_seed(&r, 9);
    for (int i = 0; i < 100000; i++) {
        double x = (double)testrand_below(&r, 2000000000) - 1000000000;

        fold_value(s, x);
        total += x;                    /* exact: |total| < 2^53 */
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    j = ops->render(s, NULL);
    assert_int_equal(json_object_get_int64(json_object_object_get(j, "count")),
                     100000);
    assert_true(field(j, "sum") == total);
    assert_true(field(j, "min") == lo);
    assert_true(field(j, "max") == hi);
    json_object_put(j);
    ops->destroy(s);
}

enum distribution {
    DIST_UNIFORM,
    DIST_LOGNORMAL,
    DIST_BIMODAL,
    DIST_ZEROS_NEGATIVES,
    DIST_COUNT
};

static double
draw(struct testrand *r, enum distribution d)
{
    uint64_t u;

    switch (d) {
    case DIST_UNIFORM:
        return testrand_unit(r) * 1000;
    case DIST_LOGNORMAL:
        return exp(testrand_normal(r));
    case DIST_BIMODAL:     /* 70% around 1, 30% around 1e6 */
        return testrand_below(r, 10) < 7 ? exp(0.5 * testrand_normal(r))
                                         : 1e6 * exp(0.5 * testrand_normal(r));
    default:               /* 25% negative, 35% zero, 40% positive */
        u = testrand_below(r, 20);
        if (u < 5)
            return -100 * exp(testrand_normal(r));
        if (u < 12)
            return 0;
        return exp(2 * testrand_normal(r));
    }
}

static void
test_accuracy(void **unused)
{
    static const char *const names[] = { "uniform", "lognormal", "bimodal",
                                         "zeros+negatives" };
    static const char *const fields[] = { "p50", "p90", "p95", "p99", "p999" };
    static const uint64_t per_mille[] = { 500, 900, 950, 990, 999 };
    /* extra ranks through the sketch directly, for the negative side */
    static const double low_q[] = { 0.001, 0.01, 0.1, 0.2 };
    double *v = xmalloc(ACCURACY_VALUES * sizeof(*v));
    double worst_all = 0;

    (void)unused;
    for (int d = 0; d < DIST_COUNT; d++) {
        struct testrand r;
        void *s = ops->create(NULL);
        struct ddsketch *sk = ddsketch_create();
        struct json_object *j;
        double worst = 0;

        testrand_seed(&r, 1000 + (uint64_t)d);
        for (size_t i = 0; i < ACCURACY_VALUES; i++) {
            v[i] = draw(&r, (enum distribution)d);
            fold_value(s, v[i]);
            assert_int_equal(ddsketch_add(sk, v[i]), 0);
        }
        qsort(v, ACCURACY_VALUES, sizeof(*v), compare_doubles);
        j = ops->render(s, NULL);
        assert_int_equal(json_object_get_int64(json_object_object_get(j, "count")),
                         ACCURACY_VALUES);
        assert_true(field(j, "min") == v[0]);
        assert_true(field(j, "max") == v[ACCURACY_VALUES - 1]);
        for (int q = 0; q < 5; q++) {
            uint64_t rank = ACCURACY_VALUES / 1000 * per_mille[q];
            double exact = v[rank - 1], got = field(j, fields[q]), err;

            if (exact == 0) {
                assert_true(got == 0);
                err = 0;
            } else {
                err = fabs(got - exact) / fabs(exact);
            }
            assert_true(err <= ACCURACY_BOUND);
            worst = err > worst ? err : worst;
        }
        for (size_t q = 0; q < sizeof(low_q) / sizeof(low_q[0]); q++) {
            uint64_t rank = (uint64_t)(low_q[q] * ACCURACY_VALUES);
            double exact = v[rank - 1];
            double got = ddsketch_quantile_at_rank(sk, rank);
            double err = exact == 0 ? fabs(got) : fabs(got - exact) / fabs(exact);

            assert_true(err <= ACCURACY_BOUND);
            worst = err > worst ? err : worst;
        }
        if (d == DIST_ZEROS_NEGATIVES) {
            assert_true(field(j, "p50") == 0);
            assert_true(ddsketch_quantile_at_rank(sk, 1) < 0);
        }
        print_message("accuracy %-16s worst relative error %.5f%%\n",
                      names[d], worst * 100);
        worst_all = worst > worst_all ? worst : worst_all;
        json_object_put(j);
        ddsketch_destroy(sk);
        ops->destroy(s);
    }
    assert_true(worst_all > 0);
    free(v);
}

static void
test_encoded_size(void **unused)
{
    struct testrand r;
    struct ddsketch *s = ddsketch_create();
    struct buf_writer w, plain;

    (void)unused;
    testrand_seed(&r, 60000);
    for (int i = 0; i < 60000; i++)
        assert_int_equal(ddsketch_add(s, exp(testrand_normal(&r))), 0);
    buf_writer_create(&w, 0);
    ddsketch_encode(s, &w);
    /* what a plain list of (index, count) varints would take */
    buf_writer_create(&plain, 0);
    for (int32_t i = DDSKETCH_INDEX_MIN; i <= DDSKETCH_INDEX_MAX; i++) {
        uint64_t c = ddsketch_bin_count(s, 0, i);

        if (c != 0) {
            buf_put_svarint(&plain, i);
            buf_put_varint(&plain, c);
        }
    }
    assert_true(w.len < LOGNORMAL_BYTES_LIMIT);
    assert_true(w.len < plain.len / 2);
    print_message("60,000 lognormal(0,1): %zu bytes (plain index/count list: "
                  "%zu)\n", w.len, plain.len);
    buf_writer_destroy(&plain);
    buf_writer_destroy(&w);
    ddsketch_destroy(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapping_constants),
        cmocka_unit_test(test_add_limits),
        cmocka_unit_test(test_collapse_rule),
        cmocka_unit_test(test_merge_property_integers),
        cmocka_unit_test(test_merge_property_reals),
        cmocka_unit_test(test_merge_empty_and_self),
        cmocka_unit_test(test_empty_encoding),
        cmocka_unit_test(test_worked_example),
        cmocka_unit_test(test_sketch_bridging),
        cmocka_unit_test(test_sketch_decode_rejects),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_decode_rejects),
        cmocka_unit_test(test_merge_overflow),
        cmocka_unit_test(test_render_one_to_ten),
        cmocka_unit_test(test_nearest_rank),
        cmocka_unit_test(test_exact_integers),
        cmocka_unit_test(test_accuracy),
        cmocka_unit_test(test_encoded_size),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
