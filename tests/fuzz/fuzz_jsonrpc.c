/*
 * fuzz_jsonrpc: one HTTP request body through the JSON-RPC layer the way
 * the frontend runs it: jsonrpc_parse, dispatch to a table of dummy
 * methods (one walks events.record params through event_from_json, others
 * answer now, later, twice or never), complete what is pending, build the
 * response.
 *
 *   body --jsonrpc_parse--> batch --dispatch--> handlers --complete-->
 *        jsonrpc_batch_response --> must parse as a JSON object or array
 *
 * Properties: a call without a method was answered at parse time; once
 * every call is completed none is pending; a response, when there is one,
 * is valid JSON of the length reported.
 */
#include <json-c/json.h>
#include <string.h>

#include "event.h"
#include "fuzz.h"
#include "jsonrpc.h"

/* events.record: {"events": [event, ...]} -> {"accepted": n, "rejected":
 * [[index, code], ...]}, the per-event walk of services/frontend/record.c. */
static int
method_record(struct jsonrpc_call *call, void *ctx)
{
    json_object *params = jsonrpc_call_params(call), *events, *result,
                *rejected;
    size_t n, accepted = 0;

    (void)ctx;
    if (jsonrpc_params_object(call) != 0)
        return JSONRPC_DONE;
    if (!json_object_object_get_ex(params, "events", &events)
        || !json_object_is_type(events, json_type_array)) {
        jsonrpc_call_invalid_params(call, "events must be an array");
        return JSONRPC_DONE;
    }
    rejected = json_object_new_array();
    n = json_object_array_length(events);
    for (size_t i = 0; i < n; i++) {
        char msg[128];
        struct event ev;
        json_object *pair;
        enum event_error code = event_from_json(
            &ev, json_object_array_get_idx(events, i), FUZZ_NOW_US, msg,
            sizeof(msg));

        FUZZ_CHECK(memchr(msg, '\0', sizeof(msg)) != NULL,
                   "event message not NUL-terminated");
        if (code == EVENT_OK) {
            accepted++;
            continue;
        }
        pair = json_object_new_array();
        json_object_array_add(pair, json_object_new_int64((int64_t)i));
        json_object_array_add(pair, json_object_new_int((int)code));
        json_object_array_add(pair, json_object_new_string(msg));
        json_object_array_add(rejected, pair);
    }
    result = json_object_new_object();
    json_object_object_add(result, "accepted",
                           json_object_new_int64((int64_t)accepted));
    json_object_object_add(result, "rejected", rejected);
    jsonrpc_call_result(call, result);
    return JSONRPC_DONE;
}

/* Answers with its own params (a new reference into the parse tree). */
static int
method_echo(struct jsonrpc_call *call, void *ctx)
{
    (void)ctx;
    jsonrpc_call_result(call, json_object_get(jsonrpc_call_params(call)));
    return JSONRPC_DONE;
}

static int
method_array(struct jsonrpc_call *call, void *ctx)
{
    (void)ctx;
    if (jsonrpc_params_array(call) == 0)
        jsonrpc_call_result(call, json_object_new_int64((int64_t)
            json_object_array_length(jsonrpc_call_params(call))));
    return JSONRPC_DONE;
}

/* Answered after dispatch, like a call waiting for a broker confirm. */
static int
method_later(struct jsonrpc_call *call, void *ctx)
{
    (void)call;
    (void)ctx;
    return JSONRPC_PENDING;
}

/* Returns DONE without an answer: the layer must answer -32603. */
static int
method_silent(struct jsonrpc_call *call, void *ctx)
{
    (void)call;
    (void)ctx;
    return JSONRPC_DONE;
}

/* Completes twice: the second completion must be dropped. */
static int
method_twice(struct jsonrpc_call *call, void *ctx)
{
    (void)ctx;
    jsonrpc_call_result(call, json_object_new_boolean(1));
    jsonrpc_call_error(call, JSONRPC_ERR_INTERNAL, "again",
                       json_object_new_string("second"));
    return JSONRPC_DONE;
}

static int
method_reject(struct jsonrpc_call *call, void *ctx)
{
    (void)ctx;
    jsonrpc_call_invalid_params(call, "rejected by the fuzz table");
    return 7; /* an unknown status; ignored since the call is done */
}

static const struct jsonrpc_method fuzz_methods[] = {
    { .name = "events.record", .handler = method_record },
    { .name = "echo", .handler = method_echo },
    { .name = "array", .handler = method_array },
    { .name = "later", .handler = method_later },
    { .name = "silent", .handler = method_silent },
    { .name = "twice", .handler = method_twice },
    { .name = "reject", .handler = method_reject },
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct jsonrpc_batch *b = jsonrpc_parse((const char *)data, size, NULL);
    size_t n = jsonrpc_batch_count(b), len;
    char *text;

    FUZZ_CHECK(n >= 1, "a batch of no call");
    for (size_t i = 0; i < n; i++) {
        struct jsonrpc_call *call = jsonrpc_batch_call(b, i);

        FUZZ_CHECK(jsonrpc_call_method(call) != NULL
                       || jsonrpc_call_is_done(call),
                   "an invalid call left unanswered");
    }
    FUZZ_CHECK(jsonrpc_batch_call(b, n) == NULL, "a call past the count");

    jsonrpc_dispatch(b, fuzz_methods,
                     sizeof(fuzz_methods) / sizeof(fuzz_methods[0]), NULL);
    jsonrpc_dispatch(b, fuzz_methods,
                     sizeof(fuzz_methods) / sizeof(fuzz_methods[0]), NULL);
    for (size_t i = 0; i < n; i++) {
        struct jsonrpc_call *call = jsonrpc_batch_call(b, i);

        if (!jsonrpc_call_is_done(call))
            jsonrpc_call_result(call, json_object_new_string("later"));
    }
    FUZZ_CHECK(jsonrpc_batch_pending(b) == 0, "calls still pending");

    text = jsonrpc_batch_response(b, &len);
    if (text != NULL) {
        json_object *back;

        FUZZ_CHECK(strlen(text) == len, "response length");
        back = json_tokener_parse(text);
        FUZZ_CHECK(json_object_is_type(back, json_type_object)
                       || json_object_is_type(back, json_type_array),
                   "response is not a JSON object or array");
        json_object_put(back);
        free(text);
    } else {
        FUZZ_CHECK(len == 0, "no response but a length");
    }
    jsonrpc_batch_destroy(b);
    return 0;
}
