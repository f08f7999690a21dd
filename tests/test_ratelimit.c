/*
 * test_ratelimit: token buckets per key (ratelimit.c), on a fake clock.
 *
 *   a burst, then exactly RATE per second; keys are independent
 *   an idle key refills up to the burst, not beyond
 *   a clock that goes back changes nothing
 *   idle keys are forgotten once there are many
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "ratelimit.h"

#define SECOND 1000000

static int
take_all(struct ratelimit *r, const char *key, int64_t now_us)
{
    int n = 0;

    while (ratelimit_take(r, key, now_us))
        n++;
    return n;
}

static void
test_burst_then_rate(void **state)
{
    struct ratelimit *r = ratelimit_create(10, 5);

    (void)state;
    assert_int_equal(take_all(r, "ip:10.0.0.1", SECOND), 5);
    /* 10 per second: one every 100 ms */
    assert_int_equal(ratelimit_take(r, "ip:10.0.0.1", SECOND + 99999), 0);
    assert_int_equal(ratelimit_take(r, "ip:10.0.0.1", SECOND + 100000), 1);
    assert_int_equal(ratelimit_take(r, "ip:10.0.0.1", SECOND + 100000), 0);
    assert_int_equal(take_all(r, "ip:10.0.0.1", SECOND + 400000), 3);
    /* another key has its own bucket */
    assert_int_equal(take_all(r, "token:web", SECOND + 400000), 5);
    assert_int_equal(ratelimit_keys(r), 2);
    ratelimit_destroy(r);
}

static void
test_refill_caps_at_burst(void **state)
{
    struct ratelimit *r = ratelimit_create(100, 20);

    (void)state;
    assert_int_equal(take_all(r, "k", 0), 20);
    assert_int_equal(take_all(r, "k", 3600LL * SECOND), 20);
    ratelimit_destroy(r);
}

static void
test_clock_going_back(void **state)
{
    struct ratelimit *r = ratelimit_create(1, 2);

    (void)state;
    assert_int_equal(take_all(r, "k", 10 * SECOND), 2);
    assert_int_equal(ratelimit_take(r, "k", 5 * SECOND), 0);
    /* still one token per second after the last time seen */
    assert_int_equal(ratelimit_take(r, "k", 10 * SECOND + SECOND - 1), 0);
    assert_int_equal(ratelimit_take(r, "k", 11 * SECOND), 1);
    ratelimit_destroy(r);
}

static void
test_idle_keys_forgotten(void **state)
{
    struct ratelimit *r = ratelimit_create(1000, 1000);
    char key[32];

    (void)state;
    for (int i = 0; i < 1024; i++) {
        snprintf(key, sizeof(key), "ip:%d", i);
        assert_int_equal(ratelimit_take(r, key, 0), 1);
    }
    assert_int_equal(ratelimit_keys(r), 1024);
    /* one second later every bucket is full again: the next new key
     * sweeps them all away */
    assert_int_equal(ratelimit_take(r, "ip:new", SECOND), 1);
    assert_int_equal(ratelimit_keys(r), 1);
    ratelimit_destroy(r);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_refill_caps_at_burst),
        cmocka_unit_test(test_clock_going_back),
        cmocka_unit_test(test_idle_keys_forgotten),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
