/*
 * test_metric: a metric's windows. Events at bucket edges, rollover of each
 * window, late and future events, partial states merged per granule, the
 * merge of whole metrics, rendering with series, and the encoding.
 */
#include "teststate.h"

#include <stdio.h>

#include "metric.h"

#define S EVENT_US_PER_SECOND
#define T0 1764000000LL                  /* a multiple of 900 */
#define NOW ((T0 + 5) * S)

static void
fold_counter(struct metric *m, int64_t time_us, double value, int64_t now)
{
    struct event ev = { .type = EVENT_COUNTER, .name = "c", .name_len = 1,
                        .value = value, .time_us = time_us, .source = "" };

    metric_fold(m, &ev, now);
}

/* The "count" a window answers at NOW_US. */
static int64_t
window_count(const struct metric *m, enum window w, int64_t now_us)
{
    struct json_object *o = metric_render(m, w, now_us, 0), *v;
    int64_t count;

    assert_true(json_object_object_get_ex(o, "count", &v));
    count = json_object_get_int64(v);
    json_object_put(o);
    return count;
}

static void
test_bucket_edges(void **unused)
{
    struct metric *m = metric_create(EVENT_COUNTER, 1, NULL);

    (void)unused;
    /* the 1m window at NOW reads buckets T0-50 .. T0 */
    fold_counter(m, (T0 - 50) * S, 1, NOW);        /* first instant: in */
    fold_counter(m, (T0 - 50) * S - 1, 1, NOW);    /* one µs before: out */
    fold_counter(m, NOW, 1, NOW);
    assert_int_equal(window_count(m, WINDOW_1M, NOW), 2);
    assert_int_equal(window_count(m, WINDOW_10M, NOW), 3);
    assert_int_equal(window_count(m, WINDOW_ALL, NOW), 3);
    metric_destroy(m);
}

/* One event at T0; each window drops it exactly when its oldest bucket
 * moves past T0, and `all` keeps it. */
static void
test_rollover_of_each_window(void **unused)
{
    struct {
        enum window window;
        int64_t last_in_s;           /* last "now" (s after T0) still in */
    } edges[] = {
        { WINDOW_1M, 59 },
        { WINDOW_10M, 599 },
        { WINDOW_1H, 3599 },
        { WINDOW_1D, 86399 },
    };
    struct metric *m = metric_create(EVENT_COUNTER, 1, NULL);

    (void)unused;
    fold_counter(m, T0 * S, 5, T0 * S);
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        int64_t in = (T0 + edges[i].last_in_s) * S + S - 1;

        assert_int_equal(window_count(m, edges[i].window, in), 1);
        assert_int_equal(window_count(m, edges[i].window, in + 1), 0);
        assert_int_equal(window_count(m, WINDOW_ALL, in + 1), 1);
    }
    metric_destroy(m);
}

static void
test_late_and_future_events(void **unused)
{
    struct metric *m = metric_create(EVENT_COUNTER, 1, NULL);

    (void)unused;
    /* 30 minutes late: kept by 1h and 1d, not by the 10 s ring */
    fold_counter(m, NOW - 1800 * S, 1, NOW);
    assert_int_equal(metric_expired(m), 1);
    assert_int_equal(window_count(m, WINDOW_10M, NOW), 0);
    assert_int_equal(window_count(m, WINDOW_1H, NOW), 1);
    assert_int_equal(window_count(m, WINDOW_1D, NOW), 1);
    /* 5 hours late: only 1d */
    fold_counter(m, NOW - 5 * 3600 * S, 1, NOW);
    assert_int_equal(metric_expired(m), 3);
    assert_int_equal(window_count(m, WINDOW_1H, NOW), 1);
    assert_int_equal(window_count(m, WINDOW_1D, NOW), 2);
    /* 5 minutes ahead: in `all` now, in 1m once its time comes */
    fold_counter(m, NOW + 300 * S, 1, NOW);
    assert_int_equal(window_count(m, WINDOW_ALL, NOW), 3);
    assert_int_equal(window_count(m, WINDOW_1M, NOW), 0);
    assert_int_equal(window_count(m, WINDOW_1M, NOW + 300 * S), 1);
    /* beyond the future limit: refused by the rings, never evicting */
    fold_counter(m, NOW + 900 * S, 1, NOW);
    assert_int_equal(metric_expired(m), 6);
    assert_int_equal(window_count(m, WINDOW_1M, NOW + 300 * S), 1);
    assert_int_equal(metric_expired(m), 6);
    /* the oldest retained 10 s bucket and the future one do not collide */
    fold_counter(m, (T0 - 590) * S, 1, NOW);
    assert_int_equal(window_count(m, WINDOW_10M, NOW), 1);
    assert_int_equal(metric_expired(m), 6);
    metric_destroy(m);
}

static void
test_render_counter_with_series(void **unused)
{
    struct metric *m = metric_create(EVENT_COUNTER, 1, NULL);
    int64_t now = (T0 + 5) * S;
    struct json_object *o;

    (void)unused;
    fold_counter(m, (T0 - 20) * S, 3, now);
    fold_counter(m, (T0 + 1) * S, 2, now);
    o = metric_render(m, WINDOW_1M, now, 1);
    /* span = 5 + 50 s; series rate = bucket sum / 10 s */
    assert_string_equal(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
        "{\"type\":\"counter\",\"window\":\"1m\",\"count\":2,\"sum\":5.0,"
        "\"rate\":0.090909090909090912,\"series\":["
        "[1763999950,{\"count\":0,\"sum\":0.0,\"rate\":0.0}],"
        "[1763999960,{\"count\":0,\"sum\":0.0,\"rate\":0.0}],"
        "[1763999970,{\"count\":0,\"sum\":0.0,\"rate\":0.0}],"
        "[1763999980,{\"count\":1,\"sum\":3.0,\"rate\":0.29999999999999999}],"
        "[1763999990,{\"count\":0,\"sum\":0.0,\"rate\":0.0}],"
        "[1764000000,{\"count\":1,\"sum\":2.0,\"rate\":0.20000000000000001}]]}");
    json_object_put(o);
    /* all: rate per second since the first event (25 s) */
    o = metric_render(m, WINDOW_ALL, now, 0);
    assert_string_equal(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
        "{\"type\":\"counter\",\"window\":\"all\",\"count\":2,\"sum\":5.0,"
        "\"rate\":0.20000000000000001}");
    json_object_put(o);
    metric_destroy(m);
}

static void
test_recent_is_not_windowed(void **unused)
{
    struct metric *m = metric_create(EVENT_RECENT, 1, NULL);
    struct event ev = { .type = EVENT_RECENT, .name = "r", .name_len = 1,
                        .value = 4, .time_us = NOW - 7200 * S, .source = "h",
                        .source_len = 1 };
    struct json_object *o;

    (void)unused;
    metric_fold(m, &ev, NOW);
    o = metric_render(m, WINDOW_1M, NOW, 1);
    assert_string_equal(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
        "{\"type\":\"recent\",\"window\":\"1m\",\"entries\":[{\"value\":4.0,"
        "\"time\":1763992805.0,\"source\":\"h\"}],\"series\":[]}");
    json_object_put(o);
    metric_destroy(m);
}

/* Random events of TYPE within the accepted range, some late, some ahead. */
static size_t
make_events(struct testrand *r, enum event_type type, struct event *evs,
            size_t max, char (*strings)[16])
{
    static const char *const sources[] = { "", "a", "b" };
    size_t n = (size_t)testrand_below(r, max + 1);

    for (size_t i = 0; i < n; i++) {
        int64_t back = (int64_t)testrand_below(r, 3) == 0
            ? (int64_t)testrand_below(r, 86000) : (int64_t)testrand_below(r, 700);

        memset(&evs[i], 0, sizeof(evs[i]));
        evs[i].type = type;
        evs[i].name = "m";
        evs[i].name_len = 1;
        evs[i].time_us = NOW - back * S + (int64_t)testrand_below(r, S)
                         + (testrand_below(r, 10) == 0 ? 200 * S : 0);
        evs[i].value = (double)testrand_below(r, 1000) - 100;
        evs[i].source = sources[testrand_below(r, 3)];
        evs[i].source_len = strlen(evs[i].source);
        snprintf(strings[i], 16, "u%llu",
                 (unsigned long long)testrand_below(r, 500));
        evs[i].str = strings[i];
        evs[i].str_len = strlen(strings[i]);
    }
    return n;
}

static void
assert_same_metric(const struct metric *a, const struct metric *b)
{
    struct buf_writer wa, wb;

    buf_writer_create(&wa, 256);
    buf_writer_create(&wb, 256);
    metric_encode(a, &wa);
    metric_encode(b, &wb);
    assert_int_equal(wa.len, wb.len);
    assert_memory_equal(wa.data, wb.data, wa.len);
    buf_writer_destroy(&wa);
    buf_writer_destroy(&wb);
}

/* A new counter state holding one event of value 1 at TIME_US. */
static void *
one_counter_event(int64_t time_us)
{
    struct event ev = { .type = EVENT_COUNTER, .name = "c", .name_len = 1,
                        .value = 1, .time_us = time_us, .source = "" };
    void *state = counter_ops.create(NULL);

    counter_ops.fold(state, &ev);
    return state;
}

/* The rings keep only the buckets that hold something, but behave as the
 * slot arrays of window.h: one bucket per slot (start / width mod
 * capacity), a newer bucket evicts an older one of its slot and an older
 * one is refused. */
static void
test_slot_reuse(void **unused)
{
    const struct ring_layout *ring = window_ring_layout(RING_10S);
    int64_t period = ring->width_s * ring->capacity;     /* 910 s */
    int64_t later = (T0 + period) * S;
    struct metric *m = metric_create(EVENT_COUNTER, 1, NULL);
    struct buf_writer w;
    struct buf_reader rd;
    struct metric *copy;
    char err[128];

    (void)unused;
    fold_counter(m, T0 * S, 1, T0 * S);
    fold_counter(m, (T0 + 10) * S, 1, T0 * S);
    assert_non_null(metric_bucket_at(m, RING_10S, T0));
    /* the same slot one period later: the old bucket goes */
    fold_counter(m, later, 1, later);
    assert_null(metric_bucket_at(m, RING_10S, T0));
    assert_non_null(metric_bucket_at(m, RING_10S, T0 + 10));
    assert_non_null(metric_bucket_at(m, RING_10S, T0 + period));
    assert_int_equal(metric_expired(m), 0);
    /* a bucket older than its slot's holder is refused */
    assert_int_equal(metric_set_bucket(m, RING_10S, T0,
                                       counter_ops.create(NULL)), -1);
    assert_null(metric_bucket_at(m, RING_10S, T0));
    /* a free slot takes any aligned start, in order among the others */
    assert_int_equal(metric_set_bucket(m, RING_10S, T0 + 20,
                                       one_counter_event((T0 + 20) * S)), 0);
    assert_non_null(metric_bucket_at(m, RING_10S, T0 + 20));
    assert_int_equal(metric_set_bucket(m, RING_10S, T0 + 25,
                                       counter_ops.create(NULL)), -1);
    /* the 1 min ring has its own slots: both of its buckets stay */
    assert_non_null(metric_bucket_at(m, RING_1MIN, T0));
    assert_non_null(metric_bucket_at(m, RING_1MIN, T0 + period - 10));
    assert_int_equal(window_count(m, WINDOW_10M, later), 1);

    /* the decoder wants increasing starts: T0 + 10, T0 + 20, T0 + 910 */
    buf_writer_create(&w, 256);
    metric_encode(m, &w);
    buf_reader_init(&rd, w.data, w.len);
    copy = metric_decode(&rd, err, sizeof(err));
    assert_non_null(copy);
    assert_non_null(metric_bucket_at(copy, RING_10S, T0 + 20));
    assert_same_metric(m, copy);
    metric_destroy(copy);
    buf_writer_destroy(&w);
    metric_destroy(m);
}

#define METRIC_EVENTS 200

/* Folding into one metric == folding a split into several and merging
 * them == folding per-granule partial states; encode/decode round trips. */
static void
test_merge_and_partials_property(void **unused)
{
    static struct event evs[METRIC_EVENTS];
    static char strings[METRIC_EVENTS][16];
    struct testrand r;

    (void)unused;
    testrand_seed(&r, 31);
    for (int set = 0; set < testrand_scale(150); set++) {
        enum event_type type = (enum event_type)(1 + set % 5);
        const struct state_ops *ops = state_ops_for(type);
        size_t n = make_events(&r, type, evs, METRIC_EVENTS, strings);
        struct metric *one = metric_create(type, 3, NULL);
        struct metric *parts[3], *partial = metric_create(type, 3, NULL);
        struct buf_writer w;
        struct buf_reader rd;
        struct metric *copy;
        char err[128];

        for (int p = 0; p < 3; p++)
            parts[p] = metric_create(type, 3, NULL);
        for (size_t i = 0; i < n; i++) {
            metric_fold(one, &evs[i], NOW);
            metric_fold(parts[testrand_below(&r, 3)], &evs[i], NOW);
        }
        assert_int_equal(metric_merge(parts[2], parts[0]), 0);
        assert_int_equal(metric_merge(parts[1], parts[2]), 0);
        assert_same_metric(one, parts[1]);

        /* one partial state per event's granule, as a frontend would */
        for (size_t i = 0; i < n; i++) {
            void *st = ops->create(NULL);

            ops->fold(st, &evs[i]);
            assert_int_equal(metric_merge_partial(
                partial, window_align(evs[i].time_us, WINDOW_GRANULE_S),
                evs[i].time_us, evs[i].time_us, st, NOW), 0);
            ops->destroy(st);
        }
        assert_same_metric(one, partial);

        buf_writer_create(&w, 256);
        metric_encode(one, &w);
        buf_reader_init(&rd, w.data, w.len);
        copy = metric_decode(&rd, err, sizeof(err));
        assert_non_null(copy);
        assert_int_equal(rd.pos, w.len);
        assert_same_metric(one, copy);
        for (size_t cut = 0; cut < w.len; cut += 1 + w.len / 200) {
            struct metric *bad;

            buf_reader_init(&rd, w.data, cut);
            bad = metric_decode(&rd, err, sizeof(err));
            assert_null(bad);
        }
        for (int f = 0; f < 20; f++) {
            uint8_t *bytes = xmalloc(w.len);
            struct metric *got;

            memcpy(bytes, w.data, w.len);
            bytes[testrand_below(&r, w.len)] ^= (uint8_t)(1u << testrand_below(&r, 8));
            buf_reader_init(&rd, bytes, w.len);
            got = metric_decode(&rd, err, sizeof(err));
            metric_destroy(got);
            free(bytes);
        }
        buf_writer_destroy(&w);
        metric_destroy(copy);
        metric_destroy(one);
        metric_destroy(partial);
        for (int p = 0; p < 3; p++)
            metric_destroy(parts[p]);
    }
}

static void
test_refusals(void **unused)
{
    struct metric *c = metric_create(EVENT_COUNTER, 1, NULL);
    struct metric *g = metric_create(EVENT_GAUGE, 1, NULL);
    void *st = counter_ops.create(NULL);
    const uint8_t bad_magic[] = { 'X', 1, 1, 1, 0, 0, 1, 1, 0, 0 };
    struct buf_reader rd;
    char err[128];

    (void)unused;
    assert_null(metric_create((enum event_type)9, 1, NULL));
    assert_int_equal(metric_merge(c, g), -1);
    /* partial states must lie inside one aligned granule */
    assert_int_equal(metric_merge_partial(c, T0 + 5, T0 * S, T0 * S, st, NOW), -1);
    assert_int_equal(metric_merge_partial(c, T0, T0 * S, (T0 + 10) * S, st,
                                          NOW), -1);
    assert_int_equal(metric_merge_partial(c, T0, (T0 + 1) * S, T0 * S, st,
                                          NOW), -1);
    /* an empty partial would leave an empty bucket behind */
    assert_int_equal(metric_merge_partial(c, T0, T0 * S, T0 * S, st, NOW), -1);
    buf_reader_init(&rd, bad_magic, sizeof(bad_magic));
    assert_null(metric_decode(&rd, err, sizeof(err)));
    assert_string_equal(err, "metric: bad magic or version 1");
    counter_ops.destroy(st);
    metric_destroy(c);
    metric_destroy(g);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_edges),
        cmocka_unit_test(test_rollover_of_each_window),
        cmocka_unit_test(test_late_and_future_events),
        cmocka_unit_test(test_slot_reuse),
        cmocka_unit_test(test_render_counter_with_series),
        cmocka_unit_test(test_recent_is_not_windowed),
        cmocka_unit_test(test_merge_and_partials_property),
        cmocka_unit_test(test_refusals),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
