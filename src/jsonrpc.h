/*
 * jsonrpc: the JSON-RPC 2.0 layer of tally's frontend, as a pure module. It
 * knows nothing of HTTP or sockets: the HTTP layer hands it one complete
 * request body and sends back the text it returns. Built on json-c.
 *
 *   body --jsonrpc_parse--> batch of calls (invalid ones already answered)
 *          |
 *          +--jsonrpc_dispatch(table)--> handler: result/error now (DONE)
 *          |                             or later (PENDING, e.g. after a
 *          |                             broker confirm)
 *          +--jsonrpc_batch_pending() == 0 ?
 *          +--jsonrpc_batch_response()--> response text, or NULL when every
 *                                         call was a notification
 *
 * Decisions (the specification leaves them open):
 * - An element that is not a valid Request object is answered with -32600
 *   even when it has no "id" member (as in the specification's examples);
 *   its "id" is echoed when the element is an object with a well-typed
 *   "id" member, and is null otherwise.
 * - A valid Request object without an "id" member is a notification: it
 *   is never answered, not even on error (method not found, bad params).
 * - Ids are echoed as json-c reprints them: strings and integers exactly,
 *   fractional numbers with their original text ("1.50" stays 1.50); "-0"
 *   comes back as 0.
 * - Error responses carry a "data" string saying what was wrong.
 * - A batch is not locked: one thread at a time may touch it.
 * - The common events.record call (evparse.h) is decoded without a json-c
 *   tree: its call carries the decoded events (jsonrpc_call_events) and
 *   builds its params tree from the body only when asked for it.
 */
#ifndef TALLY_JSONRPC_H
#define TALLY_JSONRPC_H

#include <stddef.h>

#include <json-c/json.h>

#define JSONRPC_BATCH_MAX_DEFAULT 1000
#define JSONRPC_DEPTH_MAX_DEFAULT 32

/* Error codes of the specification, then tally's application codes. */
#define JSONRPC_ERR_PARSE            (-32700)
#define JSONRPC_ERR_INVALID_REQUEST  (-32600)
#define JSONRPC_ERR_METHOD_NOT_FOUND (-32601)
#define JSONRPC_ERR_INVALID_PARAMS   (-32602)
#define JSONRPC_ERR_INTERNAL         (-32603)
#define JSONRPC_ERR_BATCH_TOO_LONG   1101

/* What a handler returns. */
#define JSONRPC_DONE    0 /* the call has been completed */
#define JSONRPC_PENDING 1 /* the call will be completed later */

struct jsonrpc_limits {
    size_t batch_max; /* most calls in one batch array; 0 = default */
    int depth_max;    /* most nested arrays/objects; <= 0 = default */
};

struct jsonrpc_batch;
struct jsonrpc_call;
struct evparse_record;

struct jsonrpc_method {
    const char *name;
    /* Completes CALL with jsonrpc_call_result/_error and returns
     * JSONRPC_DONE, or returns JSONRPC_PENDING and completes it later.
     * Returning DONE without completing, or any other value, answers the
     * call with -32603. Borrows CALL (owned by its batch) and CTX. */
    int (*handler)(struct jsonrpc_call *call, void *ctx);
};

/* Parses BODY (LEN bytes, no NUL needed; borrowed). LIMITS may be NULL for
 * the defaults. Returns a new batch owned by the caller, never NULL: a body
 * that is not one JSON value, an empty array or a batch longer than
 * batch_max gives a batch of one call already answered with the error.
 * BODY must stay valid until the last jsonrpc_dispatch of the batch has
 * returned: an events.record call evparse decoded borrows its events'
 * strings from it and builds its params from it on demand. */
struct jsonrpc_batch *jsonrpc_parse(const char *body, size_t len,
                                    const struct jsonrpc_limits *limits);

/* Runs the handler of every call not yet answered, looking its method up
 * in TABLE (N rows, borrowed); unknown methods get -32601. Each call is
 * dispatched at most once, however often this is called. */
void jsonrpc_dispatch(struct jsonrpc_batch *b, const struct jsonrpc_method *table,
                      size_t n, void *ctx);

/* How many calls of B are not yet completed (including calls that were
 * never dispatched). */
size_t jsonrpc_batch_pending(const struct jsonrpc_batch *b);

/* When nothing is pending: returns the response text (JSON_C_TO_STRING_PLAIN
 * without slash escaping), a new NUL-terminated string owned by the caller,
 * and its length in *LEN (if LEN is not NULL). A body that was one object
 * gives one response object; an array gives an array of the responses of
 * its non-notification calls. Returns NULL (and *LEN = 0) when there is
 * nothing to send (only notifications) AND when calls are still pending:
 * check jsonrpc_batch_pending() first to tell the two apart. */
char *jsonrpc_batch_response(struct jsonrpc_batch *b, size_t *len);

/* Parses LEN bytes at TEXT as exactly one JSON value (strict JSON, valid
 * UTF-8, nothing after it). Returns a new object owned by the caller, or
 * NULL for anything else. */
json_object *jsonrpc_parse_json(const void *text, size_t len);

/* Frees B, its calls and everything they borrowed out of it. */
void jsonrpc_batch_destroy(struct jsonrpc_batch *b);

/* Number of calls in B (every array element, valid or not; 1 for a single
 * request or a body-level error). */
size_t jsonrpc_batch_count(const struct jsonrpc_batch *b);
/* Borrows call I of B, valid until B is destroyed; NULL if I >= count. */
struct jsonrpc_call *jsonrpc_batch_call(struct jsonrpc_batch *b, size_t i);

/* Borrowed from the call's batch; NULL for a call that was not a valid
 * Request object. */
const char *jsonrpc_call_method(const struct jsonrpc_call *call);
/* Borrowed from the call's batch; NULL when "params" was absent. For a
 * call evparse decoded, the tree is built from the body on the first call
 * (see jsonrpc_parse), so prefer jsonrpc_call_events there. */
json_object *jsonrpc_call_params(struct jsonrpc_call *call);
/* The events of an events.record call evparse decoded (borrowed from the
 * call, valid until its batch is destroyed; the caller may stamp them,
 * evparse_record_stamp), or NULL for any other call: use its params. */
struct evparse_record *jsonrpc_call_events(struct jsonrpc_call *call);
/* Borrowed; NULL for an "id" of null and for a notification. */
json_object *jsonrpc_call_id(const struct jsonrpc_call *call);
int jsonrpc_call_is_notification(const struct jsonrpc_call *call);
/* 1 once the call has a result or an error. */
int jsonrpc_call_is_done(const struct jsonrpc_call *call);

/* Complete CALL. Each takes ownership of RESULT / DATA (either may be NULL:
 * a NULL result is JSON null, a NULL data is left out) and copies MESSAGE.
 * A notification's answer is dropped; a second completion of the same call
 * is ignored (its arguments are freed). */
void jsonrpc_call_result(struct jsonrpc_call *call, json_object *result);
void jsonrpc_call_error(struct jsonrpc_call *call, int code, const char *message,
                        json_object *data);
/* Completes CALL with -32602 "Invalid params" and REASON (copied) as data. */
void jsonrpc_call_invalid_params(struct jsonrpc_call *call, const char *reason);

/* Params checks for handlers: return 0 when the params are an object (an
 * array), else complete CALL with -32602 and a reason and return -1. */
int jsonrpc_params_object(struct jsonrpc_call *call);
int jsonrpc_params_array(struct jsonrpc_call *call);

#endif
