/*
 * test_gauge: last value per source, latest event time winning and ties
 * broken the same way in any fold or merge order; encoding and refusals.
 */
#include "teststate.h"

#define SETS 2000
#define SET_MAX 200

static const struct state_ops *ops = &gauge_ops;
static const char *const sources[] = { "", "web-1", "web-2", "db", "web-10",
                                       "h\xc3\xa9te" };
#define SOURCE_COUNT (sizeof(sources) / sizeof(sources[0]))

static size_t
make_events(struct testrand *r, struct event *evs)
{
    size_t n = (size_t)testrand_below(r, SET_MAX + 1);

    for (size_t i = 0; i < n; i++) {
        const char *src = sources[testrand_below(r, SOURCE_COUNT)];

        memset(&evs[i], 0, sizeof(evs[i]));
        evs[i].type = EVENT_GAUGE;
        evs[i].source = src;
        evs[i].source_len = strlen(src);
        /* few distinct times and values, so ties happen often */
        evs[i].time_us = 1764000000000000LL + (int64_t)testrand_below(r, 5);
        switch (testrand_below(r, 4)) {
        case 0: evs[i].value = 0.0; break;
        case 1: evs[i].value = -0.0; break;
        default: evs[i].value = (double)testrand_below(r, 7) - 3.5; break;
        }
    }
    return n;
}

static void
test_split_merge_same_bytes(void **unused)
{
    struct event evs[SET_MAX];
    struct testrand r;

    (void)unused;
    testrand_seed(&r, 11);
    for (int set = 0; set < testrand_scale(SETS); set++) {
        size_t n = make_events(&r, evs);
        void *one = teststate_fold(ops, NULL, evs, n);
        void *split = teststate_fold_split(ops, NULL, evs, n, &r);

        teststate_assert_same_bytes(ops, one, split);
        teststate_check_roundtrip(ops, split);
        ops->destroy(one);
        ops->destroy(split);
    }
}

static void
fold(void *st, const char *source, int64_t time_us, double value)
{
    struct event ev = { .type = EVENT_GAUGE, .source = source,
                        .source_len = strlen(source), .time_us = time_us,
                        .value = value };

    ops->fold(st, &ev);
}

static void
test_latest_time_wins_and_render(void **unused)
{
    void *st = ops->create(NULL);
    struct json_object *o;

    (void)unused;
    fold(st, "web-1", 2000000, 5);
    fold(st, "web-1", 1000000, 9);      /* older: ignored */
    fold(st, "web-2", 1000000, 1);
    fold(st, "web-2", 1000000, 3);      /* same time: greater value wins */
    fold(st, "web-2", 1000000, 2);
    fold(st, "", 3000000, -1.5);        /* the default source */
    o = ops->render(st, NULL);
    assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                        "{\"sources\":{\"\":-1.5,\"web-1\":5.0,\"web-2\":3.0},"
                        "\"min\":-1.5,\"max\":5.0,\"mean\":2.1666666666666665}");
    json_object_put(o);
    ops->destroy(st);
}

/* SOURCE (EVENT_SOURCE_MAX + 1 bytes) := "NN-" and letters up to the
 * longest source allowed. */
static void
long_source(char *source, int n)
{
    memset(source, 'a' + n % 26, EVENT_SOURCE_MAX);
    source[0] = (char)('0' + n / 10);
    source[1] = (char)('0' + n % 10);
    source[2] = '-';
    source[EVENT_SOURCE_MAX] = '\0';
}

/* Many long sources, added out of order: their bytes move as the state
 * grows, and a clone or a merge into an empty state keeps every one. */
static void
test_many_long_sources(void **unused)
{
    enum { COUNT = 60 };
    char source[EVENT_SOURCE_MAX + 1];
    void *st = ops->create(NULL), *copy, *merged = ops->create(NULL);
    struct json_object *o, *by_source, *v;

    (void)unused;
    for (int i = COUNT - 1; i >= 0; i--) {
        long_source(source, i);
        fold(st, source, 1000000, i);
    }
    copy = ops->clone(st);
    assert_int_equal(ops->merge(merged, copy), 0);
    teststate_assert_same_bytes(ops, st, copy);
    teststate_assert_same_bytes(ops, st, merged);
    teststate_check_roundtrip(ops, merged);
    o = ops->render(merged, NULL);
    by_source = json_object_object_get(o, "sources");
    assert_int_equal(json_object_object_length(by_source), COUNT);
    long_source(source, 37);
    assert_true(json_object_object_get_ex(by_source, source, &v));
    assert_true(json_object_get_double(v) == 37.0);
    json_object_put(o);
    ops->destroy(st);
    ops->destroy(copy);
    ops->destroy(merged);
}

static void
test_empty_render_nulls(void **unused)
{
    void *st = ops->create(NULL);
    struct json_object *o = ops->render(st, NULL);

    (void)unused;
    assert_true(ops->empty(st));
    assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                        "{\"sources\":{},\"min\":null,\"max\":null,\"mean\":null}");
    json_object_put(o);
    ops->destroy(st);
}

static void
test_corruption(void **unused)
{
    struct event evs[SET_MAX];
    struct testrand r;

    (void)unused;
    testrand_seed(&r, 12);
    for (int set = 0; set < testrand_scale(40); set++) {
        size_t n = make_events(&r, evs);
        void *st = teststate_fold(ops, NULL, evs, n);

        teststate_check_corruption(ops, st, &r, 200);
        ops->destroy(st);
    }
}

#define ONE 0, 0, 0, 0, 0, 0, 0xf0, 0x3f    /* 1.0 */

static void
test_decode_refusals(void **unused)
{
    const uint8_t unsorted[] = { EVENT_GAUGE, 1, 2, 1, 'b', 2, ONE,
                                 1, 'a', 2, ONE };
    const uint8_t duplicate[] = { EVENT_GAUGE, 1, 2, 1, 'a', 2, ONE,
                                  1, 'a', 4, ONE };
    const uint8_t control[] = { EVENT_GAUGE, 1, 1, 1, '\n', 2, ONE };
    const uint8_t infinite[] = { EVENT_GAUGE, 1, 1, 1, 'a', 2,
                                 0, 0, 0, 0, 0, 0, 0xf0, 0x7f };
    const uint8_t huge_count[] = { EVENT_GAUGE, 1, 0xff, 0xff, 0xff, 0x0f };

    (void)unused;
    teststate_expect_refused(ops, unsorted, sizeof(unsorted),
                   "gauge: sources not in strict order");
    teststate_expect_refused(ops, duplicate, sizeof(duplicate),
                   "gauge: sources not in strict order");
    teststate_expect_refused(ops, control, sizeof(control), "gauge: entry 0 invalid");
    teststate_expect_refused(ops, infinite, sizeof(infinite), "gauge: entry 0 invalid");
    teststate_expect_refused(ops, huge_count, sizeof(huge_count),
                   "gauge: truncated or malformed");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_merge_same_bytes),
        cmocka_unit_test(test_latest_time_wins_and_render),
        cmocka_unit_test(test_many_long_sources),
        cmocka_unit_test(test_empty_render_nulls),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_decode_refusals),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
