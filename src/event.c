/*
 * event: type names, the validity rules of event.h, and the decoding of one
 * events.record element from json-c.
 *
 *   json object --event_from_json--> struct event (borrowed strings)
 *                                        |
 *                              event_validate (name, type, value,
 *                              source, time against now)
 */
#include "event.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "window.h"

static const char *const event_type_names[] = {
    [EVENT_COUNTER] = "counter",
    [EVENT_GAUGE] = "gauge",
    [EVENT_PERCENTILE] = "percentile",
    [EVENT_UNIQUE] = "unique",
    [EVENT_RECENT] = "recent",
};

const char *
event_type_name(enum event_type type)
{
    if (type < EVENT_TYPE_MIN || type > EVENT_TYPE_MAX)
        return NULL;
    return event_type_names[type];
}

int
event_type_parse(const char *s, size_t len, enum event_type *type)
{
    for (int t = EVENT_TYPE_MIN; t <= EVENT_TYPE_MAX; t++) {
        const char *name = event_type_names[t];

        if (strlen(name) == len && memcmp(name, s, len) == 0) {
            *type = (enum event_type)t;
            return 0;
        }
    }
    return -1;
}

int
event_name_char_valid(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':'
           || c == '/' || c == '-';
}

int
event_name_valid(const char *name, size_t len)
{
    if (len < 1 || len > EVENT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!event_name_char_valid((unsigned char)name[i]))
            return 0;
    return 1;
}

/* Length of the UTF-8 sequence starting at S[0], or 0 if it is not a valid,
 * shortest-form encoding of a scalar value (no surrogates, <= U+10FFFF). */
static size_t
event_utf8_sequence(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000)
        || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return n;
}

/* Valid UTF-8 of at most MAX bytes; control characters refused if
 * NO_CONTROL. */
static int
event_text_valid(const char *text, size_t len, size_t min, size_t max,
                 int no_control)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;

    if (len < min || len > max)
        return 0;
    while (i < len) {
        size_t n = event_utf8_sequence(s + i, len - i);

        if (n == 0)
            return 0;
        if (no_control && n == 1 && (s[i] < 0x20 || s[i] == 0x7f))
            return 0;
        i += n;
    }
    return 1;
}

int
event_source_valid(const char *source, size_t len)
{
    return event_text_valid(source, len, 0, EVENT_SOURCE_MAX, 1);
}

int
event_string_valid(const char *s, size_t len)
{
    return event_text_valid(s, len, 1, EVENT_STRING_MAX, 0);
}

int
event_value_valid(double v)
{
    return isfinite(v) && fabs(v) <= EVENT_VALUE_MAX;
}

enum event_error
event_check_time(int64_t time_us, int64_t now_us)
{
    if (time_us < window_oldest_accepted_us(now_us))
        return EVENT_ERR_TOO_OLD;
    if (time_us > now_us + EVENT_FUTURE_LIMIT_US)
        return EVENT_ERR_TOO_NEW;
    return EVENT_OK;
}

int
event_time_from_seconds(double seconds, int64_t *time_us)
{
    if (!isfinite(seconds) || seconds < 0
        || seconds >= (double)EVENT_TIME_MAX_SECONDS)
        return -1;
    *time_us = llround(seconds * (double)EVENT_US_PER_SECOND);
    return 0;
}

enum event_error
event_validate(const struct event *ev, int64_t now_us)
{
    if (event_type_name(ev->type) == NULL)
        return EVENT_ERR_TYPE;
    if (!event_name_valid(ev->name, ev->name_len))
        return EVENT_ERR_NAME;
    if (ev->type == EVENT_UNIQUE) {
        if (!event_string_valid(ev->str, ev->str_len))
            return EVENT_ERR_VALUE;
    } else if (!event_value_valid(ev->value)) {
        return EVENT_ERR_VALUE;
    }
    if (!event_source_valid(ev->source, ev->source_len))
        return EVENT_ERR_SOURCE;
    return event_check_time(ev->time_us, now_us);
}

/* ---------------------------------------------------------------------- */
/* JSON                                                                    */
/* ---------------------------------------------------------------------- */

static enum event_error
event_fail(enum event_error code, char *msg, size_t msglen, const char *text)
{
    snprintf(msg, msglen, "%s", text);
    return code;
}

/* 1 if OBJ is an integer json-c could not hold (it saturates those to the
 * int64 or uint64 limits instead of failing). */
static int
event_json_int_saturated(struct json_object *obj)
{
    if (!json_object_is_type(obj, json_type_int))
        return 0;
    return json_object_get_int64(obj) == INT64_MIN
           || json_object_get_uint64(obj) == UINT64_MAX;
}

/* The fields an event object may have. */
static int
event_known_field(const char *key)
{
    return strcmp(key, "name") == 0 || strcmp(key, "type") == 0
           || strcmp(key, "value") == 0 || strcmp(key, "time") == 0
           || strcmp(key, "source") == 0;
}

enum event_error
event_from_json(struct event *ev, struct json_object *obj, int64_t now_us,
                char *msg, size_t msglen)
{
    struct json_object *name, *type, *value, *time, *source;
    enum event_error err;

    memset(ev, 0, sizeof(*ev));
    ev->source = "";
    msg[0] = '\0';
    if (!json_object_is_type(obj, json_type_object))
        return event_fail(EVENT_ERR_NOT_OBJECT, msg, msglen,
                          "event must be an object");
    json_object_object_foreach(obj, key, unused) {
        (void)unused;
        if (!event_known_field(key)) {
            snprintf(msg, msglen, "unknown field \"%.64s\"", key);
            return EVENT_ERR_UNKNOWN_FIELD;
        }
    }

    if (!json_object_object_get_ex(obj, "name", &name)
        || !json_object_is_type(name, json_type_string))
        return event_fail(EVENT_ERR_NAME, msg, msglen,
                          "name must be a string");
    ev->name = json_object_get_string(name);
    ev->name_len = (size_t)json_object_get_string_len(name);
    if (!event_name_valid(ev->name, ev->name_len))
        return event_fail(EVENT_ERR_NAME, msg, msglen,
                          "name must be 1 to 200 characters of "
                          "[A-Za-z0-9._:/-]");

    if (!json_object_object_get_ex(obj, "type", &type)
        || !json_object_is_type(type, json_type_string)
        || event_type_parse(json_object_get_string(type),
                            (size_t)json_object_get_string_len(type),
                            &ev->type) != 0)
        return event_fail(EVENT_ERR_TYPE, msg, msglen,
                          "type must be one of counter, gauge, percentile, "
                          "unique, recent");

    if (!json_object_object_get_ex(obj, "value", &value))
        return event_fail(EVENT_ERR_VALUE, msg, msglen,
                          "value is required");
    if (ev->type == EVENT_UNIQUE) {
        if (!json_object_is_type(value, json_type_string))
            return event_fail(EVENT_ERR_VALUE, msg, msglen,
                              "value of a unique event must be a string");
        ev->str = json_object_get_string(value);
        ev->str_len = (size_t)json_object_get_string_len(value);
        if (!event_string_valid(ev->str, ev->str_len))
            return event_fail(EVENT_ERR_VALUE, msg, msglen,
                              "value must be 1 to 1024 bytes of UTF-8");
    } else {
        if (!json_object_is_type(value, json_type_double)
            && !json_object_is_type(value, json_type_int))
            return event_fail(EVENT_ERR_VALUE, msg, msglen,
                              "value must be a number");
        ev->value = json_object_get_double(value);
        if (!event_value_valid(ev->value) || event_json_int_saturated(value))
            return event_fail(EVENT_ERR_VALUE, msg, msglen,
                              "value must be finite with magnitude at most "
                              "1e100");
    }

    if (json_object_object_get_ex(obj, "time", &time)) {
        if ((!json_object_is_type(time, json_type_double)
             && !json_object_is_type(time, json_type_int))
            || event_json_int_saturated(time)
            || event_time_from_seconds(json_object_get_double(time),
                                       &ev->time_us) != 0)
            return event_fail(EVENT_ERR_TIME, msg, msglen,
                              "time must be seconds since the epoch");
    } else {
        ev->time_us = now_us;
    }

    if (json_object_object_get_ex(obj, "source", &source)) {
        if (!json_object_is_type(source, json_type_string))
            return event_fail(EVENT_ERR_SOURCE, msg, msglen,
                              "source must be a string");
        ev->source = json_object_get_string(source);
        ev->source_len = (size_t)json_object_get_string_len(source);
        if (!event_source_valid(ev->source, ev->source_len))
            return event_fail(EVENT_ERR_SOURCE, msg, msglen,
                              "source must be at most 200 bytes of UTF-8 "
                              "without control characters");
    }

    err = event_check_time(ev->time_us, now_us);
    if (err == EVENT_ERR_TOO_OLD)
        return event_fail(err, msg, msglen, "time is older than the longest "
                          "retained window (1d)");
    if (err == EVENT_ERR_TOO_NEW)
        return event_fail(err, msg, msglen, "time is more than 5 minutes in "
                          "the future");
    return EVENT_OK;
}
