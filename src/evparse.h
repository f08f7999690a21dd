/*
 * evparse: a streaming decoder for the common events.record request, so
 * the frontend need not build a json-c tree of a 1,000-event body. It
 * accepts only a "fast subset" and says "fall back" for anything else;
 * the json-c path (jsonrpc.c, event_from_json) then handles the body and
 * words every error answer, so this module never produces one.
 *
 *   body --evparse_record_parse--> struct evparse_record
 *          |                         events[] (strings borrowed from body)
 *          |                         batch id (borrowed), request id
 *          |   --evparse_record_stamp(now)--> times checked, absent = now
 *          +--> -1: fall back to json-c
 *
 * The subset: one request object (not a batch array)
 *
 *   {"jsonrpc":"2.0", "method":"events.record", "id":ID,
 *    "params":{"events":[EVENT, ...], "batch":"..."}}       (batch optional)
 *
 * members in any order, whitespace wherever JSON allows it, where
 *   - no member is unknown or repeated, at any level;
 *   - no string has a backslash escape (decoded strings borrow the body);
 *   - ID is a string of printable ASCII, an integer of at most 18 digits
 *     or null (a notification, a fractional id: fall back);
 *   - numbers are integers of at most 18 digits or decimals of at most
 *     EVPARSE_NUMBER_MAX characters, converted exactly as json-c does;
 *   - events is not empty, batch is 1..200 bytes of UTF-8, and every event
 *     is valid by the rules event_from_json applies, but for its time
 *     against the clock (evparse_record_stamp does that part).
 * A body the subset accepts is one the json-c path decodes to the same
 * call and the same events, field for field (tests/test_evparse.c and
 * tests/fuzz/fuzz_evparse.c check that).
 */
#ifndef TALLY_EVPARSE_H
#define TALLY_EVPARSE_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "event.h"

#define EVPARSE_METHOD "events.record"
/* Nesting of an accepted body: request, params, events, event. A caller
 * whose tree parser allows less must not use the fast path. */
#define EVPARSE_DEPTH 4
/* Longest decimal number (with a '.' or an exponent) decoded here. */
#define EVPARSE_NUMBER_MAX 64
/* The time_us of an event sent without a time, until stamped. */
#define EVPARSE_TIME_ABSENT (-1)
#define EVPARSE_REASON_MAX 96

struct evparse_record {
    struct event *events;  /* owned array of COUNT; strings borrow from the
                              body (source "" when absent) */
    size_t count;
    const char *batch;     /* borrowed from the body; NULL when absent */
    size_t batch_len;
    json_object *id;       /* owned; NULL for an id of null */
};

/* Decodes BODY (LEN bytes, no NUL needed) into REC when it is in the fast
 * subset: returns 0, and REC (owned by the caller: evparse_record_destroy)
 * borrows from BODY, which must outlive it. Otherwise returns -1 with
 * the reason to fall back in ERR (when ERR is not NULL) and REC empty. */
int evparse_record_parse(struct evparse_record *rec, const char *body,
                         size_t len, char *err, size_t errlen);

/* Gives every event of REC sent without a time NOW_US, and checks each
 * time against NOW_US (event_check_time). 0, or -1 when one is too old or
 * too new: the caller then takes the json-c path, which words that
 * rejection. Call once. */
int evparse_record_stamp(struct evparse_record *rec, int64_t now_us);

/* Frees what REC owns (not the body) and empties it. */
void evparse_record_destroy(struct evparse_record *rec);

#endif
