/*
 * test_counter: the counter state. Exact counts and integer sums under any
 * split and merge order, non-integer sums within 1e-9 relative of a long
 * double reference, the encoding, its size, and decode's refusals.
 */
#include "teststate.h"

#include <math.h>

#define SETS 2000
#define SET_MAX 300

static const struct state_ops *ops = &counter_ops;

static size_t
make_values(struct testrand *r, struct event *evs, int integers)
{
    size_t n = (size_t)testrand_below(r, SET_MAX + 1);

    for (size_t i = 0; i < n; i++) {
        memset(&evs[i], 0, sizeof(evs[i]));
        evs[i].type = EVENT_COUNTER;
        evs[i].source = "";
        evs[i].value = integers
            ? (double)((int64_t)testrand_below(r, 2001) - 1000)
            : testrand_unit(r) * 1000.0 * pow(10, (double)testrand_below(r, 6));
    }
    return n;
}

static void
test_split_merge_integers_exact(void **unused)
{
    struct event evs[SET_MAX];
    struct testrand r;

    (void)unused;
    testrand_seed(&r, 1);
    for (int set = 0; set < testrand_scale(SETS); set++) {
        size_t n = make_values(&r, evs, 1);
        void *one = teststate_fold(ops, NULL, evs, n);
        void *split = teststate_fold_split(ops, NULL, evs, n, &r);

        teststate_assert_same_bytes(ops, one, split);
        teststate_check_roundtrip(ops, split);
        ops->destroy(one);
        ops->destroy(split);
    }
}

/* Reads count and sum back through render, the public face. */
static void
counter_fields(const void *st, int64_t *count, double *sum)
{
    struct json_object *o = ops->render(st, NULL), *v;

    assert_true(json_object_object_get_ex(o, "count", &v));
    *count = json_object_get_int64(v);
    assert_true(json_object_object_get_ex(o, "sum", &v));
    *sum = json_object_get_double(v);
    json_object_put(o);
}

static void
test_split_merge_fractions_within_tolerance(void **unused)
{
    struct event evs[SET_MAX];
    struct testrand r;

    (void)unused;
    testrand_seed(&r, 2);
    for (int set = 0; set < testrand_scale(SETS); set++) {
        size_t n = make_values(&r, evs, 0);
        long double reference = 0;
        void *split = teststate_fold_split(ops, NULL, evs, n, &r);
        int64_t count;
        double sum;

        for (size_t i = 0; i < n; i++)
            reference += evs[i].value;
        counter_fields(split, &count, &sum);
        assert_int_equal(count, (int64_t)n);
        if (n == 0)
            assert_true(sum == 0);
        else
            assert_true(fabsl((long double)sum - reference)
                        <= 1e-9L * fabsl(reference));
        teststate_check_roundtrip(ops, split);
        ops->destroy(split);
    }
}

static void
test_render_exact(void **unused)
{
    struct state_render_context ctx = { .span_seconds = 10 };
    struct event ev = { .type = EVENT_COUNTER, .source = "" };
    void *st = ops->create(NULL);
    struct json_object *o;

    (void)unused;
    for (int v = 1; v <= 4; v++) {
        ev.value = v;
        ops->fold(st, &ev);
    }
    o = ops->render(st, &ctx);
    assert_string_equal(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                        "{\"count\":4,\"sum\":10.0,\"rate\":1.0}");
    json_object_put(o);
    ops->destroy(st);
}

static void
test_bucket_payload_at_most_16_bytes(void **unused)
{
    struct event ev = { .type = EVENT_COUNTER, .source = "" };
    struct testrand r;
    struct buf_writer w;
    void *st = ops->create(NULL);

    (void)unused;
    testrand_seed(&r, 3);
    for (int i = 0; i < 60000; i++) {
        ev.value = (double)testrand_below(&r, 100000);
        ops->fold(st, &ev);
    }
    teststate_encode(ops, st, &w);
    assert_true(w.len - 2 <= 16);     /* after the type/version prefix */
    buf_writer_destroy(&w);
    ops->destroy(st);
}

static void
test_corruption(void **unused)
{
    struct event evs[SET_MAX];
    struct testrand r;

    (void)unused;
    testrand_seed(&r, 4);
    for (int set = 0; set < testrand_scale(50); set++) {
        size_t n = make_values(&r, evs, set % 2);
        void *st = teststate_fold(ops, NULL, evs, n);

        teststate_check_corruption(ops, st, &r, 200);
        ops->destroy(st);
    }
}

static void
test_decode_refusals(void **unused)
{
    const uint8_t wrong_type[] = { EVENT_GAUGE, 1, 1, 0, 2 };
    const uint8_t wrong_version[] = { EVENT_COUNTER, 2, 1, 0, 2 };
    const uint8_t sum_without_events[] = { EVENT_COUNTER, 1, 0, 0, 2 };
    const uint8_t nan_sum[] = { EVENT_COUNTER, 1, 1, 1,
                                0, 0, 0, 0, 0, 0, 0xf8, 0x7f };
    const uint8_t bad_sum_tag[] = { EVENT_COUNTER, 1, 1, 7, 2 };
    /* 5.0 as binary64: canonical form is the integer tag */
    const uint8_t integral_double[] = { EVENT_COUNTER, 1, 1, 1,
                                        0, 0, 0, 0, 0, 0, 0x14, 0x40 };
    /* 1e300 from one event of at most 1e100 */
    const uint8_t impossible_sum[] = { EVENT_COUNTER, 1, 1, 1,
                                       0x9c, 0x75, 0x00, 0x88, 0x3c, 0xe4,
                                       0x37, 0x7e };

    (void)unused;
    teststate_expect_refused(ops, wrong_type, sizeof(wrong_type),
                   "counter: bad type 2 or version 1");
    teststate_expect_refused(ops, wrong_version, sizeof(wrong_version),
                   "counter: bad type 1 or version 2");
    teststate_expect_refused(ops, sum_without_events, sizeof(sum_without_events),
                   "counter: non-zero sum without events");
    teststate_expect_refused(ops, nan_sum, sizeof(nan_sum), "counter: truncated or malformed");
    teststate_expect_refused(ops, integral_double, sizeof(integral_double),
                             "counter: truncated or malformed");
    teststate_expect_refused(ops, impossible_sum, sizeof(impossible_sum),
                             "counter: sum larger than count events allow");
    teststate_expect_refused(ops, bad_sum_tag, sizeof(bad_sum_tag),
                   "counter: truncated or malformed");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_merge_integers_exact),
        cmocka_unit_test(test_split_merge_fractions_within_tolerance),
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_bucket_payload_at_most_16_bytes),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_decode_refusals),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
