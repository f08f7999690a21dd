/*
 * test_cacheval: the open-buckets value of schema/cache-value.md in both
 * versions. Version 2 holds closed buckets that still change beside the
 * current ones; version 1 holds one bucket per ring and refuses more. A
 * closed value replaces a held bucket only with a higher sequence.
 */
#include "teststate.h"

#include "cacheval.h"
#include "metric.h"

#define S EVENT_US_PER_SECOND
#define T0 1764000000LL                  /* a multiple of 900 */
#define NOW ((T0 + 5) * S)
#define ERRLEN 128

static void
fold_counter(struct metric *m, int64_t time_s, double value)
{
    struct event ev = { .type = EVENT_COUNTER, .name = "c", .name_len = 1,
                        .value = value, .time_us = time_s * S, .source = "" };

    metric_fold(m, &ev, NOW);
}

/* The count and sum of M's RING bucket at START. */
static void
assert_bucket(const struct metric *m, enum ring ring, int64_t start,
              uint64_t count, double sum)
{
    const void *bucket = metric_bucket_at(m, ring, start);
    struct buf_writer want, got;
    struct metric *ref = metric_create(EVENT_COUNTER, 1, NULL);
    struct event ev = { .type = EVENT_COUNTER, .name = "c", .name_len = 1,
                        .value = sum, .time_us = start * S, .source = "" };

    assert_non_null(bucket);
    /* A reference bucket of COUNT events summing to SUM, compared by its
     * encoding: the first event carries the sum, the others 0. */
    for (uint64_t i = 0; i < count; i++) {
        metric_fold(ref, &ev, NOW);
        ev.value = 0;
    }
    buf_writer_create(&want, 64);
    buf_writer_create(&got, 64);
    state_ops_for(EVENT_COUNTER)->encode(metric_bucket_at(ref, ring, start),
                                         &want);
    state_ops_for(EVENT_COUNTER)->encode(bucket, &got);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.data, want.data, want.len);
    buf_writer_destroy(&want);
    buf_writer_destroy(&got);
    metric_destroy(ref);
}

/* A counter with 2 events now (T0) and 3 in the 10 s bucket T0-30. */
static struct metric *
late_metric(void)
{
    struct metric *m = metric_create(EVENT_COUNTER, 1, NULL);

    fold_counter(m, T0, 1);
    fold_counter(m, T0 + 1, 2);
    fold_counter(m, T0 - 30, 4);
    fold_counter(m, T0 - 25, 8);
    fold_counter(m, T0 - 21, 16);
    return m;
}

static void
encode_open(const struct metric *m, uint8_t version, uint64_t sequence,
            const struct cacheval_bucket *held, size_t n,
            struct buf_writer *out)
{
    struct codec_cache_header h = { .version = version, .generation = 1,
                                    .map_version = 1, .sequence = sequence };

    buf_writer_create(out, 256);
    cacheval_encode_open(m, &h, NOW, held, n, out);
}

static void
test_version2_holds_closed_buckets(void **unused)
{
    struct metric *m = late_metric();
    struct cacheval_bucket held[] = { { RING_10S, T0 - 30 } };
    struct cacheval_open open;
    struct buf_writer v;
    char err[ERRLEN];

    (void)unused;
    encode_open(m, 2, 7, held, 1, &v);
    assert_int_equal(v.data[2], 2);
    assert_int_equal(cacheval_decode_open(v.data, v.len, &open, err,
                                          sizeof(err)), 0);
    assert_int_equal(open.header.version, 2);
    /* the current bucket of each of the 3 rings, then the late one */
    assert_int_equal(open.held_count, 4);
    assert_int_equal(open.held[3].ring, RING_10S);
    assert_int_equal(open.held[3].start_s, T0 - 30);
    assert_bucket(open.metric, RING_10S, T0, 2, 3);
    assert_bucket(open.metric, RING_10S, T0 - 30, 3, 28);
    assert_null(metric_bucket_at(open.metric, RING_10S, T0 - 20));
    /* every bucket the owner holds, ascending */
    assert_int_equal(open.present_count[RING_10S], 2);
    assert_int_equal(open.present[RING_10S][0], T0 - 30);
    assert_int_equal(open.present[RING_10S][1], T0);
    assert_int_equal(open.present_count[RING_1MIN], 2);
    assert_int_equal(open.present[RING_1MIN][0], T0 - 60);
    assert_int_equal(open.present[RING_1MIN][1], T0);
    cacheval_open_release(&open);
    buf_writer_destroy(&v);
    metric_destroy(m);
}

static void
test_version1_holds_current_buckets_only(void **unused)
{
    struct metric *m = late_metric();
    struct cacheval_bucket held[] = { { RING_10S, T0 - 30 } };
    struct cacheval_open open;
    struct buf_writer v1, v2;
    char err[ERRLEN];

    (void)unused;
    encode_open(m, 1, 7, held, 1, &v1);
    assert_int_equal(v1.data[2], 1);
    assert_int_equal(cacheval_decode_open(v1.data, v1.len, &open, err,
                                          sizeof(err)), 0);
    assert_int_equal(open.held_count, 3);
    assert_null(metric_bucket_at(open.metric, RING_10S, T0 - 30));
    cacheval_open_release(&open);

    /* A version 1 reader's rule: one bucket per ring. */
    encode_open(m, 2, 7, held, 1, &v2);
    v2.data[2] = 1;
    assert_int_equal(cacheval_decode_open(v2.data, v2.len, &open, err,
                                          sizeof(err)), -1);
    assert_string_equal(err, "open bucket repeated or refused");
    buf_writer_destroy(&v1);
    buf_writer_destroy(&v2);
    metric_destroy(m);
}

static void
test_version2_refuses_a_repeated_bucket(void **unused)
{
    struct metric *m = late_metric();
    struct cacheval_bucket held[] = { { RING_10S, T0 - 30 },
                                      { RING_10S, T0 - 30 } };
    struct cacheval_open open;
    struct buf_writer v;
    char err[ERRLEN];

    (void)unused;
    encode_open(m, 2, 7, held, 2, &v);
    assert_int_equal(cacheval_decode_open(v.data, v.len, &open, err,
                                          sizeof(err)), -1);
    assert_string_equal(err, "open bucket repeated or refused");
    buf_writer_destroy(&v);
    metric_destroy(m);
}

/* The closed value of T0-30 written at SEQUENCE, holding COUNT events of
 * value 1. */
static void
encode_closed(uint64_t sequence, int count, struct buf_writer *out)
{
    struct metric *m = metric_create(EVENT_COUNTER, 1, NULL);
    struct codec_cache_header h = { .generation = 1, .map_version = 1,
                                    .sequence = sequence };

    for (int i = 0; i < count; i++)
        fold_counter(m, T0 - 30, 1);
    buf_writer_create(out, 64);
    assert_int_equal(cacheval_encode_closed(m, &h, RING_10S, T0 - 30, out), 0);
    metric_destroy(m);
}

static void
test_higher_sequence_wins_for_held_buckets(void **unused)
{
    struct metric *m = late_metric();
    struct cacheval_bucket held[] = { { RING_10S, T0 - 30 } };
    struct cacheval_open open;
    struct buf_writer v, older, newer;
    char err[ERRLEN];

    (void)unused;
    encode_open(m, 2, 7, held, 1, &v);
    encode_closed(6, 1, &older);
    encode_closed(8, 5, &newer);
    assert_int_equal(cacheval_decode_open(v.data, v.len, &open, err,
                                          sizeof(err)), 0);
    /* written before the open value: the held copy stays */
    assert_int_equal(cacheval_apply_closed(&open, older.data, older.len, err,
                                           sizeof(err)), 0);
    assert_bucket(open.metric, RING_10S, T0 - 30, 3, 28);
    /* settled after it: the closed value replaces the held copy */
    assert_int_equal(cacheval_apply_closed(&open, newer.data, newer.len, err,
                                           sizeof(err)), 1);
    assert_bucket(open.metric, RING_10S, T0 - 30, 5, 5);
    cacheval_open_release(&open);
    buf_writer_destroy(&v);
    buf_writer_destroy(&older);
    buf_writer_destroy(&newer);
    metric_destroy(m);
}

static void
test_bucket_starts(void **unused)
{
    struct metric *m = late_metric();
    int64_t starts[4];

    (void)unused;
    assert_int_equal(metric_bucket_starts(m, RING_10S, T0 - 100, T0, starts,
                                          4), 2);
    assert_int_equal(starts[0], T0 - 30);
    assert_int_equal(starts[1], T0);
    assert_int_equal(metric_bucket_starts(m, RING_10S, T0 - 29, T0, starts,
                                          4), 1);
    assert_int_equal(starts[0], T0);
    assert_int_equal(metric_bucket_starts(m, RING_10S, T0 - 100, T0 - 1,
                                          starts, 4), 1);
    assert_int_equal(starts[0], T0 - 30);
    assert_int_equal(metric_bucket_starts(m, RING_10S, T0 - 100, T0, starts,
                                          1), 1);
    assert_int_equal(starts[0], T0 - 30);
    assert_int_equal(metric_bucket_starts(m, RING_15MIN, T0 + 900,
                                          T0 + 9000, starts, 4), 0);
    metric_destroy(m);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version2_holds_closed_buckets),
        cmocka_unit_test(test_version1_holds_current_buckets_only),
        cmocka_unit_test(test_version2_refuses_a_repeated_bucket),
        cmocka_unit_test(test_higher_sequence_wins_for_held_buckets),
        cmocka_unit_test(test_bucket_starts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
