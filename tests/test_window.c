/*
 * test_window: bucket alignment, the window table, retention and the time
 * edges, at exact bucket boundaries.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "event.h"
#include "window.h"

#define S EVENT_US_PER_SECOND
#define T0 1764000000LL            /* a multiple of 900 */

static void
test_align(void **unused)
{
    (void)unused;
    assert_true(T0 % 900 == 0);
    assert_int_equal(window_align(T0 * S, 10), T0);
    assert_int_equal(window_align((T0 + 10) * S - 1, 10), T0);
    assert_int_equal(window_align((T0 + 10) * S, 10), T0 + 10);
    assert_int_equal(window_align((T0 + 899) * S, 900), T0);
    assert_int_equal(window_align((T0 + 61) * S + 5, 60), T0 + 60);
    assert_int_equal(window_align(-1, 10), -10);      /* floor */
    assert_int_equal(window_align(-10 * S, 10), -10);
}

static void
test_parse_and_names(void **unused)
{
    const char *names[] = { "1m", "10m", "1h", "1d", "all" };
    enum window w;

    (void)unused;
    for (int i = 0; i < WINDOW_COUNT; i++) {
        assert_int_equal(window_parse(names[i], strlen(names[i]), &w), 0);
        assert_int_equal(w, i);
        assert_string_equal(window_name(w), names[i]);
    }
    assert_int_equal(window_parse("5m", 2, &w), -1);
    assert_int_equal(window_parse("1M", 2, &w), -1);
    assert_int_equal(window_parse("al", 2, &w), -1);
    assert_int_equal(window_parse("", 0, &w), -1);
}

static void
test_layout_invariants(void **unused)
{
    (void)unused;
    for (int i = 0; i < WINDOW_COUNT; i++) {
        const struct window_layout *w = window_layout(i);
        const struct ring_layout *r = window_ring_layout(w->ring);

        assert_true(w->buckets <= r->retained);
        assert_true(w->buckets <= 100);
        if (w->seconds != 0)
            assert_int_equal(w->seconds, w->buckets * r->width_s);
    }
    for (int r = 0; r < RING_COUNT; r++) {
        const struct ring_layout *l = window_ring_layout(r);
        /* distinct buckets between the oldest retained and 5 minutes ahead */
        int64_t span = l->retained + (EVENT_FUTURE_LIMIT_US / S) / l->width_s + 1;

        assert_int_equal(l->width_s % WINDOW_GRANULE_S, 0);
        assert_true(span <= l->capacity);
    }
}

static void
test_retention_edges(void **unused)
{
    int64_t now = (T0 + 5) * S;

    (void)unused;
    assert_true(window_ring_retains(RING_10S, T0 - 590, now));
    assert_false(window_ring_retains(RING_10S, T0 - 600, now));
    assert_true(window_ring_retains(RING_10S, T0 + 300, now));   /* future */
    assert_true(window_ring_retains(RING_1MIN, T0 - 3540, now));
    assert_false(window_ring_retains(RING_1MIN, T0 - 3600, now));
    assert_true(window_ring_retains(RING_15MIN, T0 - 95 * 900, now));
    assert_false(window_ring_retains(RING_15MIN, T0 - 96 * 900, now));
}

static void
test_oldest_bucket_and_span(void **unused)
{
    int64_t now = (T0 + 5) * S + 250000;       /* 5.25 s into a bucket */

    (void)unused;
    assert_int_equal(window_oldest_bucket(WINDOW_1M, now), T0 - 50);
    assert_int_equal(window_oldest_bucket(WINDOW_10M, now), T0 - 590);
    assert_int_equal(window_oldest_bucket(WINDOW_1H, now), T0 - 3540);
    assert_int_equal(window_oldest_bucket(WINDOW_1D, now), T0 - 95 * 900);
    assert_true(window_span_seconds(WINDOW_1M, now) == 55.25);
    assert_true(window_span_seconds(WINDOW_1D, now) == 95 * 900 + 5.25);
    assert_true(window_oldest_accepted_us(now) == (T0 - 95 * 900) * S);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_align),
        cmocka_unit_test(test_parse_and_names),
        cmocka_unit_test(test_layout_invariants),
        cmocka_unit_test(test_retention_edges),
        cmocka_unit_test(test_oldest_bucket_and_span),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
