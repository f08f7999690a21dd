/*
 * fuzz_evparse: a request body to the streaming events.record decoder and,
 * beside it, to the json-c path it stands in for. Whatever evparse takes,
 * the json-c path must take too and decode to the same call and the same
 * events, field for field; whatever it refuses is left to json-c.
 *
 *   body --evparse_record_parse--> events, batch, id --stamp(now)
 *        \                                                  ||  same
 *         "[" body "]" --jsonrpc_parse (tree path)--> call --event_from_json
 *
 * Also: jsonrpc_parse(body) takes the fast path exactly when evparse does,
 * and the params it builds on demand equal the tree path's params.
 */
#include <json-c/json.h>
#include <string.h>

#include "event.h"
#include "evparse.h"
#include "fuzz.h"
#include "jsonrpc.h"
#include "xalloc.h"

#define FUZZ_MESSAGE_MAX 160
#define FUZZ_JSON_FLAGS \
    (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static int
same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void
check_same_event(const struct event *fast, const struct event *tree)
{
    FUZZ_CHECK(fast->type == tree->type, "type");
    FUZZ_CHECK(same_bytes(fast->name, fast->name_len, tree->name,
                          tree->name_len), "name");
    FUZZ_CHECK(memcmp(&fast->value, &tree->value, sizeof(double)) == 0,
               "value bits");
    FUZZ_CHECK((fast->str == NULL) == (tree->str == NULL), "unique string");
    FUZZ_CHECK(same_bytes(fast->str, fast->str_len, tree->str,
                          tree->str_len), "unique string");
    FUZZ_CHECK(fast->time_us == tree->time_us, "time");
    FUZZ_CHECK(fast->source != NULL, "source");
    FUZZ_CHECK(same_bytes(fast->source, fast->source_len, tree->source,
                          tree->source_len), "source");
}

static void
check_same_id(json_object *fast, json_object *tree)
{
    FUZZ_CHECK(json_object_get_type(fast) == json_object_get_type(tree),
               "id type");
    FUZZ_CHECK(strcmp(json_object_to_json_string_ext(fast, FUZZ_JSON_FLAGS),
                      json_object_to_json_string_ext(tree, FUZZ_JSON_FLAGS))
                   == 0,
               "id text");
}

/* REC (stamped when STAMPED, else refused by the stamp) against the tree
 * path's call TREE. */
static void
check_against_tree(struct evparse_record *rec, int stamped,
                   struct jsonrpc_call *tree)
{
    json_object *params, *events, *batch;
    size_t too_far = 0;

    FUZZ_CHECK(jsonrpc_call_method(tree) != NULL
                   && strcmp(jsonrpc_call_method(tree), EVPARSE_METHOD) == 0,
               "the tree path sees no events.record call");
    FUZZ_CHECK(!jsonrpc_call_is_notification(tree), "a notification");
    check_same_id(rec->id, jsonrpc_call_id(tree));
    params = jsonrpc_call_params(tree);
    FUZZ_CHECK(json_object_is_type(params, json_type_object), "params");
    FUZZ_CHECK(json_object_object_length(params)
                   == 1 + (rec->batch != NULL ? 1 : 0),
               "params members");
    FUZZ_CHECK(json_object_object_get_ex(params, "events", &events)
                   && json_object_is_type(events, json_type_array),
               "events");
    FUZZ_CHECK(json_object_array_length(events) == rec->count,
               "event count");
    if (rec->batch != NULL)
        FUZZ_CHECK(json_object_object_get_ex(params, "batch", &batch)
                       && json_object_is_type(batch, json_type_string)
                       && same_bytes(rec->batch, rec->batch_len,
                                     json_object_get_string(batch),
                                     (size_t)json_object_get_string_len(
                                         batch)),
                   "batch");
    for (size_t i = 0; i < rec->count; i++) {
        char msg[FUZZ_MESSAGE_MAX];
        struct event ev;
        enum event_error code = event_from_json(
            &ev, json_object_array_get_idx(events, i), FUZZ_NOW_US, msg,
            sizeof(msg));

        if (stamped) {
            FUZZ_CHECK(code == EVENT_OK,
                       "json-c rejects an event evparse took");
            check_same_event(&rec->events[i], &ev);
        } else {
            FUZZ_CHECK(code == EVENT_OK || code == EVENT_ERR_TOO_OLD
                           || code == EVENT_ERR_TOO_NEW,
                       "json-c rejects an event evparse took for its form");
            too_far += code != EVENT_OK;
        }
    }
    FUZZ_CHECK(stamped || too_far > 0, "the stamp refused good times");
}

/* jsonrpc_parse(BODY) itself: fast exactly when evparse is (FAST), and
 * then the params it builds on demand are those of TREE, the tree path's
 * call. */
static void
check_jsonrpc(const char *body, size_t size, int fast,
              struct jsonrpc_call *tree)
{
    struct jsonrpc_batch *b = jsonrpc_parse(body, size, NULL);
    struct jsonrpc_call *call = jsonrpc_batch_call(b, 0);

    FUZZ_CHECK((jsonrpc_call_events(call) != NULL) == fast,
               "jsonrpc_parse and evparse disagree on the fast path");
    if (fast) {
        FUZZ_CHECK(json_object_equal(jsonrpc_call_params(call),
                                     jsonrpc_call_params(tree)),
                   "params built on demand");
        check_same_id(jsonrpc_call_id(call), jsonrpc_call_id(tree));
    }
    jsonrpc_batch_destroy(b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    struct evparse_record rec;
    struct jsonrpc_batch *tree;
    char *wrapped;
    int stamped;

    if (evparse_record_parse(&rec, body, size, NULL, 0) != 0) {
        FUZZ_CHECK(rec.events == NULL && rec.count == 0 && rec.id == NULL,
                   "a fallback left something decoded");
        check_jsonrpc(body, size, 0, NULL);
        return 0;
    }
    stamped = evparse_record_stamp(&rec, FUZZ_NOW_US) == 0;

    /* a batch array of one: the tree path, which never takes the fast one */
    wrapped = xmalloc(size + 2);
    wrapped[0] = '[';
    memcpy(wrapped + 1, data, size);
    wrapped[size + 1] = ']';
    tree = jsonrpc_parse(wrapped, size + 2, NULL);
    FUZZ_CHECK(jsonrpc_batch_count(tree) == 1, "one call");
    check_against_tree(&rec, stamped, jsonrpc_batch_call(tree, 0));
    check_jsonrpc(body, size, 1, jsonrpc_batch_call(tree, 0));
    jsonrpc_batch_destroy(tree);
    free(wrapped);
    evparse_record_destroy(&rec);
    return 0;
}
