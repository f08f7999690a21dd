/*
 * fuzz_event: event objects as a client sends them. The input is parsed
 * with jsonrpc_parse_json, as daemon_parse_json does (strict, UTF-8 checked, the
 * whole input one value); an object is one event, an array a list of them
 * (the "events" of events.record). Each goes through event_from_json.
 *
 *   bytes --json-c--> object --event_from_json--> struct event
 *                                 | EVENT_OK
 *                                 v
 *          event_validate == EVENT_OK, and codec_put_event ->
 *          codec_decode gives back the same event (the frontend's path
 *          onto the bus must accept whatever it validated)
 */
#include <json-c/json.h>
#include <limits.h>
#include <string.h>

#include "buf.h"
#include "codec.h"
#include "event.h"
#include "jsonrpc.h"
#include "fuzz.h"

static int
same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Puts EV on the bus codec and decodes it again. */
static void
check_bus_round_trip(const struct event *ev)
{
    static const uint8_t key[CODEC_KEY_SIZE] = { 1 };
    struct codec_subbatch sb = {
        .origin = "fuzz",
        .origin_len = 4,
        .map_version = 1,
        .created_us = FUZZ_NOW_US,
    };
    struct codec_encoder enc;
    struct codec_message msg;
    struct buf_writer out;
    const struct event *back;
    char err[CODEC_ERR_MAX];

    memcpy(sb.dedup_key, key, sizeof(key));
    buf_writer_create(&out, 256);
    codec_message_begin(&enc, &out);
    FUZZ_CHECK(codec_subbatch_begin(&enc, &sb) == 0, enc.err);
    FUZZ_CHECK(codec_put_event(&enc, 7, 1, ev) == 0, enc.err);
    FUZZ_CHECK(codec_subbatch_end(&enc) == 0, enc.err);
    FUZZ_CHECK(codec_message_end(&enc) == 0, enc.err);
    FUZZ_CHECK(codec_decode(out.data, out.len, &msg, err, sizeof(err)) == 0,
               err);
    FUZZ_CHECK(msg.entry_count == 1
                   && msg.entries[0].kind == CODEC_ENTRY_EVENT,
               "one event entry");
    back = &msg.entries[0].u.event;
    FUZZ_CHECK(back->type == ev->type, "type");
    FUZZ_CHECK(same_bytes(back->name, back->name_len, ev->name, ev->name_len),
               "name");
    FUZZ_CHECK(back->time_us == ev->time_us, "time");
    FUZZ_CHECK(same_bytes(back->source, back->source_len, ev->source,
                          ev->source_len),
               "source");
    if (ev->type == EVENT_UNIQUE)
        FUZZ_CHECK(same_bytes(back->str, back->str_len, ev->str, ev->str_len),
                   "unique string");
    else
        FUZZ_CHECK(memcmp(&back->value, &ev->value, sizeof(double)) == 0,
                   "value");
    codec_message_destroy(&msg);
    buf_writer_destroy(&out);
}

static void
check_event(json_object *obj)
{
    char msg[128];
    struct event ev;
    enum event_error code;

    memset(msg, 'x', sizeof(msg));
    code = event_from_json(&ev, obj, FUZZ_NOW_US, msg, sizeof(msg));
    FUZZ_CHECK(memchr(msg, '\0', sizeof(msg)) != NULL,
               "message not NUL-terminated");
    if (code != EVENT_OK) {
        FUZZ_CHECK(code >= EVENT_ERR_NOT_OBJECT
                       && code <= EVENT_ERR_UNKNOWN_FIELD,
                   "unknown error code");
        FUZZ_CHECK(msg[0] != '\0', "a rejection without a message");
        return;
    }
    FUZZ_CHECK(event_validate(&ev, FUZZ_NOW_US) == EVENT_OK,
               "event_from_json accepted what event_validate refuses");
    check_bus_round_trip(&ev);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_object *root = jsonrpc_parse_json(data, size);

    if (root == NULL)
        return 0;
    if (json_object_is_type(root, json_type_array)) {
        size_t n = json_object_array_length(root);

        for (size_t i = 0; i < n; i++)
            check_event(json_object_array_get_idx(root, i));
    } else {
        check_event(root);
    }
    json_object_put(root);
    return 0;
}
