/*
 * test_number: the checked number parsers accept whole, finite numbers and
 * refuse empty input, junk, spaces, overflow, NaN and infinity.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "number.h"

static int
parse_d(const char *s, double *v)
{
    return number_parse_double(s, strlen(s), v);
}

static void
test_double_accepts(void **unused)
{
    double v;

    (void)unused;
    assert_int_equal(parse_d("0", &v), 0);
    assert_true(v == 0);
    assert_int_equal(parse_d("-12.5", &v), 0);
    assert_true(v == -12.5);
    assert_int_equal(parse_d("1e3", &v), 0);
    assert_true(v == 1000);
    assert_int_equal(parse_d("1.7976931348623157e308", &v), 0);
    assert_int_equal(number_parse_double("42junk", 2, &v), 0); /* length bound */
    assert_true(v == 42);
}

static void
test_double_refuses(void **unused)
{
    const char *bad[] = { "", " 1", "1 ", "1x", "nan", "NaN", "inf", "-inf",
                          "infinity", "1e999", "-1e999", "0x10", "+5", "1e",
                          ".", "-", "1..2", "1e5.5" };
    double v = 7;

    (void)unused;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse_d(bad[i], &v), -1);
        assert_true(v == 7);                 /* untouched */
    }
}

static void
test_int64(void **unused)
{
    const char *bad[] = { "", "+1", " 1", "1.0", "9223372036854775808",
                          "-9223372036854775809", "1e3", "--1", "12a" };
    int64_t v;

    (void)unused;
    assert_int_equal(number_parse_int64("-9223372036854775808", 20, &v), 0);
    assert_true(v == INT64_MIN);
    assert_int_equal(number_parse_int64("9223372036854775807", 19, &v), 0);
    assert_true(v == INT64_MAX);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(number_parse_int64(bad[i], strlen(bad[i]), &v), -1);
}

static void
test_uint64(void **unused)
{
    const char *bad[] = { "", "-1", "+1", "18446744073709551616", "1 ", "0x1" };
    uint64_t v;

    (void)unused;
    assert_int_equal(number_parse_uint64("18446744073709551615", 20, &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(number_parse_uint64("0", 1, &v), 0);
    assert_true(v == 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(number_parse_uint64(bad[i], strlen(bad[i]), &v), -1);
}

static void
test_order_key(void **unused)
{
    const double ascending[] = { -1e100, -2.5, -1e-300, -0.0, 0.0, 1e-300,
                                 1, 2.5, 1e100 };

    (void)unused;
    for (size_t i = 1; i < sizeof(ascending) / sizeof(ascending[0]); i++)
        assert_true(number_order_key(ascending[i - 1])
                    < number_order_key(ascending[i]));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_double_accepts),
        cmocka_unit_test(test_double_refuses),
        cmocka_unit_test(test_int64),
        cmocka_unit_test(test_uint64),
        cmocka_unit_test(test_order_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
