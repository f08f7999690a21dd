/*
 * test_unique: the `unique` state type and its HyperLogLog (hll.c).
 *
 *   register rule, exact small counts, JSON rendering
 *   canonical encoding: any split/merge order gives the same bytes
 *   round trips, truncations, byte flips, hand-built invalid encodings
 *   accuracy at 1e3, 1e5 and 1e7 distinct values (errors are printed)
 */
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
#include "event.h"
#include "hash.h"
#include "hll.h"
#include "state.h"
#include "testrand.h"
#include "xalloc.h"

#define PROP_SETS 2000
#define PROP_PARTS_MIN 2
#define PROP_PARTS_MAX 8
#define FLIP_TRIALS 4000
#define GARBAGE_TRIALS 2000
#define GARBAGE_LEN_MAX 64
#define ACCURACY_TOLERANCE 0.03
#define SPLIT_PARTS 5
#define EXACT_SMALL_MAX 100
#define ID_BYTES 16
#define NAME_BUF 32
#define PREFIX_BYTES 2
#define ERR_LEN 128
#define DENSE_VALUE_MAX 63     /* the largest 6-bit value */

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* Writes PREFIX then the decimal digits of N into BUF; returns the length
 * (no NUL). BUF must hold NAME_BUF bytes. */
static size_t
format_name(char *buf, const char *prefix, uint64_t n)
{
    char digits[NAME_BUF];
    size_t len = strlen(prefix), d = 0;

    memcpy(buf, prefix, len);
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    while (d > 0)
        buf[len++] = digits[--d];
    return len;
}

static void
fold_bytes(void *state, const void *data, size_t len)
{
    struct event ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = EVENT_UNIQUE;
    ev.str = data;
    ev.str_len = len;
    unique_ops.fold(state, &ev);
}

static void
encode_state(const void *state, struct buf_writer *w)
{
    buf_writer_reset(w);
    unique_ops.encode(state, w);
}

static void *
decode_bytes(const uint8_t *data, size_t len, size_t *consumed)
{
    struct buf_reader r;
    char err[ERR_LEN];
    void *state;

    buf_reader_init(&r, data, len);
    err[0] = '\0';
    state = unique_ops.decode(&r, err, sizeof(err));
    if (state == NULL)
        assert_true(err[0] != '\0');     /* a reason is always given */
    if (consumed != NULL)
        *consumed = r.pos;
    return state;
}

static void
assert_same_bytes(const struct buf_writer *a, const struct buf_writer *b)
{
    assert_int_equal(a->len, b->len);
    assert_memory_equal(a->data, b->data, a->len);
}

static void
assert_same_encoding(const void *a, const void *b)
{
    struct buf_writer wa, wb;

    buf_writer_create(&wa, 64);
    buf_writer_create(&wb, 64);
    encode_state(a, &wa);
    encode_state(b, &wb);
    assert_same_bytes(&wa, &wb);
    buf_writer_destroy(&wa);
    buf_writer_destroy(&wb);
}

/* The hash whose register index is INDEX and whose rank is RANK. */
static uint64_t
hash_for(uint32_t index, unsigned rank)
{
    uint64_t h = (uint64_t)index << HLL_RANK_BITS;

    if (rank <= HLL_RANK_BITS)
        h |= 1ULL << (HLL_RANK_BITS - rank);
    return h;
}

/* The registers rule written independently of hll.c: bit by bit. */
static void
expected_register(uint64_t h, uint32_t *index, unsigned *rank)
{
    unsigned r = 1;

    *index = (uint32_t)(h >> HLL_RANK_BITS);
    while (r <= HLL_RANK_BITS && (h & (1ULL << (HLL_RANK_BITS - r))) == 0)
        r++;
    *rank = r;
}

/* A sketch with registers 0 .. COUNT-1 all at rank 1 (through the state
 * API, so the result is a unique state). */
static void *
state_with_registers(uint32_t count, unsigned rank)
{
    void *state = unique_ops.create(NULL);

    for (uint32_t i = 0; i < count; i++)
        hll_add_hash(state, hash_for(i, rank));
    return state;
}

/* Packs REGS into the dense body bit by bit: register i, bit b goes to
 * body bit 6*i+b, body bit k lives in byte k/8 at bit k%8. */
static void
pack_dense(const uint8_t *regs, uint8_t *body)
{
    memset(body, 0, HLL_DENSE_BYTES);
    for (uint32_t i = 0; i < HLL_REGISTERS; i++)
        for (unsigned b = 0; b < HLL_DENSE_REGISTER_BITS; b++)
            if (regs[i] & (1u << b)) {
                size_t k = (size_t)i * HLL_DENSE_REGISTER_BITS + b;

                body[k / 8] |= (uint8_t)(1u << (k % 8));
            }
}

/* Prefix, dense form byte and the packing of REGS. */
static void
write_dense(struct buf_writer *w, const uint8_t *regs)
{
    uint8_t *body = xmalloc(HLL_DENSE_BYTES);

    buf_writer_reset(w);
    buf_put_u8(w, EVENT_UNIQUE);
    buf_put_u8(w, STATE_FORMAT_VERSION);
    buf_put_u8(w, HLL_FORM_DENSE);
    pack_dense(regs, body);
    buf_put_bytes(w, body, HLL_DENSE_BYTES);
    free(body);
}

static int64_t
rendered_distinct(const void *state)
{
    struct json_object *obj = unique_ops.render(state, NULL), *v;
    int64_t n;

    assert_non_null(obj);
    assert_true(json_object_object_get_ex(obj, "distinct", &v));
    assert_true(json_object_is_type(v, json_type_int));
    n = json_object_get_int64(v);
    json_object_put(obj);
    return n;
}

/* ------------------------------------------------------------------ */
/* Registers and small exact cases                                     */

static void
test_register_rule(void **unused)
{
    static const char *const values[] = { "user-0", "a", "tally", "x-y-z" };
    struct hll *h;

    (void)unused;
    for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
        uint64_t hash = hash_string64(values[v], strlen(values[v]));
        uint32_t index;
        unsigned rank;

        expected_register(hash, &index, &rank);
        h = hll_create();
        hll_add(h, values[v], strlen(values[v]));
        assert_int_equal(hll_nonzero(h), 1);
        assert_int_equal(hll_register(h, index), rank);
        hll_destroy(h);
    }
    /* Known answer for other languages (schema/state-unique.md). */
    assert_true(hash_string64("user-0", 6) >> HLL_RANK_BITS == 5206);
    h = hll_create();
    hll_add(h, "user-0", 6);
    assert_int_equal(hll_register(h, 5206), 3);
    hll_destroy(h);

    /* The extremes: remaining 50 bits all zero -> 51; top one set -> 1. */
    h = hll_create();
    hll_add_hash(h, (uint64_t)7 << HLL_RANK_BITS);
    hll_add_hash(h, ((uint64_t)9 << HLL_RANK_BITS) | (1ULL << 49));
    hll_add_hash(h, ((uint64_t)11 << HLL_RANK_BITS) | 1);
    assert_int_equal(hll_register(h, 7), HLL_RANK_MAX);
    assert_int_equal(hll_register(h, 9), 1);
    assert_int_equal(hll_register(h, 11), HLL_RANK_BITS);
    assert_int_equal(hll_register(h, 8), 0);
    /* A lower rank never lowers a register. */
    hll_add_hash(h, hash_for(7, 3));
    assert_int_equal(hll_register(h, 7), HLL_RANK_MAX);
    hll_destroy(h);
}

static void
test_exact_small(void **unused)
{
    void *state = unique_ops.create(NULL);
    char name[NAME_BUF];
    struct buf_writer w;
    static const uint8_t empty_bytes[] = { EVENT_UNIQUE, STATE_FORMAT_VERSION,
                                           HLL_FORM_SPARSE, 0 };

    (void)unused;
    assert_true(unique_ops.empty(state));
    assert_true(hll_estimate(state) == 0.0);
    assert_int_equal(rendered_distinct(state), 0);
    buf_writer_create(&w, 16);
    encode_state(state, &w);
    assert_int_equal(w.len, sizeof(empty_bytes));
    assert_memory_equal(w.data, empty_bytes, sizeof(empty_bytes));

    /* user-0 .. user-(n-1) fall in distinct registers for n <= 100, so
     * each count is exact once rounded. */
    for (uint64_t n = 0; n < EXACT_SMALL_MAX; n++) {
        fold_bytes(state, name, format_name(name, "user-", n));
        assert_false(unique_ops.empty(state));
        assert_int_equal(rendered_distinct(state), (int64_t)n + 1);
    }
    unique_ops.destroy(state);

    /* One value: sparse form, count 1, delta = index 5206, rank 3. */
    state = unique_ops.create(NULL);
    fold_bytes(state, "user-0", 6);
    assert_int_equal(rendered_distinct(state), 1);
    encode_state(state, &w);
    {
        static const uint8_t one[] = { EVENT_UNIQUE, STATE_FORMAT_VERSION,
                                       HLL_FORM_SPARSE, 1, 0xd6, 0x28, 3 };

        assert_int_equal(w.len, sizeof(one));
        assert_memory_equal(w.data, one, sizeof(one));
    }
    buf_writer_destroy(&w);
    unique_ops.destroy(state);
}

static void
test_render_json(void **unused)
{
    void *state = unique_ops.create(NULL);
    struct state_render_context ctx = { .span_seconds = 60.0 };
    struct json_object *obj, *v;
    struct buf_writer w;
    uint8_t *regs = xcalloc(HLL_REGISTERS, 1);

    (void)unused;
    fold_bytes(state, "one", 3);
    fold_bytes(state, "two", 3);
    fold_bytes(state, "one", 3);
    obj = unique_ops.render(state, &ctx);
    assert_int_equal(json_object_object_length(obj), 1);
    assert_true(json_object_object_get_ex(obj, "distinct", &v));
    assert_true(json_object_is_type(v, json_type_int));
    assert_int_equal(json_object_get_int64(v), 2);
    assert_string_equal(json_object_to_json_string_ext(obj,
                                                       JSON_C_TO_STRING_PLAIN),
                        "{\"distinct\":2}");
    json_object_put(obj);
    unique_ops.destroy(state);

    /* A saturated sketch has an infinite estimate: rendered as INT64_MAX. */
    memset(regs, HLL_RANK_MAX, HLL_REGISTERS);
    buf_writer_create(&w, HLL_DENSE_BYTES + 8);
    write_dense(&w, regs);
    state = decode_bytes(w.data, w.len, NULL);
    assert_non_null(state);
    assert_int_equal(rendered_distinct(state), INT64_MAX);
    unique_ops.destroy(state);
    buf_writer_destroy(&w);
    free(regs);
}

static void
test_ops_contract(void **unused)
{
    void *a = unique_ops.create(NULL), *b, *c;
    struct buf_writer w1, w2;
    size_t consumed;

    (void)unused;
    assert_int_equal(unique_ops.type, EVENT_UNIQUE);
    fold_bytes(a, "alpha", 5);
    b = unique_ops.clone(a);
    buf_writer_create(&w1, 64);
    buf_writer_create(&w2, 64);
    encode_state(b, &w1);
    fold_bytes(a, "beta", 4);            /* the clone must not change */
    encode_state(b, &w2);
    assert_same_bytes(&w1, &w2);
    assert_int_equal(rendered_distinct(b), 1);
    assert_int_equal(rendered_distinct(a), 2);

    c = unique_ops.create(NULL);
    assert_int_equal(unique_ops.merge(c, a), 0);
    assert_int_equal(unique_ops.merge(c, c), 0);      /* self merge: no-op */
    assert_same_encoding(c, a);
    assert_int_equal(unique_ops.merge(c, b), 0);
    assert_same_encoding(c, a);

    /* Decode stops right after the state and leaves what follows. */
    encode_state(a, &w1);
    buf_put_u8(&w1, 0xaa);
    unique_ops.destroy(b);
    b = decode_bytes(w1.data, w1.len, &consumed);
    assert_non_null(b);
    assert_int_equal(consumed, w1.len - 1);
    assert_same_encoding(a, b);

    buf_writer_destroy(&w1);
    buf_writer_destroy(&w2);
    unique_ops.destroy(a);
    unique_ops.destroy(b);
    unique_ops.destroy(c);
}

/* ------------------------------------------------------------------ */
/* Canonical encoding under any split and merge order                  */

/* Merges STATES[0..N-1] by repeatedly merging one random state into
 * another, destroying the merged-from one. Returns the survivor. */
static void *
merge_random_tree(void **states, size_t n, struct testrand *rng)
{
    while (n > 1) {
        size_t i = testrand_below(rng, n), j = testrand_below(rng, n - 1);

        if (j >= i)
            j++;
        assert_int_equal(unique_ops.merge(states[i], states[j]), 0);
        unique_ops.destroy(states[j]);
        states[j] = states[--n];
    }
    return states[0];
}

static size_t
property_set_size(struct testrand *rng)
{
    uint64_t kind = testrand_below(rng, 10);

    if (kind < 4)
        return testrand_below(rng, 50);
    if (kind < 7)
        return testrand_below(rng, 1500);
    if (kind < 9)
        return testrand_below(rng, 7000);
    return 12000 + testrand_below(rng, 12000);   /* around and beyond T */
}

static void
test_split_merge_property(void **unused)
{
    struct testrand rng;
    struct buf_writer whole_bytes, w;
    size_t sparse_sets = 0, dense_sets = 0;

    (void)unused;
    testrand_seed(&rng, 0x756e6971);
    buf_writer_create(&whole_bytes, 64);
    buf_writer_create(&w, 64);
    for (int set = 0; set < testrand_scale(PROP_SETS); set++) {
        size_t size = property_set_size(&rng);
        size_t parts = PROP_PARTS_MIN
                       + testrand_below(&rng, PROP_PARTS_MAX - PROP_PARTS_MIN + 1);
        uint64_t pool = size - size / 4 + 1;   /* a pool: many repeats */
        void *whole = unique_ops.create(NULL);
        void *split[PROP_PARTS_MAX], *decoded[PROP_PARTS_MAX];
        char prefix[NAME_BUF], name[NAME_BUF];

        snprintf(prefix, sizeof(prefix), "s%d:", set);
        for (size_t p = 0; p < parts; p++)
            split[p] = unique_ops.create(NULL);
        for (size_t i = 0; i < size; i++) {
            size_t len = format_name(name, prefix, testrand_below(&rng, pool));

            fold_bytes(whole, name, len);
            fold_bytes(split[testrand_below(&rng, parts)], name, len);
        }
        encode_state(whole, &whole_bytes);
        if (whole_bytes.data[PREFIX_BYTES] == HLL_FORM_DENSE)
            dense_sets++;
        else
            sparse_sets++;

        /* Decoded copies of every part, taken before any merging. */
        for (size_t p = 0; p < parts; p++) {
            encode_state(split[p], &w);
            decoded[p] = decode_bytes(w.data, w.len, NULL);
            assert_non_null(decoded[p]);
        }
        /* Sometimes merge a clone instead of the part itself. */
        if (testrand_below(&rng, 4) == 0) {
            void *copy = unique_ops.clone(split[0]);

            unique_ops.destroy(split[0]);
            split[0] = copy;
        }
        {
            void *merged = merge_random_tree(split, parts, &rng);

            encode_state(merged, &w);
            assert_same_bytes(&w, &whole_bytes);
            assert_true(hll_estimate(merged) == hll_estimate(whole));
            unique_ops.destroy(merged);
        }
        {
            void *merged = merge_random_tree(decoded, parts, &rng);

            encode_state(merged, &w);
            assert_same_bytes(&w, &whole_bytes);
            unique_ops.destroy(merged);
        }
        unique_ops.destroy(whole);
    }
    /* Both canonical forms were exercised. */
    assert_true(sparse_sets > (size_t)testrand_scale(PROP_SETS) / 2);
    assert_true(dense_sets > (size_t)testrand_scale(PROP_SETS) / 20);
    print_message("split/merge: %zu sparse sets, %zu dense sets\n",
                  sparse_sets, dense_sets);
    buf_writer_destroy(&whole_bytes);
    buf_writer_destroy(&w);
}

/* ------------------------------------------------------------------ */
/* Round trips, truncations, byte flips                                */

static void
assert_round_trip(const void *state, int form)
{
    struct buf_writer w1, w2;
    void *copy;
    size_t consumed;

    buf_writer_create(&w1, 64);
    buf_writer_create(&w2, 64);
    encode_state(state, &w1);
    assert_int_equal(w1.data[PREFIX_BYTES], form);
    copy = decode_bytes(w1.data, w1.len, &consumed);
    assert_non_null(copy);
    assert_int_equal(consumed, w1.len);
    encode_state(copy, &w2);
    assert_same_bytes(&w1, &w2);
    assert_int_equal(hll_nonzero(copy), hll_nonzero(state));
    assert_true(hll_estimate(copy) == hll_estimate(state));
    unique_ops.destroy(copy);
    buf_writer_destroy(&w1);
    buf_writer_destroy(&w2);
}

static void
test_round_trip(void **unused)
{
    static const uint32_t counts[] = { 0, 1, 2, 127, 128, 1024, 1025,
                                       HLL_SPARSE_MAX };
    struct testrand rng;
    char name[NAME_BUF];

    (void)unused;
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        void *state = state_with_registers(counts[i], 3);

        assert_round_trip(state, HLL_FORM_SPARSE);
        unique_ops.destroy(state);
    }
    {
        void *state = state_with_registers(HLL_SPARSE_MAX + 1, 3);
        struct buf_writer w;

        assert_round_trip(state, HLL_FORM_DENSE);
        buf_writer_create(&w, 64);
        encode_state(state, &w);
        assert_int_equal(w.len, PREFIX_BYTES + 1 + HLL_DENSE_BYTES);
        buf_writer_destroy(&w);
        unique_ops.destroy(state);
        state = state_with_registers(HLL_REGISTERS, HLL_RANK_MAX);
        assert_round_trip(state, HLL_FORM_DENSE);
        unique_ops.destroy(state);
    }
    /* Random values of every size, both forms. */
    testrand_seed(&rng, 42);
    for (int t = 0; t < 40; t++) {
        size_t n = testrand_below(&rng, 20000);
        void *state = unique_ops.create(NULL);

        for (size_t i = 0; i < n; i++)
            fold_bytes(state, name,
                       format_name(name, "rt-", testrand_next(&rng)));
        assert_round_trip(state, hll_nonzero(state) <= HLL_SPARSE_MAX
                                     ? HLL_FORM_SPARSE : HLL_FORM_DENSE);
        unique_ops.destroy(state);
    }
}

/* Encodings used by the truncation and flip tests. */
static void
sample_encodings(struct buf_writer *out, size_t n)
{
    struct testrand rng;
    char name[NAME_BUF];
    static const size_t sizes[] = { 0, 1, 300, 7000, 40000 };

    assert_int_equal(n, sizeof(sizes) / sizeof(sizes[0]));
    testrand_seed(&rng, 7);
    for (size_t s = 0; s < n; s++) {
        void *state = unique_ops.create(NULL);

        for (size_t i = 0; i < sizes[s]; i++)
            fold_bytes(state, name, format_name(name, "tr-", i));
        buf_writer_create(&out[s], 64);
        encode_state(state, &out[s]);
        unique_ops.destroy(state);
    }
    /* 7000 values set close to HLL_SPARSE_MAX registers, still sparse. */
    assert_int_equal(out[3].data[PREFIX_BYTES], HLL_FORM_SPARSE);
    assert_int_equal(out[4].data[PREFIX_BYTES], HLL_FORM_DENSE);
}

#define SAMPLE_COUNT 5

static void
test_truncation(void **unused)
{
    struct buf_writer enc[SAMPLE_COUNT];

    (void)unused;
    sample_encodings(enc, SAMPLE_COUNT);
    for (size_t s = 0; s < SAMPLE_COUNT; s++) {
        /* An exact-size copy, so ASan sees any read past the end. */
        for (size_t len = 0; len < enc[s].len; len++) {
            uint8_t *copy = xmalloc(len == 0 ? 1 : len);

            memcpy(copy, enc[s].data, len);
            assert_null(decode_bytes(copy, len, NULL));
            free(copy);
        }
        buf_writer_destroy(&enc[s]);
    }
}

/* Decodes DATA; if it decodes, it must re-encode to exactly the bytes it
 * consumed (the format is canonical) and decode again. */
static int
check_decode_canonical(const uint8_t *data, size_t len)
{
    struct buf_writer w;
    size_t consumed;
    void *state = decode_bytes(data, len, &consumed), *again;

    if (state == NULL)
        return 0;
    buf_writer_create(&w, 64);
    encode_state(state, &w);
    assert_int_equal(w.len, consumed);
    assert_memory_equal(w.data, data, consumed);
    again = decode_bytes(w.data, w.len, NULL);
    assert_non_null(again);
    assert_same_encoding(state, again);
    unique_ops.destroy(again);
    unique_ops.destroy(state);
    buf_writer_destroy(&w);
    return 1;
}

static void
test_byte_flips(void **unused)
{
    struct buf_writer enc[SAMPLE_COUNT];
    struct testrand rng;
    size_t accepted = 0, rejected = 0;

    (void)unused;
    sample_encodings(enc, SAMPLE_COUNT);
    testrand_seed(&rng, 0xf11b);
    for (int t = 0; t < testrand_scale(FLIP_TRIALS); t++) {
        const struct buf_writer *base = &enc[testrand_below(&rng, SAMPLE_COUNT)];
        uint8_t *copy = xmalloc(base->len);
        uint64_t flips = 1 + testrand_below(&rng, 3);

        memcpy(copy, base->data, base->len);
        for (uint64_t f = 0; f < flips; f++)
            copy[testrand_below(&rng, base->len)] ^=
                (uint8_t)(1 + testrand_below(&rng, 255));
        if (check_decode_canonical(copy, base->len))
            accepted++;
        else
            rejected++;
        free(copy);
    }
    /* Random short garbage after a valid prefix. */
    for (int t = 0; t < testrand_scale(GARBAGE_TRIALS); t++) {
        size_t len = PREFIX_BYTES + 1 + testrand_below(&rng, GARBAGE_LEN_MAX);
        uint8_t *garbage = xmalloc(len);

        garbage[0] = EVENT_UNIQUE;
        garbage[1] = STATE_FORMAT_VERSION;
        garbage[2] = (uint8_t)(HLL_FORM_SPARSE + testrand_below(&rng, 2));
        for (size_t i = PREFIX_BYTES + 1; i < len; i++)
            garbage[i] = (uint8_t)testrand_below(&rng, 64);
        if (check_decode_canonical(garbage, len))
            accepted++;
        else
            rejected++;
        free(garbage);
    }
    print_message("byte flips/garbage: %zu decoded, %zu rejected\n",
                  accepted, rejected);
    assert_true(accepted > 0);
    assert_true(rejected > 0);
    for (size_t s = 0; s < SAMPLE_COUNT; s++)
        buf_writer_destroy(&enc[s]);
}

/* ------------------------------------------------------------------ */
/* Hand-built invalid encodings                                        */

/* BYTES(b0, b1, ...) expands to "pointer, length" of a byte literal. */
#define BYTES(...) ((const uint8_t[]){ __VA_ARGS__ }), \
                   sizeof((const uint8_t[]){ __VA_ARGS__ })

static void
assert_rejected(const uint8_t *data, size_t len)
{
    uint8_t *copy = xmalloc(len);

    memcpy(copy, data, len);
    assert_null(decode_bytes(copy, len, NULL));
    free(copy);
}

static void *
assert_accepted(const uint8_t *data, size_t len)
{
    uint8_t *copy = xmalloc(len);
    void *state;

    memcpy(copy, data, len);
    state = decode_bytes(copy, len, NULL);
    assert_non_null(state);
    free(copy);
    return state;
}

/* Short names that keep the hand-built byte lists below readable. */
#define U EVENT_UNIQUE
#define V STATE_FORMAT_VERSION
#define S HLL_FORM_SPARSE

static void
test_decode_rejects_sparse(void **unused)
{
    void *state;
    struct buf_writer w;

    (void)unused;
    /* Prefix and form. */
    assert_rejected(BYTES(EVENT_PERCENTILE, V, S, 0));
    assert_rejected(BYTES(U, 0, S, 0));
    assert_rejected(BYTES(U, V + 1, S, 0));
    assert_rejected(BYTES(U, V, 0, 0));
    assert_rejected(BYTES(U, V, HLL_FORM_DENSE + 1, 0));
    state = assert_accepted(BYTES(U, V, S, 0));
    assert_true(unique_ops.empty(state));
    unique_ops.destroy(state);

    /* Ranks: 0 and 52 rejected, 1 and 51 accepted. */
    assert_rejected(BYTES(U, V, S, 1, 5, 0));
    assert_rejected(BYTES(U, V, S, 1, 5, HLL_RANK_MAX + 1));
    assert_rejected(BYTES(U, V, S, 1, 5, 0xff));
    state = assert_accepted(BYTES(U, V, S, 1, 5, HLL_RANK_MAX));
    assert_int_equal(hll_register(state, 5), HLL_RANK_MAX);
    unique_ops.destroy(state);
    state = assert_accepted(BYTES(U, V, S, 2, 0, 1, 1, 1));
    assert_int_equal(hll_register(state, 0), 1);
    assert_int_equal(hll_register(state, 1), 1);
    unique_ops.destroy(state);

    /* Duplicate index (a zero delta after the first entry). */
    assert_rejected(BYTES(U, V, S, 2, 5, 1, 0, 1));
    assert_rejected(BYTES(U, V, S, 2, 0, 1, 0, 2));
    /* Unsorted: a delta that would wrap round to a smaller index. */
    assert_rejected(BYTES(U, V, S, 2, 100, 1,
                          0xce, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                          0xff, 0x01, 1));
    /* Out of range: index 16384, and two deltas summing past 16383. */
    assert_rejected(BYTES(U, V, S, 1, 0x80, 0x80, 0x01, 1));
    assert_rejected(BYTES(U, V, S, 2, 0xff, 0x7f, 1, 1, 1));
    state = assert_accepted(BYTES(U, V, S, 1, 0xff, 0x7f, 1));
    assert_int_equal(hll_register(state, HLL_REGISTERS - 1), 1);
    unique_ops.destroy(state);

    /* Non-minimal varints (count, then delta) are not canonical. */
    assert_rejected(BYTES(U, V, S, 0x80, 0x00));
    assert_rejected(BYTES(U, V, S, 0x81, 0x00, 5, 1));
    assert_rejected(BYTES(U, V, S, 1, 0x85, 0x00, 1));
    /* A huge count with nothing behind it: rejected before allocating. */
    assert_rejected(BYTES(U, V, S, 0xff, 0xff, 0xff, 0xff, 0x0f));
    /* Truncated entries. */
    assert_rejected(BYTES(U, V, S, 2, 5, 1, 1));
    assert_rejected(BYTES(U, V, S, 1, 5));
    assert_rejected(BYTES(U, V, S));
    assert_rejected(BYTES(U, V));

    /* HLL_SPARSE_MAX entries is sparse and valid; one more is not. */
    buf_writer_create(&w, 4 * HLL_SPARSE_MAX);
    for (uint32_t n = HLL_SPARSE_MAX; n <= HLL_SPARSE_MAX + 1; n++) {
        buf_writer_reset(&w);
        buf_put_u8(&w, U);
        buf_put_u8(&w, V);
        buf_put_u8(&w, S);
        buf_put_varint(&w, n);
        for (uint32_t i = 0; i < n; i++) {
            buf_put_varint(&w, i == 0 ? 0 : 1);
            buf_put_u8(&w, 1);
        }
        if (n == HLL_SPARSE_MAX) {
            state = assert_accepted(w.data, w.len);
            assert_int_equal(hll_nonzero(state), HLL_SPARSE_MAX);
            unique_ops.destroy(state);
        } else {
            assert_rejected(w.data, w.len);
        }
    }
    buf_writer_destroy(&w);
}

static void
test_decode_rejects_dense(void **unused)
{
    uint8_t *regs = xcalloc(HLL_REGISTERS, 1);
    struct buf_writer w;
    void *state;

    (void)unused;
    buf_writer_create(&w, HLL_DENSE_BYTES + 8);
    /* All zero, and exactly HLL_SPARSE_MAX set: should have been sparse. */
    write_dense(&w, regs);
    assert_rejected(w.data, w.len);
    memset(regs, 1, HLL_SPARSE_MAX);
    write_dense(&w, regs);
    assert_rejected(w.data, w.len);
    /* One more register set: valid dense. */
    regs[HLL_SPARSE_MAX] = 1;
    write_dense(&w, regs);
    state = assert_accepted(w.data, w.len);
    assert_int_equal(hll_nonzero(state), HLL_SPARSE_MAX + 1);
    unique_ops.destroy(state);
    /* Register values 52 and 63 do not exist. */
    regs[HLL_REGISTERS - 1] = HLL_RANK_MAX + 1;
    write_dense(&w, regs);
    assert_rejected(w.data, w.len);
    regs[HLL_REGISTERS - 1] = DENSE_VALUE_MAX;
    write_dense(&w, regs);
    assert_rejected(w.data, w.len);
    regs[HLL_REGISTERS - 1] = HLL_RANK_MAX;
    write_dense(&w, regs);
    state = assert_accepted(w.data, w.len);
    assert_int_equal(hll_register(state, HLL_REGISTERS - 1), HLL_RANK_MAX);
    unique_ops.destroy(state);

    /* Bit order example of schema/state-unique.md: registers 0..3 hold
     * 1, 2, 3 and 51 -> body bytes 0x81 0x30 0xcc. */
    memset(regs, 0, HLL_REGISTERS);
    regs[0] = 1;
    regs[1] = 2;
    regs[2] = 3;
    regs[3] = HLL_RANK_MAX;
    state = unique_ops.create(NULL);
    for (uint32_t i = 0; i < 4; i++)
        hll_add_hash(state, hash_for(i, regs[i]));
    for (uint32_t i = 4; i < HLL_SPARSE_MAX + 4; i++)
        hll_add_hash(state, hash_for(i, 1));
    encode_state(state, &w);
    assert_int_equal(w.len, PREFIX_BYTES + 1 + HLL_DENSE_BYTES);
    assert_int_equal(w.data[PREFIX_BYTES], HLL_FORM_DENSE);
    assert_int_equal(w.data[PREFIX_BYTES + 1], 0x81);
    assert_int_equal(w.data[PREFIX_BYTES + 2], 0x30);
    assert_int_equal(w.data[PREFIX_BYTES + 3], 0xcc);
    {
        struct buf_writer hand;

        buf_writer_create(&hand, HLL_DENSE_BYTES + 8);
        memset(regs + 4, 1, HLL_SPARSE_MAX);
        write_dense(&hand, regs);          /* independent bit packer */
        assert_same_bytes(&hand, &w);
        buf_writer_destroy(&hand);
    }
    unique_ops.destroy(state);
    buf_writer_destroy(&w);
    free(regs);
}

/* ------------------------------------------------------------------ */
/* Accuracy                                                            */

static double
relative_error(const void *state, uint64_t exact)
{
    return (hll_estimate(state) - (double)exact) / (double)exact;
}

/* Folds N names "user-<i>" into STATE and, when PARTS is not NULL, each
 * also into a random one of SPLIT_PARTS states. */
static void
fold_user_names(void *state, uint64_t n, void **parts, struct testrand *rng)
{
    char name[NAME_BUF];

    for (uint64_t i = 0; i < n; i++) {
        size_t len = format_name(name, "user-", i);

        fold_bytes(state, name, len);
        if (parts != NULL)
            fold_bytes(parts[testrand_below(rng, SPLIT_PARTS)], name, len);
    }
}

static void
fold_random_ids(void *state, uint64_t n, void **parts, struct testrand *rng)
{
    uint8_t id[ID_BYTES];

    for (uint64_t i = 0; i < n; i++) {
        uint64_t a = testrand_next(rng), b = testrand_next(rng);

        memcpy(id, &a, sizeof(a));
        memcpy(id + sizeof(a), &b, sizeof(b));
        fold_bytes(state, id, sizeof(id));
        if (parts != NULL)
            fold_bytes(parts[a % SPLIT_PARTS], id, sizeof(id));
    }
}

static void
check_accuracy(uint64_t n, int random_ids, int split)
{
    struct testrand rng;
    void *state = unique_ops.create(NULL);
    void *parts[SPLIT_PARTS];
    double err;

    testrand_seed(&rng, n * 2 + (uint64_t)random_ids);
    for (size_t p = 0; p < SPLIT_PARTS; p++)
        parts[p] = split ? unique_ops.create(NULL) : NULL;
    if (random_ids)
        fold_random_ids(state, n, split ? parts : NULL, &rng);
    else
        fold_user_names(state, n, split ? parts : NULL, &rng);
    err = relative_error(state, n);
    print_message("%-10s n=%-9llu estimate=%.1f error=%+.4f%%\n",
                  random_ids ? "random-id" : "user-<n>", (unsigned long long)n,
                  hll_estimate(state), err * 100.0);
    assert_true(err < ACCURACY_TOLERANCE && err > -ACCURACY_TOLERANCE);
    assert_int_equal(rendered_distinct(state), llround(hll_estimate(state)));
    if (split) {
        void *merged = merge_random_tree(parts, SPLIT_PARTS, &rng);

        assert_true(hll_estimate(merged) == hll_estimate(state));
        assert_same_encoding(merged, state);
        unique_ops.destroy(merged);
    }
    unique_ops.destroy(state);
}

static void
test_accuracy_1k(void **unused)
{
    (void)unused;
    check_accuracy(1000, 0, 1);
    check_accuracy(1000, 1, 1);
}

static void
test_accuracy_100k(void **unused)
{
    (void)unused;
    check_accuracy(100000, 0, 1);
    check_accuracy(100000, 1, 1);
}

static void
test_accuracy_10m(void **unused)
{
    (void)unused;
    check_accuracy(10000000, 0, 1);
    check_accuracy(10000000, 1, 0);
}

static void
test_duplicates(void **unused)
{
    struct testrand rng;
    void *once = unique_ops.create(NULL), *twice;
    char name[NAME_BUF];
    const uint64_t n = 100000;

    (void)unused;
    testrand_seed(&rng, 99);
    fold_user_names(once, n, NULL, &rng);
    twice = unique_ops.clone(once);
    for (uint64_t i = n; i-- > 0;)          /* every value again, reversed */
        fold_bytes(twice, name, format_name(name, "user-", i));
    for (int i = 0; i < 200000; i++)        /* and random repeats */
        fold_bytes(twice, name,
                   format_name(name, "user-", testrand_below(&rng, n)));
    assert_true(hll_estimate(twice) == hll_estimate(once));
    assert_same_encoding(once, twice);
    unique_ops.destroy(once);
    unique_ops.destroy(twice);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_rule),
        cmocka_unit_test(test_exact_small),
        cmocka_unit_test(test_render_json),
        cmocka_unit_test(test_ops_contract),
        cmocka_unit_test(test_split_merge_property),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_byte_flips),
        cmocka_unit_test(test_decode_rejects_sparse),
        cmocka_unit_test(test_decode_rejects_dense),
        cmocka_unit_test(test_accuracy_1k),
        cmocka_unit_test(test_accuracy_100k),
        cmocka_unit_test(test_accuracy_10m),
        cmocka_unit_test(test_duplicates),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
