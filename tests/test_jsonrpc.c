/*
 * test_jsonrpc: JSON-RPC 2.0 parsing, dispatch and responses. The core is
 * a table of {request body, exact expected response text or NULL} run
 * against a small method table; it holds every example of the JSON-RPC 2.0
 * specification (with tally's "data" members added) and tally's own cases.
 * Separate tests cover pending (asynchronous) calls, limits, accessors and
 * misbehaving handlers.
 *
 *   body --parse--> batch --dispatch(test_methods)--> response == expected
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jsonrpc.h"
#include "xalloc.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SMALL_BATCH_MAX 3
#define SMALL_DEPTH_MAX 4

/* ---- the test methods --------------------------------------------------- */

static int
number_of(json_object *o, double *out)
{
    if (!json_object_is_type(o, json_type_int) && !json_object_is_type(o, json_type_double))
        return -1;
    *out = json_object_get_double(o);
    return 0;
}

/* Answers a - b: an integer when both are integers, else a double. */
static int
answer_difference(struct jsonrpc_call *call, json_object *a, json_object *b)
{
    double x, y;

    if (a == NULL || b == NULL || number_of(a, &x) < 0 || number_of(b, &y) < 0) {
        jsonrpc_call_invalid_params(call, "two numbers expected");
        return JSONRPC_DONE;
    }
    if (json_object_is_type(a, json_type_int) && json_object_is_type(b, json_type_int))
        jsonrpc_call_result(call, json_object_new_int64(json_object_get_int64(a) -
                                                        json_object_get_int64(b)));
    else
        jsonrpc_call_result(call, json_object_new_double(x - y));
    return JSONRPC_DONE;
}

static int
method_subtract(struct jsonrpc_call *call, void *ctx)
{
    json_object *params = jsonrpc_call_params(call);
    json_object *a = NULL, *b = NULL;

    (void)ctx;
    if (json_object_is_type(params, json_type_array)) {
        if (json_object_array_length(params) == 2) {
            a = json_object_array_get_idx(params, 0);
            b = json_object_array_get_idx(params, 1);
        }
    } else if (json_object_is_type(params, json_type_object)) {
        json_object_object_get_ex(params, "minuend", &a);
        json_object_object_get_ex(params, "subtrahend", &b);
    }
    return answer_difference(call, a, b);
}

static int
method_sum(struct jsonrpc_call *call, void *ctx)
{
    json_object *params = jsonrpc_call_params(call);
    int64_t total = 0;

    (void)ctx;
    if (jsonrpc_params_array(call) < 0)
        return JSONRPC_DONE;
    for (size_t i = 0; i < json_object_array_length(params); i++) {
        json_object *o = json_object_array_get_idx(params, i);

        if (!json_object_is_type(o, json_type_int)) {
            jsonrpc_call_invalid_params(call, "integers expected");
            return JSONRPC_DONE;
        }
        total += json_object_get_int64(o);
    }
    jsonrpc_call_result(call, json_object_new_int64(total));
    return JSONRPC_DONE;
}

static int
method_update(struct jsonrpc_call *call, void *ctx)
{
    (void)ctx;
    jsonrpc_call_result(call, NULL);
    return JSONRPC_DONE;
}

static int
method_notify_hello(struct jsonrpc_call *call, void *ctx)
{
    (void)ctx;
    jsonrpc_call_result(call, json_object_new_int(7));
    return JSONRPC_DONE;
}

static int
method_get_data(struct jsonrpc_call *call, void *ctx)
{
    json_object *data = json_object_new_array();

    (void)ctx;
    json_object_array_add(data, json_object_new_string("hello"));
    json_object_array_add(data, json_object_new_int(5));
    jsonrpc_call_result(call, data);
    return JSONRPC_DONE;
}

static int
method_named(struct jsonrpc_call *call, void *ctx)
{
    (void)ctx;
    if (jsonrpc_params_object(call) < 0)
        return JSONRPC_DONE;
    jsonrpc_call_result(call, json_object_new_boolean(1));
    return JSONRPC_DONE;
}

/* Answers later: the test completes it. CTX counts the calls parked. */
static int
method_slow(struct jsonrpc_call *call, void *ctx)
{
    (void)call;
    (*(int *)ctx)++;
    return JSONRPC_PENDING;
}

/* Misbehaving handlers: these must give -32603. */
static int
method_forgets(struct jsonrpc_call *call, void *ctx)
{
    (void)call;
    (void)ctx;
    return JSONRPC_DONE;
}

static int
method_bad_status(struct jsonrpc_call *call, void *ctx)
{
    (void)call;
    (void)ctx;
    return -1;
}

/* Answers twice: the first answer must win and nothing leaks. */
static int
method_twice(struct jsonrpc_call *call, void *ctx)
{
    (void)ctx;
    jsonrpc_call_result(call, json_object_new_string("first"));
    jsonrpc_call_error(call, 1, "second", json_object_new_string("dropped"));
    jsonrpc_call_result(call, json_object_new_string("third"));
    return JSONRPC_DONE;
}

static const struct jsonrpc_method test_methods[] = {
    { .name = "subtract", .handler = method_subtract },
    { .name = "sum", .handler = method_sum },
    { .name = "update", .handler = method_update },
    { .name = "notify_hello", .handler = method_notify_hello },
    { .name = "get_data", .handler = method_get_data },
    { .name = "named", .handler = method_named },
    { .name = "slow", .handler = method_slow },
    { .name = "forgets", .handler = method_forgets },
    { .name = "bad_status", .handler = method_bad_status },
    { .name = "twice", .handler = method_twice },
};

/* ---- helpers ------------------------------------------------------------ */

/* Parses, dispatches and returns the response (caller frees), asserting
 * nothing is left pending. */
static char *
roundtrip(const char *body, size_t len, const struct jsonrpc_limits *limits)
{
    struct jsonrpc_batch *b = jsonrpc_parse(body, len, limits);
    int parked = 0;
    size_t out_len = 99;
    char *out;

    jsonrpc_dispatch(b, test_methods, ARRAY_LEN(test_methods), &parked);
    assert_int_equal(parked, 0);
    assert_int_equal(jsonrpc_batch_pending(b), 0);
    out = jsonrpc_batch_response(b, &out_len);
    assert_int_equal(out_len, out != NULL ? strlen(out) : 0);
    jsonrpc_batch_destroy(b);
    return out;
}

static void
expect_response(const char *body, size_t len, const struct jsonrpc_limits *limits,
                const char *expected)
{
    char *out = roundtrip(body, len, limits);
    int same = expected == NULL ? out == NULL
                                : out != NULL && strcmp(out, expected) == 0;

    if (!same)
        print_error("body %.*s:\n  expected %s\n  got      %s\n", (int)len, body,
                    expected != NULL ? expected : "(no response)",
                    out != NULL ? out : "(no response)");
    free(out); /* before failing: fail() does not return */
    assert_true(same);
}

#define PARSE_ERROR(data) \
    "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32700,\"message\":\"Parse error\"," \
    "\"data\":\"" data "\"},\"id\":null}"
#define INVALID(data, id) \
    "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32600,\"message\":\"Invalid Request\"," \
    "\"data\":\"" data "\"},\"id\":" id "}"
#define NOT_AN_OBJECT INVALID("request must be an object", "null")

/* ---- the table ---------------------------------------------------------- */

struct rpc_case {
    const char *name;
    const char *body;
    const char *expected; /* NULL: no response */
};

static const struct rpc_case spec_cases[] = {
    /* The examples of the JSON-RPC 2.0 specification, section 7. */
    { .name = "positional params",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [42, 23], \"id\": 1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"result\":19,\"id\":1}" },
    { .name = "positional params, reversed",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [23, 42], \"id\": 2}",
      .expected = "{\"jsonrpc\":\"2.0\",\"result\":-19,\"id\":2}" },
    { .name = "named params",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": "
              "{\"subtrahend\": 23, \"minuend\": 42}, \"id\": 3}",
      .expected = "{\"jsonrpc\":\"2.0\",\"result\":19,\"id\":3}" },
    { .name = "named params, other order",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": "
              "{\"minuend\": 42, \"subtrahend\": 23}, \"id\": 4}",
      .expected = "{\"jsonrpc\":\"2.0\",\"result\":19,\"id\":4}" },
    { .name = "notification",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": \"update\", \"params\": [1,2,3,4,5]}",
      .expected = NULL },
    { .name = "notification of an unknown method",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": \"foobar\"}",
      .expected = NULL },
    { .name = "non-existent method",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": \"foobar\", \"id\": \"1\"}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":"
                  "\"Method not found\",\"data\":\"foobar\"},\"id\":\"1\"}" },
    { .name = "invalid JSON",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": \"foobar, \"params\": \"bar\", \"baz]",
      .expected = PARSE_ERROR("object value separator ',' expected") },
    { .name = "invalid Request object",
      .body = "{\"jsonrpc\": \"2.0\", \"method\": 1, \"params\": \"bar\"}",
      .expected = INVALID("method must be a string", "null") },
    { .name = "batch, invalid JSON",
      .body = "[\n  {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n"
              "  {\"jsonrpc\": \"2.0\", \"method\"\n]",
      .expected = PARSE_ERROR("object property name separator ':' expected") },
    { .name = "empty array",
      .body = "[]",
      .expected = INVALID("empty batch", "null") },
    { .name = "invalid batch [1]",
      .body = "[1]",
      .expected = "[" NOT_AN_OBJECT "]" },
    { .name = "invalid batch [1,2,3]",
      .body = "[1,2,3]",
      .expected = "[" NOT_AN_OBJECT "," NOT_AN_OBJECT "," NOT_AN_OBJECT "]" },
    { .name = "mixed batch",
      .body = "[\n"
              " {\"jsonrpc\": \"2.0\", \"method\": \"sum\", \"params\": [1,2,4], \"id\": \"1\"},\n"
              " {\"jsonrpc\": \"2.0\", \"method\": \"notify_hello\", \"params\": [7]},\n"
              " {\"jsonrpc\": \"2.0\", \"method\": \"subtract\", \"params\": [42,23], \"id\": \"2\"},\n"
              " {\"foo\": \"boo\"},\n"
              " {\"jsonrpc\": \"2.0\", \"method\": \"foo.get\", \"params\": {\"name\": \"myself\"}, \"id\": \"5\"},\n"
              " {\"jsonrpc\": \"2.0\", \"method\": \"get_data\", \"id\": \"9\"}\n"
              "]",
      .expected = "["
                  "{\"jsonrpc\":\"2.0\",\"result\":7,\"id\":\"1\"},"
                  "{\"jsonrpc\":\"2.0\",\"result\":19,\"id\":\"2\"},"
                  INVALID("jsonrpc must be \\\"2.0\\\"", "null") ","
                  "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":"
                  "\"Method not found\",\"data\":\"foo.get\"},\"id\":\"5\"},"
                  "{\"jsonrpc\":\"2.0\",\"result\":[\"hello\",5],\"id\":\"9\"}"
                  "]" },
    { .name = "all-notifications batch",
      .body = "[\n"
              " {\"jsonrpc\": \"2.0\", \"method\": \"notify_sum\", \"params\": [1,2,4]},\n"
              " {\"jsonrpc\": \"2.0\", \"method\": \"notify_hello\", \"params\": [7]}\n"
              "]",
      .expected = NULL },
};

#define OK_ID(id) "{\"jsonrpc\":\"2.0\",\"result\":[\"hello\",5],\"id\":" id "}"
#define GET_DATA(id) "{\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":" id "}"

static const struct rpc_case tally_cases[] = {
    /* Ids come back exactly as sent. */
    { .name = "string id", .body = GET_DATA("\"abc\""), .expected = OK_ID("\"abc\"") },
    { .name = "integer id", .body = GET_DATA("1"), .expected = OK_ID("1") },
    { .name = "negative id", .body = GET_DATA("-7"), .expected = OK_ID("-7") },
    { .name = "zero id", .body = GET_DATA("0"), .expected = OK_ID("0") },
    { .name = "fractional id", .body = GET_DATA("3.5"), .expected = OK_ID("3.5") },
    { .name = "fractional id keeps its text", .body = GET_DATA("1.50"), .expected = OK_ID("1.50") },
    { .name = "null id", .body = GET_DATA("null"), .expected = OK_ID("null") },
    { .name = "large id", .body = GET_DATA("9007199254740993"),
      .expected = OK_ID("9007199254740993") },
    { .name = "id with slash and unicode", .body = GET_DATA("\"a/b\\u00e9\""),
      .expected = OK_ID("\"a/b\xc3\xa9\"") },
    /* Invalid Request objects; a well-typed id is echoed. */
    { .name = "jsonrpc 1.0",
      .body = "{\"jsonrpc\":\"1.0\",\"method\":\"get_data\",\"id\":1}",
      .expected = INVALID("jsonrpc must be \\\"2.0\\\"", "1") },
    { .name = "jsonrpc missing", .body = "{\"method\":\"get_data\",\"id\":\"x\"}",
      .expected = INVALID("jsonrpc must be \\\"2.0\\\"", "\"x\"") },
    { .name = "jsonrpc a number", .body = "{\"jsonrpc\":2.0,\"method\":\"get_data\",\"id\":1}",
      .expected = INVALID("jsonrpc must be \\\"2.0\\\"", "1") },
    { .name = "method not a string", .body = "{\"jsonrpc\":\"2.0\",\"method\":[\"sum\"],\"id\":2}",
      .expected = INVALID("method must be a string", "2") },
    { .name = "method missing", .body = "{\"jsonrpc\":\"2.0\",\"id\":2}",
      .expected = INVALID("method must be a string", "2") },
    { .name = "params a string", .body = "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":\"1\",\"id\":3}",
      .expected = INVALID("params must be an object or an array", "3") },
    { .name = "params null", .body = "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":null,\"id\":3}",
      .expected = INVALID("params must be an object or an array", "3") },
    { .name = "id an object", .body = "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[],\"id\":{}}",
      .expected = INVALID("id must be a string, a number or null", "null") },
    { .name = "id a boolean", .body = "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[],\"id\":true}",
      .expected = INVALID("id must be a string, a number or null", "null") },
    { .name = "invalid request without id is still answered",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":5}",
      .expected = INVALID("method must be a string", "null") },
    { .name = "request a string", .body = "\"hello\"", .expected = NOT_AN_OBJECT },
    /* Parse errors. */
    { .name = "trailing garbage", .body = "{\"jsonrpc\":\"2.0\",\"method\":\"update\"} x",
      .expected = PARSE_ERROR("trailing data") },
    { .name = "two values", .body = "[1] [2]", .expected = PARSE_ERROR("trailing data") },
    { .name = "trailing whitespace is fine",
      .body = " {\"jsonrpc\":\"2.0\",\"method\":\"get_data\",\"id\":1} \r\n\t",
      .expected = OK_ID("1") },
    { .name = "invalid UTF-8 in a string",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"get\xff" "data\",\"id\":1}",
      .expected = PARSE_ERROR("invalid UTF-8") },
    { .name = "overlong UTF-8 in a string",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"\xc0\xaf\",\"id\":1}",
      .expected = PARSE_ERROR("invalid UTF-8") },
    { .name = "encoded surrogate in a string",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"\xed\xa0\x80\",\"id\":1}",
      .expected = PARSE_ERROR("invalid UTF-8") },
    { .name = "truncated UTF-8 at the end of a string",
      .body = "[\"\xe2\x82\"]", .expected = PARSE_ERROR("invalid UTF-8") },
    { .name = "valid 2-, 3- and 4-byte UTF-8 in a method name",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\",\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":"
                  "\"Method not found\",\"data\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"},\"id\":1}" },
    { .name = "empty body", .body = "", .expected = PARSE_ERROR("unexpected end of data") },
    { .name = "only whitespace", .body = "  \n", .expected = PARSE_ERROR("unexpected end of data") },
    { .name = "truncated", .body = "{\"jsonrpc\":\"2.0\"",
      .expected = PARSE_ERROR("unexpected end of data") },
    { .name = "single-quoted key", .body = "{'jsonrpc':\"2.0\",\"method\":\"update\"}",
      .expected = PARSE_ERROR("single-quoted string") },
    { .name = "raw tab in a string", .body = "{\"jsonrpc\":\"2.0\",\"method\":\"a\tb\",\"id\":1}",
      .expected = PARSE_ERROR("control character in string") },
    { .name = "trailing comma", .body = "[1,]", .expected = PARSE_ERROR("unexpected character") },
    /* Batches. */
    { .name = "one notification and one call",
      .body = "[{\"jsonrpc\":\"2.0\",\"method\":\"update\",\"params\":[1]},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":[5,8],\"id\":10}]",
      .expected = "[{\"jsonrpc\":\"2.0\",\"result\":-3,\"id\":10}]" },
    { .name = "duplicate ids are both answered",
      .body = "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1,2],\"id\":1},"
              "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[3,4],\"id\":1}]",
      .expected = "[{\"jsonrpc\":\"2.0\",\"result\":3,\"id\":1},"
                  "{\"jsonrpc\":\"2.0\",\"result\":7,\"id\":1}]" },
    { .name = "batch of one call is still an array",
      .body = "[" GET_DATA("\"z\"") "]", .expected = "[" OK_ID("\"z\"") "]" },
    { .name = "nested array is not a request", .body = "[[]]", .expected = "[" NOT_AN_OBJECT "]" },
    { .name = "notification with bad params gets nothing",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":{}}", .expected = NULL },
    /* Handlers and params helpers. */
    { .name = "subtract with fractions",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":[1.5,0.25],\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"result\":1.25,\"id\":1}" },
    { .name = "subtract with one param",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":[1],\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"Invalid params\","
                  "\"data\":\"two numbers expected\"},\"id\":1}" },
    { .name = "subtract named, one missing",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"subtract\",\"params\":{\"minuend\":1},\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"Invalid params\","
                  "\"data\":\"two numbers expected\"},\"id\":1}" },
    { .name = "sum with an object",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":{\"a\":1},\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"Invalid params\","
                  "\"data\":\"params must be an array\"},\"id\":1}" },
    { .name = "params missing for an object method",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"named\",\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"Invalid params\","
                  "\"data\":\"params missing: expected an object\"},\"id\":1}" },
    { .name = "params an array for an object method",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"named\",\"params\":[],\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"Invalid params\","
                  "\"data\":\"params must be an object\"},\"id\":1}" },
    { .name = "update answers null",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"update\",\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"result\":null,\"id\":1}" },
    { .name = "handler that forgets to answer",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"forgets\",\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":\"Internal error\","
                  "\"data\":\"handler returned without an answer\"},\"id\":1}" },
    { .name = "handler with an unknown status",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"bad_status\",\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":\"Internal error\","
                  "\"data\":\"handler returned an unknown status\"},\"id\":1}" },
    { .name = "first answer wins",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"twice\",\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"result\":\"first\",\"id\":1}" },
    { .name = "method name with a NUL matches nothing",
      .body = "{\"jsonrpc\":\"2.0\",\"method\":\"sum\\u0000x\",\"params\":[1],\"id\":1}",
      .expected = "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":"
                  "\"Method not found\",\"data\":\"sum\\u0000x\"},\"id\":1}" },
};

static void
run_cases(const struct rpc_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        print_message("  %s\n", cases[i].name);
        expect_response(cases[i].body, strlen(cases[i].body), NULL, cases[i].expected);
    }
}

static void
test_spec_examples(void **unused)
{
    (void)unused;
    run_cases(spec_cases, ARRAY_LEN(spec_cases));
}

static void
test_tally_cases(void **unused)
{
    (void)unused;
    run_cases(tally_cases, ARRAY_LEN(tally_cases));
}

/* ---- limits ------------------------------------------------------------- */

/* A new string of DEPTH nested arrays around 1 (caller frees). */
static char *
nested_arrays(int depth)
{
    char *s = xmalloc((size_t)depth * 2 + 2);

    memset(s, '[', (size_t)depth);
    s[depth] = '1';
    memset(s + depth + 1, ']', (size_t)depth);
    s[depth * 2 + 1] = '\0';
    return s;
}

static void
test_depth_limit(void **unused)
{
    const struct jsonrpc_limits small = { .batch_max = 0, .depth_max = SMALL_DEPTH_MAX };
    char *ok = nested_arrays(JSONRPC_DEPTH_MAX_DEFAULT);
    char *deep = nested_arrays(JSONRPC_DEPTH_MAX_DEFAULT + 1);
    char *small_ok = nested_arrays(SMALL_DEPTH_MAX);
    char *small_deep = nested_arrays(SMALL_DEPTH_MAX + 1);

    (void)unused;
    /* 32 levels parse (the element is not a request: one -32600). */
    expect_response(ok, strlen(ok), NULL, "[" NOT_AN_OBJECT "]");
    expect_response(deep, strlen(deep), NULL, PARSE_ERROR("nesting deeper than 32"));
    expect_response(small_ok, strlen(small_ok), &small, "[" NOT_AN_OBJECT "]");
    expect_response(small_deep, strlen(small_deep), &small,
                    PARSE_ERROR("nesting deeper than 4"));
    free(ok);
    free(deep);
    free(small_ok);
    free(small_deep);
}

/* A new batch body of N "update" notifications (caller frees). */
static char *
notification_batch(size_t n)
{
    static const char note[] = "{\"jsonrpc\":\"2.0\",\"method\":\"update\"},";
    size_t note_len = sizeof(note) - 1;
    char *s = xmalloc(n * note_len + 2);

    s[0] = '[';
    for (size_t i = 0; i < n; i++)
        memcpy(s + 1 + i * note_len, note, note_len);
    s[n * note_len] = ']'; /* overwrites the last comma */
    s[n * note_len + 1] = '\0';
    return s;
}

static void
test_batch_limit(void **unused)
{
    const struct jsonrpc_limits small = { .batch_max = SMALL_BATCH_MAX, .depth_max = 0 };
    char *at_max = notification_batch(JSONRPC_BATCH_MAX_DEFAULT);
    char *over = notification_batch(JSONRPC_BATCH_MAX_DEFAULT + 1);
    char *small_at = notification_batch(SMALL_BATCH_MAX);
    char *small_over = notification_batch(SMALL_BATCH_MAX + 1);

    (void)unused;
    expect_response(at_max, strlen(at_max), NULL, NULL);
    expect_response(over, strlen(over), NULL,
                    "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1101,\"message\":\"Batch too long\","
                    "\"data\":\"at most 1000 calls per batch\"},\"id\":null}");
    expect_response(small_at, strlen(small_at), &small, NULL);
    expect_response(small_over, strlen(small_over), &small,
                    "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1101,\"message\":\"Batch too long\","
                    "\"data\":\"at most 3 calls per batch\"},\"id\":null}");
    free(at_max);
    free(over);
    free(small_at);
    free(small_over);
}

/* The body is LEN bytes, not a C string: bytes past LEN are never read,
 * and a NUL inside it is a parse error. */
static void
test_body_bounds(void **unused)
{
    static const char body[] = GET_DATA("12") "garbage";
    static const char with_nul[] = GET_DATA("1") "\0";
    static const char number_cut[] = "12345";

    (void)unused;
    expect_response(body, strlen(GET_DATA("12")), NULL, OK_ID("12"));
    expect_response(body, strlen(GET_DATA("12")) - 3, NULL,
                    PARSE_ERROR("unexpected end of data"));
    expect_response(with_nul, sizeof(with_nul) - 1, NULL, PARSE_ERROR("NUL byte in body"));
    /* A bare number cut by LEN is that shorter number: not a request. */
    expect_response(number_cut, 2, NULL, NOT_AN_OBJECT);
}

/* ---- asynchronous calls ------------------------------------------------- */

static void
test_pending_calls(void **unused)
{
    static const char body[] =
        "[{\"jsonrpc\":\"2.0\",\"method\":\"slow\",\"id\":\"a\"},"
        "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[2,3],\"id\":\"b\"},"
        "{\"jsonrpc\":\"2.0\",\"method\":\"slow\",\"id\":\"c\"},"
        "{\"jsonrpc\":\"2.0\",\"method\":\"slow\"}]";
    struct jsonrpc_batch *b = jsonrpc_parse(body, strlen(body), NULL);
    size_t len = 99;
    int parked = 0;
    char *out;

    (void)unused;
    assert_int_equal(jsonrpc_batch_count(b), 4);
    assert_int_equal(jsonrpc_batch_pending(b), 4); /* nothing dispatched yet */
    assert_null(jsonrpc_batch_response(b, &len));  /* refused while pending */
    assert_int_equal(len, 0);

    jsonrpc_dispatch(b, test_methods, ARRAY_LEN(test_methods), &parked);
    assert_int_equal(parked, 3);
    assert_int_equal(jsonrpc_batch_pending(b), 3);
    assert_true(jsonrpc_call_is_done(jsonrpc_batch_call(b, 1)));
    assert_false(jsonrpc_call_is_done(jsonrpc_batch_call(b, 0)));
    assert_null(jsonrpc_batch_response(b, &len));

    /* Dispatching again runs nothing twice. */
    jsonrpc_dispatch(b, test_methods, ARRAY_LEN(test_methods), &parked);
    assert_int_equal(parked, 3);

    /* Later, in any order (as broker confirms arrive). */
    jsonrpc_call_error(jsonrpc_batch_call(b, 2), JSONRPC_ERR_INTERNAL, "Internal error", NULL);
    assert_int_equal(jsonrpc_batch_pending(b), 2);
    jsonrpc_call_result(jsonrpc_batch_call(b, 3), json_object_new_int(1)); /* dropped */
    assert_int_equal(jsonrpc_batch_pending(b), 1);
    assert_null(jsonrpc_batch_response(b, &len));
    jsonrpc_call_result(jsonrpc_batch_call(b, 0), json_object_new_string("late"));
    assert_int_equal(jsonrpc_batch_pending(b), 0);

    out = jsonrpc_batch_response(b, &len);
    assert_non_null(out);
    assert_string_equal(out,
                        "[{\"jsonrpc\":\"2.0\",\"result\":\"late\",\"id\":\"a\"},"
                        "{\"jsonrpc\":\"2.0\",\"result\":5,\"id\":\"b\"},"
                        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,"
                        "\"message\":\"Internal error\"},\"id\":\"c\"}]");
    assert_int_equal(len, strlen(out));
    free(out);
    /* The response can be built again. */
    out = jsonrpc_batch_response(b, NULL);
    assert_non_null(out);
    free(out);
    jsonrpc_batch_destroy(b);
}

/* A body-level error is complete before dispatch. */
static void
test_errors_need_no_dispatch(void **unused)
{
    struct jsonrpc_batch *b = jsonrpc_parse("[]", 2, NULL);
    char *out;

    (void)unused;
    assert_int_equal(jsonrpc_batch_pending(b), 0);
    out = jsonrpc_batch_response(b, NULL);
    assert_string_equal(out, INVALID("empty batch", "null"));
    free(out);
    jsonrpc_batch_destroy(b);
    jsonrpc_batch_destroy(NULL);
}

/* ---- accessors ---------------------------------------------------------- */

static void
test_accessors(void **unused)
{
    static const char body[] =
        "[{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1],\"id\":-7},"
        "{\"jsonrpc\":\"2.0\",\"method\":\"update\"},"
        "{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"id\":null},"
        "7]";
    struct jsonrpc_batch *b = jsonrpc_parse(body, strlen(body), NULL);
    struct jsonrpc_call *c0, *c1, *c2, *c3;

    (void)unused;
    assert_int_equal(jsonrpc_batch_count(b), 4);
    c0 = jsonrpc_batch_call(b, 0);
    c1 = jsonrpc_batch_call(b, 1);
    c2 = jsonrpc_batch_call(b, 2);
    c3 = jsonrpc_batch_call(b, 3);
    assert_null(jsonrpc_batch_call(b, 4));

    assert_string_equal(jsonrpc_call_method(c0), "sum");
    assert_true(json_object_is_type(jsonrpc_call_params(c0), json_type_array));
    assert_int_equal(json_object_get_int64(jsonrpc_call_id(c0)), -7);
    assert_false(jsonrpc_call_is_notification(c0));
    assert_false(jsonrpc_call_is_done(c0));

    assert_string_equal(jsonrpc_call_method(c1), "update");
    assert_null(jsonrpc_call_params(c1));
    assert_null(jsonrpc_call_id(c1));
    assert_true(jsonrpc_call_is_notification(c1));

    assert_null(jsonrpc_call_id(c2)); /* id null: a call, not a notification */
    assert_false(jsonrpc_call_is_notification(c2));

    assert_null(jsonrpc_call_method(c3)); /* invalid: answered already */
    assert_true(jsonrpc_call_is_done(c3));
    assert_int_equal(jsonrpc_batch_pending(b), 3);
    jsonrpc_batch_destroy(b); /* destroyed without dispatch: no leak */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_examples),
        cmocka_unit_test(test_tally_cases),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_batch_limit),
        cmocka_unit_test(test_body_bounds),
        cmocka_unit_test(test_pending_calls),
        cmocka_unit_test(test_errors_need_no_dispatch),
        cmocka_unit_test(test_accessors),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
