/*
 * teststate: property checks shared by the state-type tests. Given a state
 * implementation and a set of events, they check that
 *   - folding any split of the events into several states and merging them
 *     in any order and tree shape gives the same state as folding them all
 *     into one (compared by encoded bytes, or by a caller's comparison);
 *   - encode -> decode -> encode is the identity;
 *   - every truncation of an encoding, and random byte flips, give an error
 *     or a valid state, never a crash (run under ASan+UBSan).
 * Header-only; included by one test program each.
 */
#ifndef TALLY_TESTSTATE_H
#define TALLY_TESTSTATE_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "buf.h"
#include "state.h"
#include "testrand.h"
#include "xalloc.h"

#define TESTSTATE_MAX_PARTS 8

static inline void *
teststate_fold(const struct state_ops *ops, const struct state_config *cfg,
               const struct event *evs, size_t n)
{
    void *st = ops->create(cfg);

    for (size_t i = 0; i < n; i++)
        ops->fold(st, &evs[i]);
    return st;
}

/* Folds a random split of EVS into 1..TESTSTATE_MAX_PARTS states and merges
 * them in a random tree shape; returns the result (owned by the caller). */
static inline void *
teststate_fold_split(const struct state_ops *ops, const struct state_config *cfg,
                     const struct event *evs, size_t n, struct testrand *r)
{
    void *parts[TESTSTATE_MAX_PARTS];
    size_t k = 1 + (size_t)testrand_below(r, TESTSTATE_MAX_PARTS);

    for (size_t i = 0; i < k; i++)
        parts[i] = ops->create(cfg);
    for (size_t i = 0; i < n; i++)
        ops->fold(parts[testrand_below(r, k)], &evs[i]);
    while (k > 1) {
        size_t a = (size_t)testrand_below(r, k);
        size_t b = (size_t)testrand_below(r, k - 1);

        if (b >= a)
            b++;
        assert_int_equal(ops->merge(parts[a], parts[b]), 0);
        ops->destroy(parts[b]);
        parts[b] = parts[k - 1];
        k--;
    }
    return parts[0];
}

/* Encodes STATE into a new writer the caller destroys. */
static inline void
teststate_encode(const struct state_ops *ops, const void *st,
                 struct buf_writer *w)
{
    buf_writer_create(w, 64);
    ops->encode(st, w);
}

static inline void
teststate_assert_same_bytes(const struct state_ops *ops, const void *a,
                            const void *b)
{
    struct buf_writer wa, wb;

    teststate_encode(ops, a, &wa);
    teststate_encode(ops, b, &wb);
    assert_int_equal(wa.len, wb.len);
    assert_memory_equal(wa.data, wb.data, wa.len);
    buf_writer_destroy(&wa);
    buf_writer_destroy(&wb);
}

static inline void
teststate_assert_same_render(const struct state_ops *ops, const void *a,
                             const void *b)
{
    struct state_render_context ctx = { .span_seconds = 10 };
    struct json_object *ja = ops->render(a, &ctx), *jb = ops->render(b, &ctx);

    assert_string_equal(json_object_to_json_string(ja),
                        json_object_to_json_string(jb));
    json_object_put(ja);
    json_object_put(jb);
}

/* encode -> decode -> encode is byte-identical, renders agree, and the
 * decoder consumed exactly the encoding. */
static inline void
teststate_check_roundtrip(const struct state_ops *ops, const void *st)
{
    struct buf_writer w1, w2;
    struct buf_reader r;
    char err[128];
    void *copy;

    teststate_encode(ops, st, &w1);
    buf_reader_init(&r, w1.data, w1.len);
    copy = ops->decode(&r, err, sizeof(err));
    assert_non_null(copy);
    assert_int_equal(r.pos, w1.len);
    teststate_encode(ops, copy, &w2);
    assert_int_equal(w1.len, w2.len);
    assert_memory_equal(w1.data, w2.data, w1.len);
    teststate_assert_same_render(ops, st, copy);
    ops->destroy(copy);
    buf_writer_destroy(&w1);
    buf_writer_destroy(&w2);
}

/* Every strict prefix of ST's encoding fails to decode; FLIPS random
 * corruptions decode to NULL or to a state that encodes and decodes
 * again. */
static inline void
teststate_check_corruption(const struct state_ops *ops, const void *st,
                           struct testrand *r, int flips)
{
    struct buf_writer w;
    char err[128];

    teststate_encode(ops, st, &w);
    for (size_t cut = 0; cut < w.len; cut++) {
        struct buf_reader rd;
        void *got;

        buf_reader_init(&rd, w.data, cut);
        got = ops->decode(&rd, err, sizeof(err));
        assert_null(got);
    }
    for (int i = 0; i < flips; i++) {
        uint8_t *bytes = xmalloc(w.len);
        struct buf_reader rd;
        void *got;
        int n = 1 + (int)testrand_below(r, 4);

        memcpy(bytes, w.data, w.len);
        for (int j = 0; j < n; j++)
            bytes[testrand_below(r, w.len)] ^= (uint8_t)(1u << testrand_below(r, 8));
        buf_reader_init(&rd, bytes, w.len);
        got = ops->decode(&rd, err, sizeof(err));
        if (got != NULL) {
            teststate_check_roundtrip(ops, got);
            ops->destroy(got);
        }
        free(bytes);
    }
    buf_writer_destroy(&w);
}

/* Decoding BYTES fails with exactly MESSAGE. */
static inline void
teststate_expect_refused(const struct state_ops *ops, const uint8_t *bytes,
                         size_t len, const char *message)
{
    struct buf_reader r;
    char err[128] = "";

    buf_reader_init(&r, bytes, len);
    assert_null(ops->decode(&r, err, sizeof(err)));
    assert_string_equal(err, message);
}

#endif
