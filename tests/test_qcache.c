/*
 * test_qcache: the frontend's query cache (services/frontend/qcache.c)
 * fed with cache values made by cacheval, as a query would: which closed
 * buckets it asks for, what it decodes again, and that what it renders is
 * what the owner's metric renders.
 */
#include "teststate.h"

#include <json-c/json.h>
#include <string.h>

#include "cacheval.h"
#include "metric.h"
#include "qcache.h"

#define S EVENT_US_PER_SECOND
#define T0 1764000000LL                  /* a multiple of 900 */
#define NOW ((T0 + 5) * S)
#define MIN 60
#define ERRLEN 128
#define WANT_MAX 128
#define SEQ 1000                          /* the first open value's */
#define CLOSED_COUNT 4                    /* closed 1 min buckets */

static void
fold_counter(struct metric *m, int64_t time_s, double value)
{
    struct event ev = { .type = EVENT_COUNTER, .name = "c", .name_len = 1,
                        .value = value, .time_us = time_s * S, .source = "" };

    metric_fold(m, &ev, NOW);
}

/* A counter with events now and in the 1 min buckets 2, 10, 30 and 59
 * minutes ago (closed in the 1h window). */
static struct metric *
owner_metric(uint64_t generation)
{
    struct metric *m = metric_create(EVENT_COUNTER, generation, NULL);

    fold_counter(m, T0, 1);
    fold_counter(m, T0 - 2 * MIN, 2);
    fold_counter(m, T0 - 10 * MIN, 4);
    fold_counter(m, T0 - 30 * MIN, 8);
    fold_counter(m, T0 - 59 * MIN, 16);
    return m;
}

static const int64_t closed_starts[CLOSED_COUNT] = {
    T0 - 59 * MIN, T0 - 30 * MIN, T0 - 10 * MIN, T0 - 2 * MIN,
};

/* The open value of M (version 2) at sequence SEQUENCE with marks
 * FLUSH_FIRST and CLOSED_SEQ for the 1 min ring (0 for the others). */
static void
open_value(const struct metric *m, uint64_t sequence, uint64_t flush_first,
           uint64_t closed_seq, struct buf_writer *out)
{
    struct codec_cache_header h = { .version = 2,
                                    .generation = metric_generation(m),
                                    .map_version = 1, .sequence = sequence };
    struct cacheval_marks marks = { .flush_first = flush_first };

    marks.closed_seq[RING_1MIN] = closed_seq;
    buf_writer_create(out, 256);
    cacheval_encode_open(m, &h, NOW, NULL, 0, out);
    cacheval_encode_marks(&h, &marks, out);
}

static void
closed_value(const struct metric *m, int64_t start, uint64_t sequence,
             struct buf_writer *out)
{
    struct codec_cache_header h = { .version = 2,
                                    .generation = metric_generation(m),
                                    .map_version = 1, .sequence = sequence };

    buf_writer_create(out, 128);
    assert_int_equal(cacheval_encode_closed(m, &h, RING_1MIN, start, out), 0);
}

static void
install_open(struct qcache *c, struct qcache_entry *e, const struct metric *m,
             uint64_t sequence, uint64_t flush_first, uint64_t closed_seq,
             int expect)
{
    struct buf_writer v;
    char err[ERRLEN] = "";

    open_value(m, sequence, flush_first, closed_seq, &v);
    assert_int_equal(qcache_open(c, e, v.data, v.len, err, sizeof(err)),
                     expect);
    buf_writer_destroy(&v);
}

/* Asks what the 1h window needs; checks it is the N starts WANT. */
static void
assert_missing(struct qcache *c, struct qcache_entry *e, const int64_t *want,
               size_t n)
{
    int64_t starts[WANT_MAX];
    enum ring ring;
    uint64_t generation;

    assert_int_equal(qcache_missing(c, e, WINDOW_1H, NOW, &ring, &generation,
                                    starts, WANT_MAX), n);
    assert_int_equal(ring, RING_1MIN);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(starts[i], want[i]);
}

/* Hands the closed values of M's buckets (sequence SEQUENCE + i) over. */
static void
feed_closed(struct qcache *c, struct qcache_entry *e, const struct metric *m,
            uint64_t sequence)
{
    char err[ERRLEN] = "";

    for (size_t i = 0; i < CLOSED_COUNT; i++) {
        struct buf_writer v;

        closed_value(m, closed_starts[i], sequence + i, &v);
        assert_int_equal(qcache_closed(c, e, v.data, v.len, err,
                                       sizeof(err)), 1);
        buf_writer_destroy(&v);
    }
}

/* qcache_window_state for 1h (twice: made, then from the kept merge)
 * encodes as M's window state does. */
static void
assert_window_state(struct qcache_entry *e, const struct metric *m)
{
    const struct state_ops *ops = state_ops_for(EVENT_COUNTER);
    void *want_state = metric_window_state(m, WINDOW_1H, NOW);
    struct buf_writer want;

    buf_writer_create(&want, 64);
    ops->encode(want_state, &want);
    for (int i = 0; i < 2; i++) {
        void *state = qcache_window_state(e, WINDOW_1H, NOW);
        struct buf_writer got;

        buf_writer_create(&got, 64);
        ops->encode(state, &got);
        assert_int_equal(got.len, want.len);
        assert_memory_equal(got.data, want.data, want.len);
        buf_writer_destroy(&got);
        ops->destroy(state);
    }
    buf_writer_destroy(&want);
    ops->destroy(want_state);
}

/* What the cache renders for 1h is what M renders. */
static void
assert_renders_as(struct qcache_entry *e, const struct metric *m)
{
    json_object *got, *want;

    assert_int_equal(qcache_complete(e, WINDOW_1H, NOW), 1);
    assert_window_state(e, m);
    got = metric_render(qcache_metric(e), WINDOW_1H, NOW, 1);
    want = metric_render(m, WINDOW_1H, NOW, 1);
    assert_string_equal(json_object_to_json_string(got),
                        json_object_to_json_string(want));
    json_object_put(got);
    json_object_put(want);
}

static void
test_read_once_then_kept(void **unused)
{
    struct qcache *c = qcache_create(8, 0);
    struct metric *m = owner_metric(1);
    struct qcache_entry *e;
    struct qcache_stats st;

    (void)unused;
    /* settled: the newest closed value (SEQ - 1) is below flush_first */
    e = qcache_acquire(c, "c", 1);
    install_open(c, e, m, SEQ, SEQ, SEQ - 1, QCACHE_LIVE);
    assert_missing(c, e, closed_starts, CLOSED_COUNT);
    assert_int_equal(qcache_complete(e, WINDOW_1H, NOW), 0);
    feed_closed(c, e, m, SEQ - CLOSED_COUNT);
    assert_renders_as(e, m);
    qcache_release(c, e);

    /* the same open value again: nothing to read */
    e = qcache_acquire(c, "c", 1);
    install_open(c, e, m, SEQ, SEQ, SEQ - 1, QCACHE_LIVE);
    assert_missing(c, e, NULL, 0);
    assert_renders_as(e, m);
    qcache_release(c, e);

    qcache_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.opens, 1);
    assert_int_equal(st.closed_read, CLOSED_COUNT);
    assert_int_equal(st.closed_decoded, CLOSED_COUNT);
    /* 4 kept and the open value's current bucket, twice */
    assert_int_equal(st.closed_kept, 1 + CLOSED_COUNT + 1);
    metric_destroy(m);
    qcache_destroy(c);
}

static void
test_unsettled_read_again_not_decoded(void **unused)
{
    struct qcache *c = qcache_create(8, 0);
    struct metric *m = owner_metric(1);
    struct qcache_entry *e = qcache_acquire(c, "c", 1);
    struct qcache_stats st;

    (void)unused;
    /* the flush of the open value wrote a closed value of the ring */
    install_open(c, e, m, SEQ, SEQ - 1, SEQ - 1, QCACHE_LIVE);
    assert_missing(c, e, closed_starts, CLOSED_COUNT);
    feed_closed(c, e, m, SEQ - CLOSED_COUNT);
    assert_renders_as(e, m);
    assert_missing(c, e, closed_starts, CLOSED_COUNT);
    /* not yet read in this round */
    assert_int_equal(qcache_complete(e, WINDOW_1H, NOW), 0);
    feed_closed(c, e, m, SEQ - CLOSED_COUNT);
    assert_renders_as(e, m);
    qcache_stats(c, &st);
    assert_int_equal(st.closed_read, 2 * CLOSED_COUNT);
    assert_int_equal(st.closed_decoded, CLOSED_COUNT);
    qcache_release(c, e);
    metric_destroy(m);
    qcache_destroy(c);
}

static void
test_new_mark_reads_again(void **unused)
{
    struct qcache *c = qcache_create(8, 0);
    struct metric *m = owner_metric(1);
    struct qcache_entry *e = qcache_acquire(c, "c", 1);
    const int64_t late[] = { T0 - 10 * MIN };
    struct buf_writer v;
    char err[ERRLEN] = "";
    struct qcache_stats st;

    (void)unused;
    install_open(c, e, m, SEQ, SEQ, SEQ - 1, QCACHE_LIVE);
    feed_closed(c, e, m, SEQ - CLOSED_COUNT);
    assert_missing(c, e, NULL, 0);
    assert_renders_as(e, m);

    /* a late event; its bucket's own value SEQ + 1, then an open value
     * marking it: only that bucket has a new sequence */
    fold_counter(m, T0 - 10 * MIN, 32);
    install_open(c, e, m, SEQ + 2, SEQ + 2, SEQ + 1, QCACHE_LIVE);
    assert_missing(c, e, closed_starts, CLOSED_COUNT);
    for (size_t i = 0; i < CLOSED_COUNT; i++) {
        uint64_t seq = closed_starts[i] == late[0] ? SEQ + 1
                                                   : SEQ - CLOSED_COUNT + i;

        closed_value(m, closed_starts[i], seq, &v);
        assert_int_equal(qcache_closed(c, e, v.data, v.len, err,
                                       sizeof(err)), 1);
        buf_writer_destroy(&v);
    }
    assert_renders_as(e, m);
    qcache_stats(c, &st);
    assert_int_equal(st.opens, 2);
    assert_int_equal(st.closed_decoded, CLOSED_COUNT + 1);

    /* an older open value changes nothing */
    install_open(c, e, m, SEQ, SEQ, SEQ - 1, QCACHE_LIVE);
    assert_missing(c, e, NULL, 0);
    assert_renders_as(e, m);
    qcache_stats(c, &st);
    assert_int_equal(st.opens, 2);
    qcache_release(c, e);
    metric_destroy(m);
    qcache_destroy(c);
}

static void
test_tombstone_and_new_generation(void **unused)
{
    struct qcache *c = qcache_create(8, 0);
    struct metric *m = owner_metric(1), *m2 = owner_metric(2);
    struct qcache_entry *e = qcache_acquire(c, "c", 1);
    struct codec_cache_header h = { .version = 2, .generation = 2,
                                    .map_version = 1, .sequence = SEQ + 10 };
    struct buf_writer v;
    char err[ERRLEN] = "";

    (void)unused;
    install_open(c, e, m, SEQ, SEQ, SEQ - 1, QCACHE_LIVE);
    feed_closed(c, e, m, SEQ - CLOSED_COUNT);
    buf_writer_create(&v, 64);
    cacheval_encode_tombstone(&h, &v);
    assert_int_equal(qcache_open(c, e, v.data, v.len, err, sizeof(err)),
                     QCACHE_DELETED);
    assert_null(qcache_metric(e));
    buf_writer_destroy(&v);

    /* the next life: nothing of the first is kept; a closed value of the
     * old generation is skipped */
    install_open(c, e, m2, SEQ + 20, SEQ + 20, SEQ - 1, QCACHE_LIVE);
    assert_missing(c, e, closed_starts, CLOSED_COUNT);
    closed_value(m, closed_starts[0], SEQ + 15, &v);
    assert_int_equal(qcache_closed(c, e, v.data, v.len, err, sizeof(err)), 0);
    buf_writer_destroy(&v);
    assert_int_equal(qcache_complete(e, WINDOW_1H, NOW), 0);
    feed_closed(c, e, m2, SEQ + 11);
    assert_renders_as(e, m2);
    qcache_release(c, e);
    metric_destroy(m);
    metric_destroy(m2);
    qcache_destroy(c);
}

static void
test_bad_values(void **unused)
{
    struct qcache *c = qcache_create(8, 0);
    struct metric *m = owner_metric(1);
    struct qcache_entry *e = qcache_acquire(c, "c", 1);
    struct buf_writer v;
    char err[ERRLEN] = "";

    (void)unused;
    open_value(m, SEQ, SEQ, SEQ - 1, &v);
    assert_int_equal(qcache_open(c, e, v.data, v.len - 1, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "truncated closed marks");
    assert_int_equal(qcache_open(c, e, v.data, v.len, err, sizeof(err)),
                     QCACHE_LIVE);
    buf_writer_destroy(&v);
    /* an open value where a closed one belongs */
    open_value(m, SEQ, SEQ, SEQ - 1, &v);
    assert_int_equal(qcache_closed(c, e, v.data, v.len, err, sizeof(err)),
                     -1);
    assert_string_equal(err, "not a closed-bucket value");
    buf_writer_destroy(&v);
    qcache_release(c, e);
    metric_destroy(m);
    qcache_destroy(c);
}

static void
test_least_recently_used_go(void **unused)
{
    struct qcache *c = qcache_create(2, 0);
    struct metric *m = owner_metric(1);
    const char *names[] = { "a", "b", "a", "c" };
    struct qcache_entry *e;
    struct qcache_stats st;

    (void)unused;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        e = qcache_acquire(c, names[i], 1);
        install_open(c, e, m, SEQ, SEQ, SEQ - 1, QCACHE_LIVE);
        qcache_release(c, e);
    }
    qcache_stats(c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evicted, 1);
    assert_int_equal(st.opens, 3);       /* "a" again: kept */
    /* "b" went: made anew, pushing out "a" (used before "c") */
    e = qcache_acquire(c, "b", 1);
    assert_null(qcache_metric(e));
    qcache_release(c, e);
    qcache_stats(c, &st);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.evicted, 2);
    qcache_forget(c, "c", 1);
    qcache_forget(c, "a", 1);            /* not there: nothing happens */
    qcache_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.evicted, 2);
    e = qcache_acquire(c, "c", 1);
    assert_null(qcache_metric(e));
    qcache_release(c, e);
    metric_destroy(m);
    qcache_destroy(c);
}

/* Past the byte budget the least recently used entries go, and the count
 * follows what the entries hold. */
static void
test_byte_budget(void **unused)
{
    struct metric *m = owner_metric(1);
    struct buf_writer open, closed;
    struct qcache *c;
    struct qcache_entry *e;
    struct qcache_stats st;
    uint64_t one;
    char err[ERRLEN] = "";

    (void)unused;
    open_value(m, SEQ, SEQ, SEQ - 1, &open);
    closed_value(m, closed_starts[0], SEQ - 1, &closed);
    one = open.len + closed.len;
    /* room for two metrics' values, not three */
    c = qcache_create(100, (size_t)(2 * one + one / 2));
    for (int i = 0; i < 3; i++) {
        char name[2] = { (char)('a' + i), 0 };

        e = qcache_acquire(c, name, 1);
        assert_int_equal(qcache_open(c, e, open.data, open.len, err,
                                     sizeof(err)), QCACHE_LIVE);
        assert_int_equal(qcache_closed(c, e, closed.data, closed.len, err,
                                       sizeof(err)), 1);
        /* the same value again is not counted twice */
        assert_int_equal(qcache_closed(c, e, closed.data, closed.len, err,
                                       sizeof(err)), 1);
        qcache_release(c, e);
        qcache_stats(c, &st);
        assert_int_equal(st.bytes, (uint64_t)(i + 1) * one);
        assert_int_equal(st.evicted, 0);
    }
    /* over budget: the next new metric pushes out "a" (oldest) */
    e = qcache_acquire(c, "d", 1);
    qcache_release(c, e);
    qcache_stats(c, &st);
    assert_int_equal(st.evicted, 1);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.bytes, 2 * one);
    qcache_forget(c, "b", 1);
    qcache_stats(c, &st);
    assert_int_equal(st.bytes, one);
    buf_writer_destroy(&open);
    buf_writer_destroy(&closed);
    metric_destroy(m);
    qcache_destroy(c);
}

/* The closed marks section, byte for byte (schema/cache-value.md). */
static void
test_marks_bytes(void **unused)
{
    static const uint8_t want[] = { 0x01, 0x03, 0x03, 0x02, 0x90, 0x03 };
    struct codec_cache_header h = { .version = 2, .sequence = 1000 };
    struct cacheval_marks marks = { .flush_first = 997,
                                    .closed_seq = { 997, 998, 600 } };
    struct buf_writer out;

    (void)unused;
    buf_writer_create(&out, 16);
    cacheval_encode_marks(&h, &marks, &out);
    assert_int_equal(out.len, sizeof(want));
    assert_memory_equal(out.data, want, sizeof(want));
    h.version = 1;                       /* no room for them */
    cacheval_encode_marks(&h, &marks, &out);
    assert_int_equal(out.len, sizeof(want));
    buf_writer_destroy(&out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_once_then_kept),
        cmocka_unit_test(test_unsettled_read_again_not_decoded),
        cmocka_unit_test(test_new_mark_reads_again),
        cmocka_unit_test(test_tombstone_and_new_generation),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_least_recently_used_go),
        cmocka_unit_test(test_byte_budget),
        cmocka_unit_test(test_marks_bytes),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
