/*
 * test_event: the validity rules of an event and the decoding of an
 * events.record element, each refusal with its exact code and message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "event.h"
#include "window.h"

#define NOW_US (1764000000LL * EVENT_US_PER_SECOND + 250000)

struct json_case {
    const char *json;
    enum event_error code;
    const char *message;
};

static const struct json_case cases[] = {
    { "[1]", EVENT_ERR_NOT_OBJECT, "event must be an object" },
    { "{\"name\":\"a\",\"type\":\"counter\",\"value\":1,\"extra\":1}",
      EVENT_ERR_UNKNOWN_FIELD, "unknown field \"extra\"" },
    { "{\"type\":\"counter\",\"value\":1}", EVENT_ERR_NAME,
      "name must be a string" },
    { "{\"name\":7,\"type\":\"counter\",\"value\":1}", EVENT_ERR_NAME,
      "name must be a string" },
    { "{\"name\":\"\",\"type\":\"counter\",\"value\":1}", EVENT_ERR_NAME,
      "name must be 1 to 200 characters of [A-Za-z0-9._:/-]" },
    { "{\"name\":\"a b\",\"type\":\"counter\",\"value\":1}", EVENT_ERR_NAME,
      "name must be 1 to 200 characters of [A-Za-z0-9._:/-]" },
    { "{\"name\":\"a\",\"type\":\"histogram\",\"value\":1}", EVENT_ERR_TYPE,
      "type must be one of counter, gauge, percentile, unique, recent" },
    { "{\"name\":\"a\",\"value\":1}", EVENT_ERR_TYPE,
      "type must be one of counter, gauge, percentile, unique, recent" },
    { "{\"name\":\"a\",\"type\":\"counter\"}", EVENT_ERR_VALUE,
      "value is required" },
    { "{\"name\":\"a\",\"type\":\"counter\",\"value\":\"1\"}", EVENT_ERR_VALUE,
      "value must be a number" },
    { "{\"name\":\"a\",\"type\":\"counter\",\"value\":1e101}", EVENT_ERR_VALUE,
      "value must be finite with magnitude at most 1e100" },
    { "{\"name\":\"a\",\"type\":\"counter\",\"value\":"
      "100000000000000000000}", EVENT_ERR_VALUE,
      "value must be finite with magnitude at most 1e100" },
    { "{\"name\":\"a\",\"type\":\"unique\",\"value\":1}", EVENT_ERR_VALUE,
      "value of a unique event must be a string" },
    { "{\"name\":\"a\",\"type\":\"unique\",\"value\":\"\"}", EVENT_ERR_VALUE,
      "value must be 1 to 1024 bytes of UTF-8" },
    { "{\"name\":\"a\",\"type\":\"gauge\",\"value\":1,\"time\":\"now\"}",
      EVENT_ERR_TIME, "time must be seconds since the epoch" },
    { "{\"name\":\"a\",\"type\":\"gauge\",\"value\":1,\"time\":-1}",
      EVENT_ERR_TIME, "time must be seconds since the epoch" },
    { "{\"name\":\"a\",\"type\":\"gauge\",\"value\":1,\"time\":1763900000}",
      EVENT_ERR_TOO_OLD, "time is older than the longest retained window (1d)" },
    { "{\"name\":\"a\",\"type\":\"gauge\",\"value\":1,\"time\":1764000301}",
      EVENT_ERR_TOO_NEW, "time is more than 5 minutes in the future" },
    { "{\"name\":\"a\",\"type\":\"gauge\",\"value\":1,\"source\":5}",
      EVENT_ERR_SOURCE, "source must be a string" },
    { "{\"name\":\"a\",\"type\":\"gauge\",\"value\":1,\"source\":\"a\\tb\"}",
      EVENT_ERR_SOURCE,
      "source must be at most 200 bytes of UTF-8 without control characters" },
};

static void
test_json_refusals(void **unused)
{
    (void)unused;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *obj = json_tokener_parse(cases[i].json);
        struct event ev;
        char msg[160];

        assert_non_null(obj);
        assert_int_equal(event_from_json(&ev, obj, NOW_US, msg, sizeof(msg)),
                         cases[i].code);
        assert_string_equal(msg, cases[i].message);
        json_object_put(obj);
    }
}

static void
test_json_accepts_with_defaults(void **unused)
{
    struct json_object *obj = json_tokener_parse(
        "{\"name\":\"api.latency\",\"type\":\"percentile\",\"value\":12.5}");
    struct event ev;
    char msg[160];

    (void)unused;
    assert_int_equal(event_from_json(&ev, obj, NOW_US, msg, sizeof(msg)),
                     EVENT_OK);
    assert_int_equal(ev.type, EVENT_PERCENTILE);
    assert_int_equal(ev.name_len, 11);
    assert_memory_equal(ev.name, "api.latency", 11);
    assert_true(ev.value == 12.5);
    assert_true(ev.time_us == NOW_US);        /* time of receipt */
    assert_int_equal(ev.source_len, 0);       /* source "" */
    assert_string_equal(ev.source, "");
    json_object_put(obj);

    obj = json_tokener_parse("{\"name\":\"u\",\"type\":\"unique\",\"value\":"
                             "\"user-7\",\"time\":1764000000.25,"
                             "\"source\":\"web-1\"}");
    assert_int_equal(event_from_json(&ev, obj, NOW_US, msg, sizeof(msg)),
                     EVENT_OK);
    assert_int_equal(ev.str_len, 6);
    assert_memory_equal(ev.str, "user-7", 6);
    assert_true(ev.time_us == 1764000000250000LL);
    assert_memory_equal(ev.source, "web-1", 5);
    json_object_put(obj);
}

static void
test_name_rules(void **unused)
{
    char name[EVENT_NAME_MAX + 2];

    (void)unused;
    memset(name, 'x', sizeof(name));
    assert_true(event_name_valid(name, EVENT_NAME_MAX));
    assert_false(event_name_valid(name, EVENT_NAME_MAX + 1));
    assert_true(event_name_valid("aZ09._:/-", 9));
    assert_false(event_name_valid("", 0));
    for (const char *p = " !\"#$%&'()*+,;<=>?@[\\]^`{|}~\x7f\xc3"; *p; p++)
        assert_false(event_name_valid(p, 1));
}

static void
test_utf8_rules(void **unused)
{
    (void)unused;
    assert_true(event_source_valid("h\xc3\xa9te", 5));          /* é */
    assert_true(event_source_valid("\xf0\x9f\x98\x80", 4));     /* emoji */
    assert_true(event_source_valid("", 0));
    assert_false(event_source_valid("\xc0\xaf", 2));            /* overlong */
    assert_false(event_source_valid("\xed\xa0\x80", 3));        /* surrogate */
    assert_false(event_source_valid("\xf4\x90\x80\x80", 4));    /* > 10FFFF */
    assert_false(event_source_valid("\xe2\x82", 2));            /* truncated */
    assert_false(event_source_valid("a\x01", 2));               /* control */
    assert_true(event_string_valid("a\x01", 2));    /* unique values may */
    assert_false(event_string_valid("\xff", 1));
}

static void
test_time_edges(void **unused)
{
    int64_t oldest = window_oldest_accepted_us(NOW_US);
    int64_t t;

    (void)unused;
    /* align(now, 900) - 95 * 900 */
    assert_true(oldest == (1764000000LL - 1764000000LL % 900 - 95 * 900)
                          * EVENT_US_PER_SECOND);
    assert_int_equal(event_check_time(oldest, NOW_US), EVENT_OK);
    assert_int_equal(event_check_time(oldest - 1, NOW_US), EVENT_ERR_TOO_OLD);
    assert_int_equal(event_check_time(NOW_US + EVENT_FUTURE_LIMIT_US, NOW_US),
                     EVENT_OK);
    assert_int_equal(event_check_time(NOW_US + EVENT_FUTURE_LIMIT_US + 1,
                                      NOW_US), EVENT_ERR_TOO_NEW);
    assert_int_equal(event_time_from_seconds(1.5e-6, &t), 0);
    assert_true(t == 2);                       /* nearest microsecond */
    assert_int_equal(event_time_from_seconds(253402300800.0, &t), -1);
}

static void
test_types(void **unused)
{
    enum event_type t;

    (void)unused;
    assert_string_equal(event_type_name(EVENT_RECENT), "recent");
    assert_null(event_type_name((enum event_type)0));
    assert_int_equal(event_type_parse("unique", 6, &t), 0);
    assert_int_equal(t, EVENT_UNIQUE);
    assert_int_equal(event_type_parse("uniqu", 5, &t), -1);
    assert_int_equal(event_type_parse("Counter", 7, &t), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_refusals),
        cmocka_unit_test(test_json_accepts_with_defaults),
        cmocka_unit_test(test_name_rules),
        cmocka_unit_test(test_utf8_rules),
        cmocka_unit_test(test_time_edges),
        cmocka_unit_test(test_types),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
