/*
 * event: what a client records, and the rules that make one valid.
 *
 *   name    1..200 bytes of [A-Za-z0-9._:/-]
 *   type    counter | gauge | percentile | unique | recent
 *   value   finite double with |value| <= EVENT_VALUE_MAX; for `unique`, a
 *           string of 1..EVENT_STRING_MAX bytes of valid UTF-8
 *   time    event time in seconds since the epoch (fractional allowed),
 *           kept as integer microseconds; defaults to the time of receipt
 *   source  0..200 bytes of valid UTF-8 without control characters;
 *           absent means ""
 *
 * An event only borrows its strings: they point into the request or bus
 * message it came from and live as long as that buffer.
 */
#ifndef TALLY_EVENT_H
#define TALLY_EVENT_H

#include <stddef.h>
#include <stdint.h>

struct json_object;

enum event_type {
    EVENT_COUNTER = 1,
    EVENT_GAUGE = 2,
    EVENT_PERCENTILE = 3,
    EVENT_UNIQUE = 4,
    EVENT_RECENT = 5,
};
#define EVENT_TYPE_MIN EVENT_COUNTER
#define EVENT_TYPE_MAX EVENT_RECENT

#define EVENT_NAME_MAX 200
#define EVENT_SOURCE_MAX 200
#define EVENT_STRING_MAX 1024
#define EVENT_VALUE_MAX 1e100
#define EVENT_US_PER_SECOND 1000000LL
/* Accepted event times: not more than 5 minutes ahead of the receiver's
 * clock, and not older than the longest retained window (window.h). */
#define EVENT_FUTURE_LIMIT_US (300 * EVENT_US_PER_SECOND)
/* Event times lie in [0, EVENT_TIME_MAX_US): before the year 10000. */
#define EVENT_TIME_MAX_SECONDS 253402300800LL
#define EVENT_TIME_MAX_US (EVENT_TIME_MAX_SECONDS * EVENT_US_PER_SECOND)

struct event {
    enum event_type type;
    const char *name;          /* borrowed, not NUL-terminated */
    size_t name_len;
    double value;              /* every type but unique */
    const char *str;           /* unique only; borrowed */
    size_t str_len;
    int64_t time_us;
    const char *source;        /* borrowed; "" when absent */
    size_t source_len;
};

/* Per-event rejection reasons. The numbers are the public application error
 * codes of schema/errors.md; never renumber. */
enum event_error {
    EVENT_OK = 0,
    EVENT_ERR_NOT_OBJECT = 1001,
    EVENT_ERR_NAME = 1002,
    EVENT_ERR_TYPE = 1003,
    EVENT_ERR_VALUE = 1004,
    EVENT_ERR_TIME = 1005,
    EVENT_ERR_TOO_OLD = 1006,
    EVENT_ERR_TOO_NEW = 1007,
    EVENT_ERR_SOURCE = 1008,
    EVENT_ERR_UNKNOWN_FIELD = 1009,
    EVENT_ERR_TYPE_CONFLICT = 1010,
};

/* "counter" etc.; NULL for an invalid type. Static string. */
const char *event_type_name(enum event_type type);
/* 0 and *TYPE set, or -1 if S (LEN bytes) names no type. */
int event_type_parse(const char *s, size_t len, enum event_type *type);

/* 1 if valid, else 0. */
int event_name_valid(const char *name, size_t len);
int event_name_char_valid(unsigned char c);      /* [A-Za-z0-9._:/-] */
int event_source_valid(const char *source, size_t len);
int event_string_valid(const char *s, size_t len);   /* unique values */
int event_value_valid(double v);

/* Checks the event time against NOW_US (receiver's clock): EVENT_OK,
 * EVENT_ERR_TOO_OLD or EVENT_ERR_TOO_NEW. */
enum event_error event_check_time(int64_t time_us, int64_t now_us);

/* Converts seconds since the epoch (finite, not negative, below year
 * 10000) to microseconds. 0, or -1 if out of range. */
int event_time_from_seconds(double seconds, int64_t *time_us);

/* Checks every field of EV (type, name, value, source, time against
 * NOW_US). EVENT_OK or the first problem found. */
enum event_error event_validate(const struct event *ev, int64_t now_us);

/* Fills EV from one element of an events.record "events" array, borrowing
 * strings from OBJ (valid while OBJ lives), and validates it. A missing
 * time becomes NOW_US. On error returns the reason and writes a message for
 * the client into MSG (always NUL-terminated). */
enum event_error event_from_json(struct event *ev, struct json_object *obj,
                                 int64_t now_us, char *msg, size_t msglen);

#endif
