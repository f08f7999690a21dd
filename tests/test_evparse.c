/*
 * test_evparse: the streaming events.record decoder. It must decode the
 * fast subset exactly as the json-c path does, and fall back for anything
 * else, for the reason it says.
 *
 *   typical bodies ------evparse----> exact events, batch and id
 *   out of the subset ---evparse----> -1 and the exact reason
 *   generated corpus ----evparse----> events  ==  json-c tree +
 *                    \--"[" body "]" (jsonrpc's tree path)--> event_from_json
 *   through jsonrpc_parse: the same response text both ways
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "event.h"
#include "evparse.h"
#include "jsonrpc.h"
#include "testrand.h"
#include "xalloc.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define NOW_S 1764000000LL
#define NOW_US (NOW_S * EVENT_US_PER_SECOND + 250000)
#define MESSAGE_MAX 160
#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define CORPUS_BODIES 4000
#define CORPUS_EVENTS_MAX 40
#define TEXT_INITIAL 256
/* Most generated bodies must take the fast path, or the differential
 * check proves little. */
#define CORPUS_FAST_PERCENT_MIN 60
#define PERCENT 100
/* Significant digits: of a double, and enough for a time to stay within a
 * second. */
#define DOUBLE_DIGITS 17
#define TIME_DIGITS 11

#define REQUEST_HEAD "{\"jsonrpc\":\"2.0\",\"method\":\"events.record\","
#define ONE_EVENT "{\"name\":\"a\",\"type\":\"counter\",\"value\":1}"

/* ---- helpers ------------------------------------------------------------ */

/* A growing NUL-terminated text. */
struct text {
    char *p;
    size_t len, cap;
};

static void
text_add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        size_t room = t->cap - t->len;

        va_start(ap, fmt);
        n = vsnprintf(t->p + t->len, room, fmt, ap);
        va_end(ap);
        assert_true(n >= 0);
        if ((size_t)n < room)
            break;
        t->cap = t->cap * 2 + (size_t)n;
        t->p = xrealloc(t->p, t->cap);
    }
    t->len += (size_t)n;
}

static void
text_create(struct text *t)
{
    t->cap = TEXT_INITIAL;
    t->len = 0;
    t->p = xmalloc(t->cap);
    t->p[0] = '\0';
}

static void
assert_same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    assert_int_equal(alen, blen);
    if (alen > 0)
        assert_memory_equal(a, b, alen);
}

static void
assert_same_event(const struct event *a, const struct event *b)
{
    assert_int_equal(a->type, b->type);
    assert_same_bytes(a->name, a->name_len, b->name, b->name_len);
    assert_memory_equal(&a->value, &b->value, sizeof(double));
    assert_int_equal(a->str == NULL, b->str == NULL);
    assert_same_bytes(a->str, a->str_len, b->str, b->str_len);
    assert_true(a->time_us == b->time_us);
    assert_non_null(a->source);
    assert_non_null(b->source);
    assert_same_bytes(a->source, a->source_len, b->source, b->source_len);
}

/* BODY through jsonrpc's json-c path: wrapped in a batch array, which the
 * fast path never takes. Returns the batch; *CALL is its one call. */
static struct jsonrpc_batch *
tree_parse(const char *body, size_t len, struct jsonrpc_call **call,
           char **wrapped)
{
    struct jsonrpc_batch *b;

    *wrapped = xmalloc(len + 2);
    (*wrapped)[0] = '[';
    memcpy(*wrapped + 1, body, len);
    (*wrapped)[len + 1] = ']';
    b = jsonrpc_parse(*wrapped, len + 2, NULL);
    assert_int_equal(jsonrpc_batch_count(b), 1);
    *call = jsonrpc_batch_call(b, 0);
    assert_null(jsonrpc_call_events(*call));
    return b;
}

/* How many events of BODY event_from_json rejects at NOW_US; asserts that
 * the tree path sees a valid events.record call. */
static size_t
tree_rejections(const char *body, size_t len)
{
    struct jsonrpc_call *call;
    char *wrapped, msg[MESSAGE_MAX];
    struct jsonrpc_batch *b = tree_parse(body, len, &call, &wrapped);
    json_object *events;
    size_t rejected = 0;
    struct event ev;

    assert_string_equal(jsonrpc_call_method(call), EVPARSE_METHOD);
    assert_true(json_object_object_get_ex(jsonrpc_call_params(call),
                                          "events", &events));
    for (size_t i = 0; i < json_object_array_length(events); i++)
        if (event_from_json(&ev, json_object_array_get_idx(events, i),
                            NOW_US, msg, sizeof(msg)) != EVENT_OK)
            rejected++;
    jsonrpc_batch_destroy(b);
    free(wrapped);
    return rejected;
}

/* Decodes BODY with evparse (which must take it) and with the json-c path,
 * and asserts the same call: id, batch and every event, field for field. */
static void
assert_same_both_ways(const char *body, size_t len)
{
    struct evparse_record rec;
    struct jsonrpc_call *call;
    char err[EVPARSE_REASON_MAX], msg[MESSAGE_MAX], *wrapped;
    struct jsonrpc_batch *b;
    json_object *params, *events, *batch;

    if (evparse_record_parse(&rec, body, len, err, sizeof(err)) != 0)
        fail_msg("evparse fell back (%s) on %.*s", err, (int)len, body);
    assert_int_equal(evparse_record_stamp(&rec, NOW_US), 0);

    b = tree_parse(body, len, &call, &wrapped);
    assert_string_equal(jsonrpc_call_method(call), EVPARSE_METHOD);
    assert_false(jsonrpc_call_is_notification(call));
    assert_int_equal(json_object_get_type(jsonrpc_call_id(call)),
                     json_object_get_type(rec.id));
    assert_string_equal(json_object_to_json_string_ext(jsonrpc_call_id(call),
                                                       JSON_FLAGS),
                        json_object_to_json_string_ext(rec.id, JSON_FLAGS));
    params = jsonrpc_call_params(call);
    assert_true(json_object_object_get_ex(params, "events", &events));
    assert_int_equal(json_object_array_length(events), rec.count);
    if (json_object_object_get_ex(params, "batch", &batch))
        assert_same_bytes(rec.batch, rec.batch_len,
                          json_object_get_string(batch),
                          (size_t)json_object_get_string_len(batch));
    else
        assert_null(rec.batch);
    for (size_t i = 0; i < rec.count; i++) {
        struct event ev;

        assert_int_equal(event_from_json(&ev,
                                         json_object_array_get_idx(events, i),
                                         NOW_US, msg, sizeof(msg)),
                         EVENT_OK);
        assert_same_event(&rec.events[i], &ev);
    }
    jsonrpc_batch_destroy(b);
    free(wrapped);
    evparse_record_destroy(&rec);
}

static void
expect_fallback(const char *body, const char *reason)
{
    struct evparse_record rec;
    char err[EVPARSE_REASON_MAX];

    if (evparse_record_parse(&rec, body, strlen(body), err, sizeof(err)) == 0)
        fail_msg("evparse took %s", body);
    assert_string_equal(err, reason);
    assert_null(rec.events);
    assert_int_equal(rec.count, 0);
    assert_null(rec.id);
}

/* ---- typical bodies ----------------------------------------------------- */

static void
test_decodes_every_type(void **unused)
{
    static const char body[] =
        REQUEST_HEAD "\"params\":{\"events\":["
        "{\"name\":\"a.b\",\"type\":\"counter\",\"value\":2},"
        "{\"name\":\"g\",\"type\":\"gauge\",\"value\":-1.5,"
        "\"time\":1764000000.25,\"source\":\"web-1\"},"
        "{\"name\":\"p\",\"type\":\"percentile\",\"value\":12.5e1},"
        "{\"name\":\"u\",\"type\":\"unique\",\"value\":\"user-7\","
        "\"source\":\"h\xc3\xa9te\"},"
        "{\"name\":\"r:x/y-z_1\",\"type\":\"recent\",\"value\":3,"
        "\"time\":1763999990}"
        "]},\"id\":7}";
    struct evparse_record rec;
    char err[EVPARSE_REASON_MAX];

    (void)unused;
    assert_int_equal(evparse_record_parse(&rec, body, strlen(body), err,
                                          sizeof(err)), 0);
    assert_int_equal(rec.count, 5);
    assert_null(rec.batch);
    assert_string_equal(json_object_to_json_string(rec.id), "7");
    assert_int_equal(rec.events[0].type, EVENT_COUNTER);
    assert_same_bytes(rec.events[0].name, rec.events[0].name_len, "a.b", 3);
    assert_true(rec.events[0].value == 2.0);
    assert_true(rec.events[0].time_us == EVPARSE_TIME_ABSENT);
    assert_string_equal(rec.events[0].source, "");
    assert_null(rec.events[0].str);
    assert_int_equal(rec.events[1].type, EVENT_GAUGE);
    assert_true(rec.events[1].value == -1.5);
    assert_true(rec.events[1].time_us == 1764000000250000LL);
    assert_same_bytes(rec.events[1].source, rec.events[1].source_len,
                      "web-1", 5);
    assert_int_equal(rec.events[2].type, EVENT_PERCENTILE);
    assert_true(rec.events[2].value == 125.0);
    assert_int_equal(rec.events[3].type, EVENT_UNIQUE);
    assert_same_bytes(rec.events[3].str, rec.events[3].str_len, "user-7", 6);
    assert_true(rec.events[3].value == 0.0);
    assert_same_bytes(rec.events[3].source, rec.events[3].source_len,
                      "h\xc3\xa9te", 5);
    assert_int_equal(rec.events[4].type, EVENT_RECENT);
    assert_same_bytes(rec.events[4].name, rec.events[4].name_len,
                      "r:x/y-z_1", 9);
    assert_true(rec.events[4].time_us == 1763999990000000LL);
    /* strings borrow from the body */
    assert_ptr_equal(rec.events[0].name, strstr(body, "a.b"));

    assert_int_equal(evparse_record_stamp(&rec, NOW_US), 0);
    assert_true(rec.events[0].time_us == NOW_US);
    assert_true(rec.events[1].time_us == 1764000000250000LL);
    evparse_record_destroy(&rec);
    assert_null(rec.events);
    assert_same_both_ways(body, strlen(body));
}

static void
test_odd_order_and_whitespace(void **unused)
{
    static const char body[] =
        " \r\n\t{ \"id\" : \"req-1\" ,\n \"params\" :\t{ \"batch\" : "
        "\"b-9\" , \"events\" : [ { \"value\" : 0.5 , \"source\" : \"s\" ,"
        " \"time\" : 1764000000 , \"type\" : \"gauge\" , \"name\" : \"x\" "
        "} ,{\"type\":\"unique\",\"value\":\"v\",\"name\":\"y\"} ] } ,"
        " \"method\" : \"events.record\" , \"jsonrpc\" : \"2.0\" } \n";
    struct evparse_record rec;
    char err[EVPARSE_REASON_MAX];

    (void)unused;
    assert_int_equal(evparse_record_parse(&rec, body, strlen(body), err,
                                          sizeof(err)), 0);
    assert_int_equal(rec.count, 2);
    assert_same_bytes(rec.batch, rec.batch_len, "b-9", 3);
    assert_string_equal(json_object_get_string(rec.id), "req-1");
    assert_true(rec.events[0].value == 0.5);
    assert_true(rec.events[0].time_us == 1764000000000000LL);
    assert_same_bytes(rec.events[1].str, rec.events[1].str_len, "v", 1);
    evparse_record_destroy(&rec);
    assert_same_both_ways(body, strlen(body));
}

static void
test_ids(void **unused)
{
    static const struct {
        const char *id;
        const char *echo;
    } ids[] = {
        { "7", "7" },
        { "-0", "0" },
        { "-12", "-12" },
        { "123456789012345678", "123456789012345678" },
        { "null", "null" },
        { "\"\"", "\"\"" },
        { "\"a/b c\"", "\"a/b c\"" },
    };

    (void)unused;
    for (size_t i = 0; i < ARRAY_LEN(ids); i++) {
        struct evparse_record rec;
        char body[256];

        snprintf(body, sizeof(body), REQUEST_HEAD "\"params\":{\"events\":["
                 ONE_EVENT "]},\"id\":%s}", ids[i].id);
        assert_int_equal(evparse_record_parse(&rec, body, strlen(body), NULL,
                                              0), 0);
        assert_string_equal(json_object_to_json_string_ext(rec.id,
                                                           JSON_FLAGS),
                            ids[i].echo);
        evparse_record_destroy(&rec);
        assert_same_both_ways(body, strlen(body));
    }
}

static void
test_numbers(void **unused)
{
    static const struct {
        const char *text;
        double value;
    } numbers[] = {
        { "0", 0.0 },
        { "-0", 0.0 },          /* json-c's int 0: positive zero */
        { "-0.0", -0.0 },
        { "0.1", 0.1 },
        { "1e-300", 1e-300 },
        { "123456789012345678", 123456789012345678.0 },
        { "-2.5E-3", -2.5e-3 },
        { "1.5e+2", 150.0 },
        { "1e100", 1e100 },
        { "9007199254740993.0", 9007199254740992.0 },   /* ties to even */
        { "0.30000000000000004", 0.30000000000000004 },
        { "4.9e-324", 4.9e-324 },                        /* strtod */
        { "1e-400", 0.0 },                               /* strtod: 0 */
        { "12345678901234567890e-5", 123456789012345.6789 },
    };

    (void)unused;
    for (size_t i = 0; i < ARRAY_LEN(numbers); i++) {
        struct evparse_record rec;
        char body[256];

        snprintf(body, sizeof(body), REQUEST_HEAD "\"params\":{\"events\":["
                 "{\"name\":\"a\",\"type\":\"gauge\",\"value\":%s}]},"
                 "\"id\":1}", numbers[i].text);
        assert_int_equal(evparse_record_parse(&rec, body, strlen(body), NULL,
                                              0), 0);
        assert_memory_equal(&rec.events[0].value, &numbers[i].value,
                            sizeof(double));
        evparse_record_destroy(&rec);
        assert_same_both_ways(body, strlen(body));
    }
}

static void
test_stamp(void **unused)
{
    static const char old[] = REQUEST_HEAD "\"params\":{\"events\":["
        "{\"name\":\"a\",\"type\":\"counter\",\"value\":1},"
        "{\"name\":\"a\",\"type\":\"counter\",\"value\":1,"
        "\"time\":1763900000}]},\"id\":1}";
    static const char future[] = REQUEST_HEAD "\"params\":{\"events\":["
        "{\"name\":\"a\",\"type\":\"counter\",\"value\":1,"
        "\"time\":1764000301}]},\"id\":1}";
    struct evparse_record rec;

    (void)unused;
    assert_int_equal(evparse_record_parse(&rec, old, strlen(old), NULL, 0),
                     0);
    assert_int_equal(evparse_record_stamp(&rec, NOW_US), -1);
    evparse_record_destroy(&rec);
    assert_int_equal(tree_rejections(old, strlen(old)), 1);
    assert_int_equal(evparse_record_parse(&rec, future, strlen(future), NULL,
                                          0), 0);
    assert_int_equal(evparse_record_stamp(&rec, NOW_US), -1);
    evparse_record_destroy(&rec);
}

/* ---- fallbacks ---------------------------------------------------------- */

static void
test_fallbacks(void **unused)
{
    static const struct {
        const char *body;
        const char *reason;
    } cases[] = {
        /* not one events.record request */
        { "[" REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},"
          "\"id\":1}]", "expected an object" },
        { "{\"jsonrpc\":\"2.0\",\"method\":\"metrics.list\",\"params\":{"
          "\"events\":[" ONE_EVENT "]},\"id\":1}", "not events.record" },
        { "{\"jsonrpc\":\"1.0\",\"method\":\"events.record\",\"params\":{"
          "\"events\":[" ONE_EVENT "]},\"id\":1}", "jsonrpc is not \"2.0\"" },
        { "{\"jsonrpc\":2.0,\"method\":\"events.record\",\"params\":{"
          "\"events\":[" ONE_EVENT "]},\"id\":1}", "jsonrpc is not \"2.0\"" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]}}",
          "notification" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},\"id\":1.5}",
          "fractional id" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},"
          "\"id\":\"\xc3\xa9\"}", "id not ASCII" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},"
          "\"id\":1234567890123456789}", "integer of more than 18 digits" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},\"id\":true}",
          "unexpected value" },
        { REQUEST_HEAD "\"id\":1}", "no params" },
        { REQUEST_HEAD "\"params\":[],\"id\":1}", "expected an object" },
        { REQUEST_HEAD "\"params\":{},\"id\":1}", "no events" },
        { REQUEST_HEAD "\"params\":{\"events\":[]},\"id\":1}", "no events" },
        { REQUEST_HEAD "\"params\":{\"events\":{}},\"id\":1}",
          "expected an array" },
        /* unknown and repeated members, at every level */
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},\"id\":1,"
          "\"x\":1}", "unknown member" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "],\"x\":1},"
          "\"id\":1}", "unknown member" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1,\"extra\":1}]},\"id\":1}",
          "unknown member" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},\"id\":1,"
          "\"id\":2}", "repeated member" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "],\"events\":["
          ONE_EVENT "]},\"id\":1}", "repeated member" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"name\":"
          "\"b\",\"type\":\"counter\",\"value\":1}]},\"id\":1}",
          "repeated member" },
        /* escapes and strings */
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\\u0062\","
          "\"type\":\"counter\",\"value\":1}]},\"id\":1}",
          "escape in a string" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1,\"source\":\"a\tb\"}]},\"id\":1}",
          "control character in a string" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1,\"source\":\"\xff\"}]},\"id\":1}",
          "invalid event source" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1,\"source\":\"\x7f\"}]},\"id\":1}",
          "invalid event source" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a",
          "unterminated string" },
        /* values of the wrong type, or nested */
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":7,\"type\":"
          "\"counter\",\"value\":1}]},\"id\":1}", "invalid event name" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a b\",\"type\":"
          "\"counter\",\"value\":1}]},\"id\":1}", "invalid event name" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"histogram\",\"value\":1}]},\"id\":1}", "invalid event type" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":\"1\"}]},\"id\":1}", "invalid event value" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"unique\",\"value\":1}]},\"id\":1}", "invalid event value" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\"}]},\"id\":1}", "invalid event value" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":[1]}]},\"id\":1}",
          "nested value where a scalar is expected" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1,\"time\":\"now\"}]},\"id\":1}",
          "invalid event time" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1,\"time\":-1}]},\"id\":1}",
          "invalid event time" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1,\"source\":null}]},\"id\":1}",
          "invalid event source" },
        { REQUEST_HEAD "\"params\":{\"events\":[1]},\"id\":1}",
          "expected an object" },
        /* numbers json-c might read differently, or that are invalid */
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1234567890123456789}]},\"id\":1}",
          "integer of more than 18 digits" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1.7976931348623157e308}]},\"id\":1}",
          "invalid event value" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":0.0000000000000000000000000000000000000000"
          "0000000000000000000000001}]},\"id\":1}", "number too long" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":01}]},\"id\":1}",
          "expected ',' or the end of an object or array" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":1.}]},\"id\":1}", "malformed number" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":-}]},\"id\":1}", "malformed number" },
        { REQUEST_HEAD "\"params\":{\"events\":[{\"name\":\"a\",\"type\":"
          "\"counter\",\"value\":NaN}]},\"id\":1}", "unexpected value" },
        /* batch ids record.c refuses */
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "],\"batch\":"
          "\"\"},\"id\":1}", "invalid batch" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "],\"batch\":"
          "7},\"id\":1}", "invalid batch" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "],\"batch\":"
          "\"\xc0\xaf\"},\"id\":1}", "invalid batch" },
        /* syntax */
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT ",]},\"id\":1}",
          "expected an object" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},\"id\":1} x",
          "data after the request" },
        { REQUEST_HEAD "\"params\":{\"events\":[" ONE_EVENT "]},\"id\":1",
          "expected ',' or the end of an object or array" },
        { REQUEST_HEAD "\"params\" {\"events\":[" ONE_EVENT "]},\"id\":1}",
          "expected ':'" },
        { "{'jsonrpc':\"2.0\"}", "expected a member name" },
        { "", "expected an object" },
    };

    (void)unused;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++)
        expect_fallback(cases[i].body, cases[i].reason);
}

static void
test_batch_length(void **unused)
{
    char batch[EVENT_NAME_MAX + 2], body[512];
    struct evparse_record rec;

    (void)unused;
    memset(batch, 'b', sizeof(batch));
    batch[EVENT_NAME_MAX] = '\0';
    snprintf(body, sizeof(body), REQUEST_HEAD "\"params\":{\"events\":["
             ONE_EVENT "],\"batch\":\"%s\"},\"id\":1}", batch);
    assert_int_equal(evparse_record_parse(&rec, body, strlen(body), NULL, 0),
                     0);
    assert_int_equal(rec.batch_len, EVENT_NAME_MAX);
    evparse_record_destroy(&rec);
    batch[EVENT_NAME_MAX] = 'b';
    batch[EVENT_NAME_MAX + 1] = '\0';
    snprintf(body, sizeof(body), REQUEST_HEAD "\"params\":{\"events\":["
             ONE_EVENT "],\"batch\":\"%s\"},\"id\":1}", batch);
    expect_fallback(body, "invalid batch");
}

/* ---- the generated corpus ----------------------------------------------- */

static const char *const value_texts[] = {
    "0", "-0", "-0.0", "0.1", "1e-300", "-1e-300", "123456789012345678",
    "-123456789012345678", "1e100", "1E100", "-1e100", "9007199254740993",
    "9007199254740993.0", "0.30000000000000004", "4.9e-324",
    "2.2250738585072014e-308", "1e-400", "123.456e-2", "5e22", "5e23",
    "0.000001", "1.5e+2", "-2.5E-3", "1e22", "12345678901234567890e-5",
    "0e0", "0.0e-0", "1e+0", "100000000000000000", "3.14159",
};

static const char *const string_texts[] = {
    "v", "user-7", "h\xc3\xa9te", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
    "a b/c", "'quoted'",
};

/* Rarely, a value or source an event may not have (a number beyond
 * EVENT_VALUE_MAX, a DEL in a source), so that some bodies fall back. */
#define CORPUS_INVALID_ONE_IN 400
static const char *const invalid_values[] = {
    "1.7976931348623157e308", "1.0000000000000001e100", "-1e101",
};
#define INVALID_SOURCE "\x7f"

static const char *const type_names[] = {
    "counter", "gauge", "percentile", "unique", "recent",
};

static const char *const spaces[] = { "", "", "", " ", "\n", " \t", "\r\n" };

static const char *
space(struct testrand *r)
{
    return spaces[testrand_below(r, ARRAY_LEN(spaces))];
}

/* A random number near BASE, in one of the shapes clients write with at
 * least DIGITS significant digits, or with EDGES one of value_texts. */
static void
add_random_number(struct text *t, struct testrand *r, double base,
                  double spread, int digits, int edges)
{
    double v = base + (testrand_unit(r) - 0.5) * spread;
    int more = (int)testrand_below(r, DOUBLE_DIGITS + 1 - (uint64_t)digits);

    switch (testrand_below(r, edges ? 6 : 5)) {
    case 0:
        text_add(t, "%.17g", v);
        break;
    case 1:
        text_add(t, "%.*f", (int)testrand_below(r, 10), v);
        break;
    case 2:
        text_add(t, "%.*e", digits + more - 1, v);
        break;
    case 3:
        text_add(t, "%lld", (long long)v);
        break;
    case 4:
        text_add(t, "%.*g", digits + more, v);
        break;
    default:
        text_add(t, "%s",
                 value_texts[testrand_below(r, ARRAY_LEN(value_texts))]);
        break;
    }
}

static void
add_random_event(struct text *t, struct testrand *r)
{
    int type = (int)testrand_below(r, ARRAY_LEN(type_names));
    int members[5] = { 0, 1, 2 };   /* name type value, time? source? */
    int n = 3;

    if (testrand_below(r, 2))
        members[n++] = 3;
    if (testrand_below(r, 2))
        members[n++] = 4;
    for (int i = n - 1; i > 0; i--) {       /* shuffle */
        int j = (int)testrand_below(r, (uint64_t)i + 1), tmp = members[i];

        members[i] = members[j];
        members[j] = tmp;
    }
    text_add(t, "{%s", space(r));
    for (int i = 0; i < n; i++) {
        if (i > 0)
            text_add(t, ",%s", space(r));
        switch (members[i]) {
        case 0:
            text_add(t, "\"name\"%s:%s\"bench.c.%d\"", space(r), space(r),
                     (int)testrand_below(r, 50));
            break;
        case 1:
            text_add(t, "\"type\":%s\"%s\"", space(r), type_names[type]);
            break;
        case 2:
            text_add(t, "\"value\":");
            if (type == 3)
                text_add(t, "\"%s\"", string_texts[testrand_below(
                                          r, ARRAY_LEN(string_texts))]);
            else if (testrand_below(r, CORPUS_INVALID_ONE_IN) == 0)
                text_add(t, "%s", invalid_values[testrand_below(
                                      r, ARRAY_LEN(invalid_values))]);
            else
                add_random_number(t, r, 0,
                                  pow(10, (double)testrand_below(r, 12)), 1,
                                  1);
            break;
        case 3:
            text_add(t, "\"time\":");
            add_random_number(t, r, (double)NOW_S - 30, 60, TIME_DIGITS, 0);
            break;
        default:
            text_add(t, "\"source\":\"%s\"",
                     testrand_below(r, CORPUS_INVALID_ONE_IN) == 0
                         ? INVALID_SOURCE
                         : string_texts[testrand_below(
                               r, ARRAY_LEN(string_texts))]);
            break;
        }
        text_add(t, "%s", space(r));
    }
    text_add(t, "}");
}

static void
add_random_body(struct text *t, struct testrand *r)
{
    size_t events = 1 + testrand_below(r, CORPUS_EVENTS_MAX);

    text_add(t, "%s{\"id\":", space(r));
    switch (testrand_below(r, 4)) {
    case 0:
        text_add(t, "%d", (int)testrand_below(r, 100000) - 50);
        break;
    case 1:
        text_add(t, "\"r-%d\"", (int)testrand_below(r, 100));
        break;
    case 2:
        text_add(t, "null");
        break;
    default:
        text_add(t, "-0");
        break;
    }
    text_add(t, ",%s\"params\":%s{", space(r), space(r));
    if (testrand_below(r, 3) == 0)
        text_add(t, "\"batch\":\"%s\",", string_texts[testrand_below(
                                             r, ARRAY_LEN(string_texts))]);
    text_add(t, "\"events\":%s[", space(r));
    for (size_t i = 0; i < events; i++) {
        if (i > 0)
            text_add(t, ",%s", space(r));
        add_random_event(t, r);
    }
    text_add(t, "]}%s,\"method\":\"events.record\",\"jsonrpc\":\"2.0\"}%s",
             space(r), space(r));
}

/* Every generated body is in the subset's grammar, so evparse falls back
 * only for an event json-c rejects; else both decode it the same. */
static void
test_corpus_differential(void **unused)
{
    struct testrand r;
    int bodies = testrand_scale(CORPUS_BODIES), fast = 0;

    (void)unused;
    testrand_seed(&r, 8);
    for (int i = 0; i < bodies; i++) {
        struct evparse_record rec;
        struct text t;

        text_create(&t);
        add_random_body(&t, &r);
        if (evparse_record_parse(&rec, t.p, t.len, NULL, 0) == 0
            && evparse_record_stamp(&rec, NOW_US) == 0) {
            evparse_record_destroy(&rec);
            assert_same_both_ways(t.p, t.len);
            fast++;
        } else {
            evparse_record_destroy(&rec);
            if (tree_rejections(t.p, t.len) == 0)
                fail_msg("evparse fell back on a good body: %s", t.p);
        }
        free(t.p);
    }
    if (fast * PERCENT < bodies * CORPUS_FAST_PERCENT_MIN)
        fail_msg("only %d of %d bodies took the fast path", fast, bodies);
}

/* ---- through jsonrpc_parse ---------------------------------------------- */

/* events.record for the tests: answers the number of events, from the
 * decoded events when there are some, else from the params tree. */
static int
method_count(struct jsonrpc_call *call, void *ctx)
{
    struct evparse_record *fast = jsonrpc_call_events(call);
    json_object *events;

    (void)ctx;
    if (fast != NULL) {
        jsonrpc_call_result(call, json_object_new_int64((int64_t)fast->count));
        return JSONRPC_DONE;
    }
    if (jsonrpc_params_object(call) != 0)
        return JSONRPC_DONE;
    if (!json_object_object_get_ex(jsonrpc_call_params(call), "events",
                                   &events)) {
        jsonrpc_call_invalid_params(call, "no events");
        return JSONRPC_DONE;
    }
    jsonrpc_call_result(call, json_object_new_int64((int64_t)
                            json_object_array_length(events)));
    return JSONRPC_DONE;
}

static const struct jsonrpc_method test_methods[] = {
    { .name = EVPARSE_METHOD, .handler = method_count },
};

static char *
respond(const char *body, size_t len, const struct jsonrpc_limits *limits,
        int *was_fast)
{
    struct jsonrpc_batch *b = jsonrpc_parse(body, len, limits);
    char *out;

    *was_fast = jsonrpc_call_events(jsonrpc_batch_call(b, 0)) != NULL;
    jsonrpc_dispatch(b, test_methods, ARRAY_LEN(test_methods), NULL);
    out = jsonrpc_batch_response(b, NULL);
    jsonrpc_batch_destroy(b);
    return out;
}

static void
test_jsonrpc_same_response(void **unused)
{
    static const char *const ids[] = { "7", "\"r-1\"", "null", "-0" };

    (void)unused;
    for (size_t i = 0; i < ARRAY_LEN(ids); i++) {
        char body[256], wrapped[260], *fast_text, *tree_text;
        int was_fast;

        snprintf(body, sizeof(body), REQUEST_HEAD "\"params\":{\"events\":["
                 ONE_EVENT "," ONE_EVENT "]},\"id\":%s}", ids[i]);
        snprintf(wrapped, sizeof(wrapped), "[%s]", body);
        fast_text = respond(body, strlen(body), NULL, &was_fast);
        assert_true(was_fast);
        tree_text = respond(wrapped, strlen(wrapped), NULL, &was_fast);
        assert_false(was_fast);
        /* the batch's answer is the one answer in brackets */
        assert_int_equal(strlen(tree_text), strlen(fast_text) + 2);
        assert_memory_equal(tree_text + 1, fast_text, strlen(fast_text));
        free(fast_text);
        free(tree_text);
    }
}

static void
test_jsonrpc_params_on_demand(void **unused)
{
    static const char body[] = REQUEST_HEAD "\"params\":{\"events\":["
        ONE_EVENT "],\"batch\":\"b\"},\"id\":3}";
    struct jsonrpc_batch *b = jsonrpc_parse(body, strlen(body), NULL);
    struct jsonrpc_call *call = jsonrpc_batch_call(b, 0);
    struct evparse_record *fast = jsonrpc_call_events(call);
    json_object *params, *events;

    (void)unused;
    assert_non_null(fast);
    assert_int_equal(fast->count, 1);
    assert_string_equal(jsonrpc_call_method(call), "events.record");
    assert_string_equal(json_object_to_json_string(jsonrpc_call_id(call)),
                        "3");
    assert_false(jsonrpc_call_is_notification(call));
    params = jsonrpc_call_params(call);
    assert_true(json_object_is_type(params, json_type_object));
    assert_true(json_object_object_get_ex(params, "events", &events));
    assert_int_equal(json_object_array_length(events), 1);
    assert_ptr_equal(jsonrpc_call_params(call), params);   /* built once */
    assert_int_equal(jsonrpc_params_object(call), 0);
    jsonrpc_batch_destroy(b);
}

/* A tree parser allowed less nesting than the subset's never sees the
 * fast path: the body gets json-c's depth error as before. */
static void
test_jsonrpc_depth(void **unused)
{
    static const char body[] = REQUEST_HEAD "\"params\":{\"events\":["
        ONE_EVENT "]},\"id\":1}";
    struct jsonrpc_limits shallow = { .depth_max = EVPARSE_DEPTH - 1 };
    struct jsonrpc_limits enough = { .depth_max = EVPARSE_DEPTH };
    char *text;
    int was_fast;

    (void)unused;
    text = respond(body, strlen(body), &shallow, &was_fast);
    assert_false(was_fast);
    assert_string_equal(text, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":"
                        "-32700,\"message\":\"Parse error\",\"data\":"
                        "\"nesting deeper than 3\"},\"id\":null}");
    free(text);
    text = respond(body, strlen(body), &enough, &was_fast);
    assert_true(was_fast);
    assert_string_equal(text, "{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":1}");
    free(text);
}

/* A fallback body still goes the json-c way and gets its answer. */
static void
test_jsonrpc_fallback(void **unused)
{
    static const char body[] = REQUEST_HEAD "\"params\":{\"events\":["
        ONE_EVENT "],\"batch\":\"\"},\"id\":1}";
    char *text;
    int was_fast;

    (void)unused;
    text = respond(body, strlen(body), NULL, &was_fast);
    assert_false(was_fast);
    assert_string_equal(text, "{\"jsonrpc\":\"2.0\",\"result\":1,\"id\":1}");
    free(text);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decodes_every_type),
        cmocka_unit_test(test_odd_order_and_whitespace),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_stamp),
        cmocka_unit_test(test_fallbacks),
        cmocka_unit_test(test_batch_length),
        cmocka_unit_test(test_corpus_differential),
        cmocka_unit_test(test_jsonrpc_same_response),
        cmocka_unit_test(test_jsonrpc_params_on_demand),
        cmocka_unit_test(test_jsonrpc_depth),
        cmocka_unit_test(test_jsonrpc_fallback),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
