/*
 * jsonrpc: JSON-RPC 2.0 request parsing, dispatch and response building
 * (see jsonrpc.h for the flow and the decisions). A batch owns the parsed
 * json-c tree; calls borrow their method, params and id out of it, and each
 * call owns its response object once it is completed.
 *
 * The common events.record call takes a faster road: evparse decodes it
 * straight from the body, with no tree. Such a call keeps the decoded
 * events and its id; its params tree is built from the body only if a
 * handler asks for it (jsonrpc_call_params), which is how every error
 * answer still comes from the json-c path.
 */
#include "jsonrpc.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "evparse.h"
#include "xalloc.h"

#define JSONRPC_VERSION      "2.0"
#define JSONRPC_TO_STRING    (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define JSONRPC_REASON_MAX   96
/* json-c counts the top-level value as one level of its stack. */
#define JSONRPC_TOKENER_EXTRA_DEPTH 1

enum jsonrpc_state {
    JSONRPC_STATE_NEW,     /* valid, not yet dispatched */
    JSONRPC_STATE_PENDING, /* handler said it will answer later */
    JSONRPC_STATE_DONE,    /* answered (response set unless notification) */
};

struct jsonrpc_call {
    const char *method;    /* borrowed from the tree; NULL if invalid */
    size_t method_len;
    json_object *params;   /* borrowed; NULL if absent */
    json_object *id;       /* borrowed; NULL for null or absent */
    int is_notification;
    enum jsonrpc_state state;
    json_object *response; /* owned; NULL until done, or for notifications */
    /* A call evparse decoded: */
    int is_fast;
    struct evparse_record fast; /* owned; its id is the call's id */
    const char *body;      /* borrowed, to build the tree on demand; NULL
                              once built (or tried) */
    size_t body_len;
    int depth_max;
    json_object *tree;     /* owned; the tree of BODY, once built */
};

struct jsonrpc_batch {
    json_object *root;     /* owned parse tree; NULL after a parse error */
    int is_array;          /* the body was a batch array */
    size_t count;
    struct jsonrpc_call *calls;
};

/* ---- responses ---------------------------------------------------------- */

/* The "jsonrpc" member goes first; the caller adds "result" or "error". */
static json_object *
response_new(void)
{
    json_object *resp = json_object_new_object();

    json_object_object_add(resp, "jsonrpc", json_object_new_string(JSONRPC_VERSION));
    return resp;
}

static void
response_finish(json_object *resp, json_object *id)
{
    json_object_object_add(resp, "id", id != NULL ? json_object_get(id) : NULL);
}

void
jsonrpc_call_result(struct jsonrpc_call *call, json_object *result)
{
    if (call->state == JSONRPC_STATE_DONE || call->is_notification) {
        json_object_put(result);
        call->state = JSONRPC_STATE_DONE;
        return;
    }
    call->response = response_new();
    json_object_object_add(call->response, "result", result);
    response_finish(call->response, call->id);
    call->state = JSONRPC_STATE_DONE;
}

void
jsonrpc_call_error(struct jsonrpc_call *call, int code, const char *message,
                   json_object *data)
{
    json_object *error;

    if (call->state == JSONRPC_STATE_DONE || call->is_notification) {
        json_object_put(data);
        call->state = JSONRPC_STATE_DONE;
        return;
    }
    error = json_object_new_object();
    json_object_object_add(error, "code", json_object_new_int(code));
    json_object_object_add(error, "message", json_object_new_string(message != NULL ? message : ""));
    if (data != NULL)
        json_object_object_add(error, "data", data);
    call->response = response_new();
    json_object_object_add(call->response, "error", error);
    response_finish(call->response, call->id);
    call->state = JSONRPC_STATE_DONE;
}

void
jsonrpc_call_invalid_params(struct jsonrpc_call *call, const char *reason)
{
    jsonrpc_call_error(call, JSONRPC_ERR_INVALID_PARAMS, "Invalid params",
                       json_object_new_string(reason));
}

int
jsonrpc_params_object(struct jsonrpc_call *call)
{
    if (json_object_is_type(jsonrpc_call_params(call), json_type_object))
        return 0;
    jsonrpc_call_invalid_params(call, call->params == NULL
                                          ? "params missing: expected an object"
                                          : "params must be an object");
    return -1;
}

int
jsonrpc_params_array(struct jsonrpc_call *call)
{
    if (json_object_is_type(jsonrpc_call_params(call), json_type_array))
        return 0;
    jsonrpc_call_invalid_params(call, call->params == NULL
                                          ? "params missing: expected an array"
                                          : "params must be an array");
    return -1;
}

/* ---- parsing ------------------------------------------------------------ */

static struct jsonrpc_batch *
batch_new(json_object *root, int is_array, size_t count)
{
    struct jsonrpc_batch *b = xcalloc(1, sizeof(*b));

    b->root = root;
    b->is_array = is_array;
    b->count = count;
    b->calls = xcalloc(count, sizeof(*b->calls));
    return b;
}

/* A batch of one call already answered with CODE; takes ownership of ROOT. */
static struct jsonrpc_batch *
batch_error(json_object *root, int code, const char *message, const char *reason)
{
    struct jsonrpc_batch *b = batch_new(root, 0, 1);

    jsonrpc_call_error(&b->calls[0], code, message, json_object_new_string(reason));
    return b;
}

static int
is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Length of the well-formed UTF-8 sequence at P (N bytes left), or 0.
 * Follows RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF (json-c's own check lets overlong forms such as C0 AF pass). */
static size_t
utf8_sequence_len(const unsigned char *p, size_t n)
{
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        need = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        need = 3;
        if (p[0] == 0xe0)
            lo = 0xa0; /* overlong */
        else if (p[0] == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        need = 4;
        if (p[0] == 0xf0)
            lo = 0x90; /* overlong */
        else if (p[0] == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return need;
}

/* json-c's strict mode still accepts single-quoted strings, raw control
 * characters inside strings and overlong UTF-8; plain JSON does not.
 * Returns NULL when the LEN bytes of TEXT (already parsed by json-c) are
 * clean, else a reason. */
static const char *
strictness_violation(const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    int in_string = 0;
    size_t i = 0;

    while (i < len) {
        unsigned char c = p[i];
        size_t step = utf8_sequence_len(p + i, len - i);

        if (step == 0)
            return "invalid UTF-8";
        if (!in_string) {
            if (c == '"')
                in_string = 1;
            else if (c == '\'')
                return "single-quoted string";
        } else if (c == '\\') {
            step = 2; /* json-c validated the escape */
        } else if (c == '"') {
            in_string = 0;
        } else if (c < 0x20) {
            return "control character in string";
        }
        i += step;
    }
    return NULL;
}

/* Parses the whole body into *OUT (owned by the caller) or returns -1 with
 * a reason in REASON. */
static int
parse_body(const char *body, size_t len, int depth_max, json_object **out,
           char *reason, size_t reason_size)
{
    struct json_tokener *tok = NULL;
    json_object *root = NULL;
    enum json_tokener_error err;
    const char *bad;
    size_t end;

    *out = NULL;
    if (len > INT_MAX - 1) {
        snprintf(reason, reason_size, "body too large");
        goto fail;
    }
    if (memchr(body, '\0', len) != NULL) {
        snprintf(reason, reason_size, "NUL byte in body");
        goto fail;
    }
    tok = json_tokener_new_ex(depth_max + JSONRPC_TOKENER_EXTRA_DEPTH);
    if (tok == NULL) {
        snprintf(reason, reason_size, "out of memory");
        goto fail;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8 |
                                    JSON_TOKENER_ALLOW_TRAILING_CHARS);
    root = json_tokener_parse_ex(tok, body, (int)len);
    err = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    if (err == json_tokener_continue) {
        /* The body ended inside a value; the NUL says "no more input". */
        root = json_tokener_parse_ex(tok, "", 1);
        err = json_tokener_get_error(tok);
        end = len;
    }
    if (err == json_tokener_error_depth) {
        snprintf(reason, reason_size, "nesting deeper than %d", depth_max);
        goto fail;
    }
    if (err == json_tokener_error_parse_utf8_string) {
        snprintf(reason, reason_size, "invalid UTF-8");
        goto fail;
    }
    if (err != json_tokener_success || root == NULL) {
        snprintf(reason, reason_size, "%s", json_tokener_error_desc(err));
        goto fail;
    }
    for (size_t i = end; i < len; i++) {
        if (!is_json_space(body[i])) {
            snprintf(reason, reason_size, "trailing data");
            goto fail;
        }
    }
    bad = strictness_violation(body, end);
    if (bad != NULL) {
        snprintf(reason, reason_size, "%s", bad);
        goto fail;
    }
    json_tokener_free(tok);
    *out = root;
    return 0;

fail:
    json_object_put(root);
    if (tok != NULL)
        json_tokener_free(tok);
    return -1;
}

static int
id_is_valid(json_object *id)
{
    switch (json_object_get_type(id)) {
    case json_type_null:
    case json_type_string:
    case json_type_int:
    case json_type_double:
        return 1;
    default:
        return 0;
    }
}

/* Fills CALL from one Request object REQ (borrowed); answers it with
 * -32600 when REQ is not a valid Request object. */
static void
call_from_request(struct jsonrpc_call *call, json_object *req)
{
    json_object *version, *method, *params, *id;
    int has_id;
    const char *reason = NULL;

    if (!json_object_is_type(req, json_type_object)) {
        reason = "request must be an object";
        goto invalid;
    }
    has_id = json_object_object_get_ex(req, "id", &id);
    if (has_id && id_is_valid(id))
        call->id = id; /* echoed even if the rest is invalid */
    if (!json_object_object_get_ex(req, "jsonrpc", &version) ||
        !json_object_is_type(version, json_type_string) ||
        json_object_get_string_len(version) != (int)strlen(JSONRPC_VERSION) ||
        memcmp(json_object_get_string(version), JSONRPC_VERSION,
               strlen(JSONRPC_VERSION)) != 0) {
        reason = "jsonrpc must be \"2.0\"";
        goto invalid;
    }
    if (!json_object_object_get_ex(req, "method", &method) ||
        !json_object_is_type(method, json_type_string)) {
        reason = "method must be a string";
        goto invalid;
    }
    if (json_object_object_get_ex(req, "params", &params) &&
        !json_object_is_type(params, json_type_object) &&
        !json_object_is_type(params, json_type_array)) {
        reason = "params must be an object or an array";
        goto invalid;
    }
    if (has_id && !id_is_valid(id)) {
        reason = "id must be a string, a number or null";
        goto invalid;
    }
    call->method = json_object_get_string(method);
    call->method_len = (size_t)json_object_get_string_len(method);
    call->params = json_object_object_get_ex(req, "params", &params) ? params : NULL;
    call->is_notification = !has_id;
    call->state = JSONRPC_STATE_NEW;
    return;

invalid:
    call->method = NULL;
    call->is_notification = 0;
    jsonrpc_call_error(call, JSONRPC_ERR_INVALID_REQUEST, "Invalid Request",
                       json_object_new_string(reason));
}

/* A batch of the one events.record call evparse decoded, REC (taken). */
static struct jsonrpc_batch *
batch_fast(struct evparse_record *rec, const char *body, size_t len,
           int depth_max)
{
    struct jsonrpc_batch *b = batch_new(NULL, 0, 1);
    struct jsonrpc_call *call = &b->calls[0];

    call->method = EVPARSE_METHOD;
    call->method_len = strlen(EVPARSE_METHOD);
    call->state = JSONRPC_STATE_NEW;
    call->is_fast = 1;
    call->fast = *rec;
    call->id = call->fast.id;
    call->body = body;
    call->body_len = len;
    call->depth_max = depth_max;
    return b;
}

struct jsonrpc_batch *
jsonrpc_parse(const char *body, size_t len, const struct jsonrpc_limits *limits)
{
    struct evparse_record fast;
    size_t batch_max = JSONRPC_BATCH_MAX_DEFAULT;
    int depth_max = JSONRPC_DEPTH_MAX_DEFAULT;
    char reason[JSONRPC_REASON_MAX];
    struct jsonrpc_batch *b;
    json_object *root;
    size_t count;

    if (limits != NULL && limits->batch_max > 0)
        batch_max = limits->batch_max;
    if (limits != NULL && limits->depth_max > 0)
        depth_max = limits->depth_max;
    if (depth_max >= EVPARSE_DEPTH
        && evparse_record_parse(&fast, body, len, NULL, 0) == 0)
        return batch_fast(&fast, body, len, depth_max);
    if (parse_body(body, len, depth_max, &root, reason, sizeof(reason)) < 0)
        return batch_error(NULL, JSONRPC_ERR_PARSE, "Parse error", reason);
    if (!json_object_is_type(root, json_type_array)) {
        b = batch_new(root, 0, 1);
        call_from_request(&b->calls[0], root);
        return b;
    }
    count = json_object_array_length(root);
    if (count == 0)
        return batch_error(root, JSONRPC_ERR_INVALID_REQUEST, "Invalid Request",
                           "empty batch");
    if (count > batch_max) {
        snprintf(reason, sizeof(reason), "at most %zu calls per batch", batch_max);
        return batch_error(root, JSONRPC_ERR_BATCH_TOO_LONG, "Batch too long", reason);
    }
    b = batch_new(root, 1, count);
    for (size_t i = 0; i < count; i++)
        call_from_request(&b->calls[i], json_object_array_get_idx(root, i));
    return b;
}

/* ---- dispatch and response ---------------------------------------------- */

static const struct jsonrpc_method *
method_find(const struct jsonrpc_method *table, size_t n, const struct jsonrpc_call *call)
{
    /* A name with an embedded NUL ("a\u0000b") matches nothing. */
    if (strlen(call->method) != call->method_len)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].name, call->method) == 0)
            return &table[i];
    return NULL;
}

void
jsonrpc_dispatch(struct jsonrpc_batch *b, const struct jsonrpc_method *table, size_t n,
                 void *ctx)
{
    for (size_t i = 0; i < b->count; i++) {
        struct jsonrpc_call *call = &b->calls[i];
        const struct jsonrpc_method *m;
        int rc;

        if (call->state != JSONRPC_STATE_NEW)
            continue;
        m = method_find(table, n, call);
        if (m == NULL) {
            jsonrpc_call_error(call, JSONRPC_ERR_METHOD_NOT_FOUND, "Method not found",
                               json_object_new_string_len(call->method,
                                                          (int)call->method_len));
            continue;
        }
        call->state = JSONRPC_STATE_PENDING;
        rc = m->handler(call, ctx);
        if (call->state == JSONRPC_STATE_DONE)
            continue;
        if (rc != JSONRPC_PENDING)
            jsonrpc_call_error(call, JSONRPC_ERR_INTERNAL, "Internal error",
                               json_object_new_string(
                                   rc == JSONRPC_DONE
                                       ? "handler returned without an answer"
                                       : "handler returned an unknown status"));
    }
}

size_t
jsonrpc_batch_pending(const struct jsonrpc_batch *b)
{
    size_t pending = 0;

    for (size_t i = 0; i < b->count; i++)
        if (b->calls[i].state != JSONRPC_STATE_DONE)
            pending++;
    return pending;
}

char *
jsonrpc_batch_response(struct jsonrpc_batch *b, size_t *len)
{
    json_object *out = NULL;
    const char *text;
    size_t text_len;
    char *copy = NULL;

    if (len != NULL)
        *len = 0;
    if (jsonrpc_batch_pending(b) > 0)
        return NULL;
    if (!b->is_array) {
        if (b->calls[0].response == NULL)
            return NULL;
        out = json_object_get(b->calls[0].response);
    } else {
        out = json_object_new_array();
        for (size_t i = 0; i < b->count; i++)
            if (b->calls[i].response != NULL)
                json_object_array_add(out, json_object_get(b->calls[i].response));
        if (json_object_array_length(out) == 0)
            goto done;
    }
    text = json_object_to_json_string_length(out, JSONRPC_TO_STRING, &text_len);
    copy = xstrndup(text, text_len);
    if (len != NULL)
        *len = text_len;
done:
    json_object_put(out);
    return copy;
}

void
jsonrpc_batch_destroy(struct jsonrpc_batch *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->count; i++) {
        json_object_put(b->calls[i].response);
        if (b->calls[i].is_fast) {
            evparse_record_destroy(&b->calls[i].fast);
            json_object_put(b->calls[i].tree);
        }
    }
    free(b->calls);
    json_object_put(b->root);
    free(b);
}

/* ---- accessors ---------------------------------------------------------- */

size_t
jsonrpc_batch_count(const struct jsonrpc_batch *b)
{
    return b->count;
}

struct jsonrpc_call *
jsonrpc_batch_call(struct jsonrpc_batch *b, size_t i)
{
    return i < b->count ? &b->calls[i] : NULL;
}

const char *
jsonrpc_call_method(const struct jsonrpc_call *call)
{
    return call->method;
}

json_object *
jsonrpc_call_params(struct jsonrpc_call *call)
{
    char reason[JSONRPC_REASON_MAX];

    if (call->body != NULL) {   /* a fast call: build its tree now */
        if (parse_body(call->body, call->body_len, call->depth_max,
                       &call->tree, reason, sizeof(reason)) == 0)
            json_object_object_get_ex(call->tree, "params", &call->params);
        call->body = NULL;
    }
    return call->params;
}

struct evparse_record *
jsonrpc_call_events(struct jsonrpc_call *call)
{
    return call->is_fast ? &call->fast : NULL;
}

json_object *
jsonrpc_call_id(const struct jsonrpc_call *call)
{
    return call->is_notification ? NULL : call->id;
}

int
jsonrpc_call_is_notification(const struct jsonrpc_call *call)
{
    return call->is_notification;
}

int
jsonrpc_call_is_done(const struct jsonrpc_call *call)
{
    return call->state == JSONRPC_STATE_DONE;
}

json_object *
jsonrpc_parse_json(const void *text, size_t len)
{
    json_tokener *tok;
    json_object *obj;

    if (len > INT32_MAX)
        return NULL;
    tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT
                                    | JSON_TOKENER_VALIDATE_UTF8);
    obj = json_tokener_parse_ex(tok, text, (int)len);
    if (obj != NULL && (json_tokener_get_error(tok) != json_tokener_success
                        || json_tokener_get_parse_end(tok) != len)) {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    return obj;
}
