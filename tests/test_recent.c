/*
 * test_recent: the K newest entries, newest first, ties by time then source
 * then value; the same list whatever the fold and merge order; K from the
 * config; encoding and refusals.
 */
#include "teststate.h"

#define SETS 2000
#define SET_MAX 300

static const struct state_ops *ops = &recent_ops;
static const char *const sources[] = { "", "a", "b", "web-1" };
#define SOURCE_COUNT (sizeof(sources) / sizeof(sources[0]))

static size_t
make_events(struct testrand *r, struct event *evs)
{
    size_t n = (size_t)testrand_below(r, SET_MAX + 1);

    for (size_t i = 0; i < n; i++) {
        const char *src = sources[testrand_below(r, SOURCE_COUNT)];

        memset(&evs[i], 0, sizeof(evs[i]));
        evs[i].type = EVENT_RECENT;
        evs[i].source = src;
        evs[i].source_len = strlen(src);
        evs[i].time_us = 1764000000000000LL + (int64_t)testrand_below(r, 40);
        evs[i].value = (double)testrand_below(r, 5);
    }
    return n;
}

static void
test_split_merge_same_bytes(void **unused)
{
    struct event evs[SET_MAX];
    struct testrand r;

    (void)unused;
    testrand_seed(&r, 21);
    for (int set = 0; set < testrand_scale(SETS); set++) {
        struct state_config cfg = {
            .recent_keep = (uint32_t)(1 + testrand_below(&r, 120)) };
        size_t n = make_events(&r, evs);
        void *one = teststate_fold(ops, &cfg, evs, n);
        void *split = teststate_fold_split(ops, &cfg, evs, n, &r);

        teststate_assert_same_bytes(ops, one, split);
        teststate_check_roundtrip(ops, split);
        ops->destroy(one);
        ops->destroy(split);
    }
}

static void
fold(void *st, const char *source, int64_t time_s, double value)
{
    struct event ev = { .type = EVENT_RECENT, .source = source,
                        .source_len = strlen(source),
                        .time_us = time_s * EVENT_US_PER_SECOND,
                        .value = value };

    ops->fold(st, &ev);
}

static void
test_order_ties_and_keep(void **unused)
{
    struct state_config cfg = { .recent_keep = 4 };
    void *st = ops->create(&cfg);
    struct json_object *o;

    (void)unused;
    fold(st, "b", 10, 1);
    fold(st, "a", 10, 2);
    fold(st, "a", 10, 1);
    fold(st, "x", 5, 7);       /* oldest: dropped once a fifth arrives */
    fold(st, "z", 20, 3);
    o = ops->render(st, NULL);
    assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                        "{\"entries\":["
                        "{\"value\":3.0,\"time\":20.0,\"source\":\"z\"},"
                        "{\"value\":1.0,\"time\":10.0,\"source\":\"a\"},"
                        "{\"value\":2.0,\"time\":10.0,\"source\":\"a\"},"
                        "{\"value\":1.0,\"time\":10.0,\"source\":\"b\"}]}");
    json_object_put(o);
    ops->destroy(st);
}

static void
test_default_keep_is_100(void **unused)
{
    void *st = ops->create(NULL);
    struct json_object *o, *entries, *first;

    (void)unused;
    for (int i = 0; i < 150; i++)
        fold(st, "", i, i);
    o = ops->render(st, NULL);
    assert_true(json_object_object_get_ex(o, "entries", &entries));
    assert_int_equal(json_object_array_length(entries), 100);
    first = json_object_array_get_idx(entries, 0);
    assert_string_equal(json_object_to_json_string_ext(first, JSON_C_TO_STRING_PLAIN),
                        "{\"value\":149.0,\"time\":149.0,\"source\":\"\"}");
    json_object_put(o);
    ops->destroy(st);
}

/* Long sources, each entry soon dropped: their bytes are reclaimed as the
 * state goes (the sources' buffer is compacted), and the entries kept
 * still read their own sources; so do a clone and a merge of the state
 * into itself. */
static void
test_dropped_sources_reclaimed(void **unused)
{
    struct state_config cfg = { .recent_keep = 3 };
    char source[EVENT_SOURCE_MAX + 1];
    void *st = ops->create(&cfg), *copy;
    struct json_object *o, *entries;

    (void)unused;
    for (int i = 0; i < 1000; i++) {
        memset(source, 'a' + i % 26, EVENT_SOURCE_MAX);
        source[EVENT_SOURCE_MAX] = '\0';
        source[i % EVENT_SOURCE_MAX + 1] = '\0';    /* 1 .. 200 bytes */
        fold(st, source, i, i);
    }
    copy = ops->clone(st);
    teststate_assert_same_bytes(ops, st, copy);
    /* with itself: 999, 999 (equal entries repeat), 998 */
    assert_int_equal(ops->merge(copy, copy), 0);
    teststate_check_roundtrip(ops, copy);
    o = ops->render(copy, NULL);
    assert_true(json_object_object_get_ex(o, "entries", &entries));
    assert_int_equal(json_object_array_length(entries), 3);
    /* entry 999: 'a' + 999 % 26 = 'l', 999 % 200 + 1 = 200 bytes */
    memset(source, 'l', EVENT_SOURCE_MAX);
    source[EVENT_SOURCE_MAX] = '\0';
    assert_string_equal(json_object_get_string(json_object_object_get(
                            json_object_array_get_idx(entries, 0), "source")),
                        source);
    assert_string_equal(json_object_get_string(json_object_object_get(
                            json_object_array_get_idx(entries, 1), "source")),
                        source);
    /* entry 998: 'k', 199 bytes */
    memset(source, 'k', EVENT_SOURCE_MAX);
    source[199] = '\0';
    assert_string_equal(json_object_get_string(json_object_object_get(
                            json_object_array_get_idx(entries, 2), "source")),
                        source);
    json_object_put(o);
    ops->destroy(copy);
    ops->destroy(st);
}

static void
test_merge_keeps_smaller_keep(void **unused)
{
    struct state_config small = { .recent_keep = 2 }, large = { .recent_keep = 3 };
    void *a = ops->create(&small), *b = ops->create(&large);
    struct json_object *o, *entries;

    (void)unused;
    fold(a, "", 1, 1);
    fold(a, "", 2, 2);
    fold(b, "", 3, 3);
    fold(b, "", 0, 0);
    assert_int_equal(ops->merge(b, a), 0);          /* K 3 meets K 2 */
    o = ops->render(b, NULL);
    assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                        "{\"entries\":["
                        "{\"value\":3.0,\"time\":3.0,\"source\":\"\"},"
                        "{\"value\":2.0,\"time\":2.0,\"source\":\"\"}]}");
    assert_true(json_object_object_get_ex(o, "entries", &entries));
    assert_int_equal(json_object_array_length(entries), 2);
    json_object_put(o);
    ops->destroy(a);
    ops->destroy(b);
}

static void
test_corruption(void **unused)
{
    struct event evs[SET_MAX];
    struct testrand r;

    (void)unused;
    testrand_seed(&r, 22);
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
    const uint8_t zero_keep[] = { EVENT_RECENT, 1, 0, 0 };
    const uint8_t over_keep[] = { EVENT_RECENT, 1, 1, 2, 2, ONE, 0,
                                  4, ONE, 0 };
    const uint8_t huge_keep[] = { EVENT_RECENT, 1, 0x91, 0x4e, 0 };
    const uint8_t older_first[] = { EVENT_RECENT, 1, 2, 2, 2, ONE, 0,
                                    4, ONE, 0 };

    (void)unused;
    teststate_expect_refused(ops, zero_keep, sizeof(zero_keep),
                   "recent: bad keep 0 or count 0");
    teststate_expect_refused(ops, over_keep, sizeof(over_keep),
                   "recent: bad keep 1 or count 2");
    teststate_expect_refused(ops, huge_keep, sizeof(huge_keep),
                   "recent: bad keep 10001 or count 0");
    teststate_expect_refused(ops, older_first, sizeof(older_first),
                   "recent: entries out of order");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_merge_same_bytes),
        cmocka_unit_test(test_order_ties_and_keep),
        cmocka_unit_test(test_default_keep_is_100),
        cmocka_unit_test(test_dropped_sources_reclaimed),
        cmocka_unit_test(test_merge_keeps_smaller_keep),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_decode_refusals),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
