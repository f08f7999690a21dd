/*
 * evparse: the streaming decoder of the common events.record request (see
 * evparse.h for the subset). One pass over the body, no tree, no copies:
 *
 *   request {jsonrpc, method, id, params}
 *     params {events, batch}
 *       events [event, ...]  --evparse_event--> struct event, checked as
 *                                                event_from_json checks
 *
 * Every function returns 0 or -1; -1 means "fall back to json-c", with
 * the reason written once, where it was found (evparse_fallback).
 *
 * Numbers must come out bit for bit as json-c makes them: json-c reads a
 * number without '.', 'e' or 'E' as an int64 (event_from_json then casts
 * it to double) and any other with strtod. So integers go through int64
 * and a cast, and decimals through strtod, or through Clinger's fast path
 * where that is provably the same correctly rounded result: a mantissa of
 * at most 2^53 times or divided by an exact power of ten up to 1e22 is one
 * IEEE operation on exact operands.
 */
#include "evparse.h"

#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

/* Integers of at most 18 digits fit an int64 whatever they are, so json-c
 * never saturates them (event_from_json refuses saturated ones). */
#define EVPARSE_INT_DIGITS_MAX 18
/* Clinger's fast path: a mantissa that is an exact double ... */
#define EVPARSE_EXACT_MANTISSA_MAX (1ULL << 53)
/* ... and a power of ten that is one too. */
#define EVPARSE_EXACT_POW10_MAX 22
/* Significant digits a uint64 mantissa holds without overflow. */
#define EVPARSE_MANTISSA_DIGITS_MAX 19
/* Exponent digits read on the fast path; longer ones go to strtod. */
#define EVPARSE_EXPONENT_DIGITS_MAX 4
#define EVPARSE_EVENTS_INITIAL 64

/* The fast path is exact only where doubles are evaluated as doubles. */
#if FLT_EVAL_METHOD == 0
#define EVPARSE_CLINGER 1
#else
#define EVPARSE_CLINGER 0
#endif

enum evparse_kind {
    EVPARSE_ABSENT = 0,
    EVPARSE_STRING,
    EVPARSE_INT,       /* a number json-c reads as an integer */
    EVPARSE_DECIMAL,   /* a number with '.', 'e' or 'E': json-c's double */
    EVPARSE_NULL,
};

/* One scalar value: a string's bytes between the quotes, or a number's
 * text. */
struct evparse_token {
    enum evparse_kind kind;
    const char *text;
    size_t len;
    int non_ascii;     /* a string with a byte >= 0x80 */
};

struct evparse_scanner {
    const char *p, *end;
    char *err;
    size_t errlen;
};

/* A member name of the subset. */
struct evparse_name {
    const char *text;
    size_t len;
};
#define EVPARSE_NAME(s) { .text = (s), .len = sizeof(s) - 1 }

enum {
    EVPARSE_REQ_JSONRPC, EVPARSE_REQ_METHOD, EVPARSE_REQ_PARAMS,
    EVPARSE_REQ_ID, EVPARSE_REQ_MEMBERS
};
static const struct evparse_name evparse_request_names[EVPARSE_REQ_MEMBERS] = {
    [EVPARSE_REQ_JSONRPC] = EVPARSE_NAME("jsonrpc"),
    [EVPARSE_REQ_METHOD] = EVPARSE_NAME("method"),
    [EVPARSE_REQ_PARAMS] = EVPARSE_NAME("params"),
    [EVPARSE_REQ_ID] = EVPARSE_NAME("id"),
};

enum {
    EVPARSE_PARAMS_EVENTS, EVPARSE_PARAMS_BATCH, EVPARSE_PARAMS_MEMBERS
};
static const struct evparse_name
    evparse_params_names[EVPARSE_PARAMS_MEMBERS] = {
    [EVPARSE_PARAMS_EVENTS] = EVPARSE_NAME("events"),
    [EVPARSE_PARAMS_BATCH] = EVPARSE_NAME("batch"),
};

enum {
    EVPARSE_EV_NAME, EVPARSE_EV_TYPE, EVPARSE_EV_VALUE, EVPARSE_EV_TIME,
    EVPARSE_EV_SOURCE, EVPARSE_EV_MEMBERS
};
static const struct evparse_name evparse_event_names[EVPARSE_EV_MEMBERS] = {
    [EVPARSE_EV_NAME] = EVPARSE_NAME("name"),
    [EVPARSE_EV_TYPE] = EVPARSE_NAME("type"),
    [EVPARSE_EV_VALUE] = EVPARSE_NAME("value"),
    [EVPARSE_EV_TIME] = EVPARSE_NAME("time"),
    [EVPARSE_EV_SOURCE] = EVPARSE_NAME("source"),
};

static const double evparse_pow10[EVPARSE_EXACT_POW10_MAX + 1] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* ---- scanning ----------------------------------------------------------- */

static int
evparse_fallback(struct evparse_scanner *s, const char *why)
{
    if (s->err != NULL && s->errlen > 0)
        snprintf(s->err, s->errlen, "%s", why);
    return -1;
}

static int
evparse_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Skips JSON whitespace; returns the next byte (not consumed), or -1 at
 * the end of the body. */
static int
evparse_peek(struct evparse_scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r'
                             || *s->p == '\t'))
        s->p++;
    return s->p < s->end ? (unsigned char)*s->p : -1;
}

static int
evparse_token_is(const struct evparse_token *tok, const char *text,
                 size_t len)
{
    return tok->kind == EVPARSE_STRING && tok->len == len
           && memcmp(tok->text, text, len) == 0;
}

/* A string at S->p (its opening quote) without escapes or control
 * characters. */
static int
evparse_string(struct evparse_scanner *s, struct evparse_token *tok)
{
    const char *start = s->p + 1;
    int non_ascii = 0;

    for (const char *q = start; q < s->end; q++) {
        unsigned char c = (unsigned char)*q;

        if (c == '"') {
            tok->kind = EVPARSE_STRING;
            tok->text = start;
            tok->len = (size_t)(q - start);
            tok->non_ascii = non_ascii;
            s->p = q + 1;
            return 0;
        }
        if (c == '\\')
            return evparse_fallback(s, "escape in a string");
        if (c < 0x20)
            return evparse_fallback(s, "control character in a string");
        non_ascii |= c >= 0x80;
    }
    return evparse_fallback(s, "unterminated string");
}

/* Consumes digits; returns how many. */
static size_t
evparse_digits(struct evparse_scanner *s, const char **q)
{
    const char *start = *q;

    while (*q < s->end && evparse_is_digit(**q))
        (*q)++;
    return (size_t)(*q - start);
}

/* A number by the JSON grammar at S->p:
 * -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int
evparse_number(struct evparse_scanner *s, struct evparse_token *tok)
{
    const char *q = s->p;
    int decimal = 0;

    if (q < s->end && *q == '-')
        q++;
    if (q < s->end && *q == '0')
        q++;
    else if (evparse_digits(s, &q) == 0)
        return evparse_fallback(s, "malformed number");
    if (q < s->end && *q == '.') {
        decimal = 1;
        q++;
        if (evparse_digits(s, &q) == 0)
            return evparse_fallback(s, "malformed number");
    }
    if (q < s->end && (*q == 'e' || *q == 'E')) {
        decimal = 1;
        q++;
        if (q < s->end && (*q == '+' || *q == '-'))
            q++;
        if (evparse_digits(s, &q) == 0)
            return evparse_fallback(s, "malformed number");
    }
    tok->kind = decimal ? EVPARSE_DECIMAL : EVPARSE_INT;
    tok->text = s->p;
    tok->len = (size_t)(q - s->p);
    tok->non_ascii = 0;
    s->p = q;
    return 0;
}

/* A string, a number or null; anything else falls back. */
static int
evparse_scalar(struct evparse_scanner *s, struct evparse_token *tok)
{
    static const char null_text[] = "null";
    int c = evparse_peek(s);

    if (c == '"')
        return evparse_string(s, tok);
    if (c == '-' || evparse_is_digit((char)c))
        return evparse_number(s, tok);
    if (c == 'n' && (size_t)(s->end - s->p) >= sizeof(null_text) - 1
        && memcmp(s->p, null_text, sizeof(null_text) - 1) == 0) {
        s->p += sizeof(null_text) - 1;
        tok->kind = EVPARSE_NULL;
        return 0;
    }
    if (c == '{' || c == '[')
        return evparse_fallback(s, "nested value where a scalar is expected");
    return evparse_fallback(s, "unexpected value");
}

/* Consumes OPEN; 1 when the object or array has members (or elements),
 * 0 when it is empty (its CLOSE consumed too), -1 if OPEN is not next. */
static int
evparse_open(struct evparse_scanner *s, char open, char close)
{
    if (evparse_peek(s) != open)
        return evparse_fallback(s, open == '{' ? "expected an object"
                                               : "expected an array");
    s->p++;
    if (evparse_peek(s) == close) {
        s->p++;
        return 0;
    }
    return 1;
}

/* After a member or element: 1 if a ',' follows (consumed), 0 at CLOSE
 * (consumed), else -1. */
static int
evparse_more(struct evparse_scanner *s, char close)
{
    int c = evparse_peek(s);

    if (c == ',') {
        s->p++;
        return 1;
    }
    if (c == close) {
        s->p++;
        return 0;
    }
    return evparse_fallback(s, "expected ',' or the end of an object or "
                               "array");
}

/* Reads a member name and its ':' and finds the name among the N NAMES,
 * marking it in *SEEN. Its index, or -1 for a name unknown or repeated. */
static int
evparse_member(struct evparse_scanner *s, const struct evparse_name *names,
               int n, unsigned *seen)
{
    struct evparse_token key;

    if (evparse_peek(s) != '"')
        return evparse_fallback(s, "expected a member name");
    if (evparse_string(s, &key) != 0)
        return -1;
    for (int i = 0; i < n; i++) {
        if (!evparse_token_is(&key, names[i].text, names[i].len))
            continue;
        if (*seen & (1u << i))
            return evparse_fallback(s, "repeated member");
        *seen |= 1u << i;
        if (evparse_peek(s) != ':')
            return evparse_fallback(s, "expected ':'");
        s->p++;
        return i;
    }
    return evparse_fallback(s, "unknown member");
}

/* ---- numbers ------------------------------------------------------------ */

/* An integer token of at most 18 digits into *OUT, as json-c's int64. */
static int
evparse_int(struct evparse_scanner *s, const struct evparse_token *tok,
            int64_t *out)
{
    const char *q = tok->text, *end = tok->text + tok->len;
    int negative = *q == '-';
    int64_t v = 0;

    if (negative)
        q++;
    if (end - q > EVPARSE_INT_DIGITS_MAX)
        return evparse_fallback(s, "integer of more than 18 digits");
    for (; q < end; q++)
        v = v * 10 + (*q - '0');
    *out = negative ? -v : v;
    return 0;
}

/* A decimal token by Clinger's fast path into *OUT; -1 when it does not
 * apply (the caller then uses strtod). */
static int
evparse_decimal_exact(const struct evparse_token *tok, double *out)
{
    const char *q = tok->text, *end = tok->text + tok->len;
    int negative = *q == '-', exp_negative = 0, digits = 0;
    uint64_t mantissa = 0;
    long exponent = 0, scale = 0;
    size_t exp_digits = 0;
    double v;

    if (!EVPARSE_CLINGER)
        return -1;
    if (negative)
        q++;
    for (; q < end && *q != 'e' && *q != 'E'; q++) {
        if (*q == '.') {
            scale = -1;   /* counting fraction digits from here */
            continue;
        }
        if (scale < 0)
            scale--;
        if (mantissa == 0 && *q == '0')
            continue;     /* a leading zero: not significant */
        if (++digits > EVPARSE_MANTISSA_DIGITS_MAX)
            return -1;
        mantissa = mantissa * 10 + (uint64_t)(*q - '0');
    }
    scale = scale < 0 ? scale + 1 : 0;   /* minus the fraction digits */
    if (q < end) {        /* the exponent */
        q++;
        if (*q == '+' || *q == '-')
            exp_negative = *q++ == '-';
        for (; q < end; q++, exp_digits++) {
            if (exp_digits == EVPARSE_EXPONENT_DIGITS_MAX)
                return -1;
            exponent = exponent * 10 + (*q - '0');
        }
    }
    scale += exp_negative ? -exponent : exponent;
    if (mantissa == 0) {
        v = 0.0;
    } else if (mantissa > EVPARSE_EXACT_MANTISSA_MAX
               || scale < -EVPARSE_EXACT_POW10_MAX
               || scale > EVPARSE_EXACT_POW10_MAX) {
        return -1;
    } else if (scale < 0) {
        v = (double)mantissa / evparse_pow10[-scale];
    } else {
        v = (double)mantissa * evparse_pow10[scale];
    }
    *out = negative ? -v : v;
    return 0;
}

/* A number token into *OUT exactly as json_object_get_double gives it for
 * json-c's object of the same text. */
static int
evparse_double(struct evparse_scanner *s, const struct evparse_token *tok,
               double *out)
{
    char text[EVPARSE_NUMBER_MAX + 1], *end;
    int64_t i;

    if (tok->kind == EVPARSE_INT) {
        if (evparse_int(s, tok, &i) != 0)
            return -1;
        *out = (double)i;
        return 0;
    }
    if (tok->kind != EVPARSE_DECIMAL)
        return evparse_fallback(s, "expected a number");
    if (evparse_decimal_exact(tok, out) == 0)
        return 0;
    if (tok->len > EVPARSE_NUMBER_MAX)
        return evparse_fallback(s, "number too long");
    memcpy(text, tok->text, tok->len);
    text[tok->len] = '\0';
    *out = strtod(text, &end);    /* what json-c calls */
    if (end != text + tok->len)
        return evparse_fallback(s, "number strtod does not read whole");
    return 0;
}

/* ---- the request -------------------------------------------------------- */

/* Fills EV from the members M of one event, with event_from_json's
 * checks but for the time against the clock. */
static int
evparse_event_fill(struct evparse_scanner *s, struct event *ev,
                   const struct evparse_token *m)
{
    const struct evparse_token *name = &m[EVPARSE_EV_NAME];
    const struct evparse_token *type = &m[EVPARSE_EV_TYPE];
    const struct evparse_token *value = &m[EVPARSE_EV_VALUE];
    const struct evparse_token *when = &m[EVPARSE_EV_TIME];
    const struct evparse_token *source = &m[EVPARSE_EV_SOURCE];
    double seconds;

    memset(ev, 0, sizeof(*ev));
    ev->source = "";
    if (name->kind != EVPARSE_STRING
        || !event_name_valid(name->text, name->len))
        return evparse_fallback(s, "invalid event name");
    ev->name = name->text;
    ev->name_len = name->len;
    if (type->kind != EVPARSE_STRING
        || event_type_parse(type->text, type->len, &ev->type) != 0)
        return evparse_fallback(s, "invalid event type");
    if (ev->type == EVENT_UNIQUE) {
        if (value->kind != EVPARSE_STRING
            || !event_string_valid(value->text, value->len))
            return evparse_fallback(s, "invalid event value");
        ev->str = value->text;
        ev->str_len = value->len;
    } else {
        if (value->kind != EVPARSE_INT && value->kind != EVPARSE_DECIMAL)
            return evparse_fallback(s, "invalid event value");
        if (evparse_double(s, value, &ev->value) != 0)
            return -1;
        if (!event_value_valid(ev->value))
            return evparse_fallback(s, "invalid event value");
    }
    if (when->kind == EVPARSE_ABSENT) {
        ev->time_us = EVPARSE_TIME_ABSENT;
    } else {
        if (when->kind != EVPARSE_INT && when->kind != EVPARSE_DECIMAL)
            return evparse_fallback(s, "invalid event time");
        if (evparse_double(s, when, &seconds) != 0)
            return -1;
        if (event_time_from_seconds(seconds, &ev->time_us) != 0)
            return evparse_fallback(s, "invalid event time");
    }
    if (source->kind != EVPARSE_ABSENT) {
        if (source->kind != EVPARSE_STRING
            || !event_source_valid(source->text, source->len))
            return evparse_fallback(s, "invalid event source");
        ev->source = source->text;
        ev->source_len = source->len;
    }
    return 0;
}

static int
evparse_event(struct evparse_scanner *s, struct event *ev)
{
    struct evparse_token m[EVPARSE_EV_MEMBERS];
    unsigned seen = 0;
    int more = evparse_open(s, '{', '}');

    memset(m, 0, sizeof(m));
    while (more > 0) {
        int i = evparse_member(s, evparse_event_names, EVPARSE_EV_MEMBERS,
                               &seen);

        if (i < 0 || evparse_scalar(s, &m[i]) != 0)
            return -1;
        more = evparse_more(s, '}');
    }
    if (more < 0)
        return -1;
    return evparse_event_fill(s, ev, m);
}

static int
evparse_events(struct evparse_scanner *s, struct evparse_record *rec)
{
    size_t cap = 0;
    int more = evparse_open(s, '[', ']');

    if (more == 0)
        return evparse_fallback(s, "no events");
    while (more > 0) {
        if (rec->count == cap) {
            cap = cap > 0 ? cap * 2 : EVPARSE_EVENTS_INITIAL;
            rec->events = xrealloc(rec->events, cap * sizeof(*rec->events));
        }
        if (evparse_event(s, &rec->events[rec->count]) != 0)
            return -1;
        rec->count++;
        more = evparse_more(s, ']');
    }
    return more;
}

static int
evparse_params(struct evparse_scanner *s, struct evparse_record *rec)
{
    struct evparse_token batch = { .kind = EVPARSE_ABSENT };
    unsigned seen = 0;
    int more = evparse_open(s, '{', '}');

    while (more > 0) {
        int i = evparse_member(s, evparse_params_names, EVPARSE_PARAMS_MEMBERS,
                               &seen);

        if (i < 0)
            return -1;
        if ((i == EVPARSE_PARAMS_EVENTS ? evparse_events(s, rec)
                                : evparse_scalar(s, &batch)) != 0)
            return -1;
        more = evparse_more(s, '}');
    }
    if (more < 0)
        return -1;
    if (!(seen & (1u << EVPARSE_PARAMS_EVENTS)))
        return evparse_fallback(s, "no events");
    if (batch.kind == EVPARSE_ABSENT)
        return 0;
    /* record.c's rule for a batch id: 1 to 200 bytes */
    if (batch.kind != EVPARSE_STRING || batch.len == 0
        || batch.len > EVENT_NAME_MAX
        || (batch.non_ascii && !event_string_valid(batch.text, batch.len)))
        return evparse_fallback(s, "invalid batch");
    rec->batch = batch.text;
    rec->batch_len = batch.len;
    return 0;
}

/* The request's id as json-c's object of the same text; NULL for null. */
static int
evparse_id(struct evparse_scanner *s, const struct evparse_token *tok,
           json_object **id)
{
    int64_t i;

    *id = NULL;
    switch (tok->kind) {
    case EVPARSE_NULL:
        return 0;
    case EVPARSE_STRING:
        if (tok->non_ascii)
            return evparse_fallback(s, "id not ASCII");
        *id = json_object_new_string_len(tok->text, (int)tok->len);
        return 0;
    case EVPARSE_INT:
        if (evparse_int(s, tok, &i) != 0)
            return -1;
        *id = json_object_new_int64(i);
        return 0;
    case EVPARSE_ABSENT:
        return evparse_fallback(s, "notification");
    default:
        return evparse_fallback(s, "fractional id");
    }
}

static int
evparse_request(struct evparse_scanner *s, struct evparse_record *rec)
{
    static const char version[] = "2.0", method[] = EVPARSE_METHOD;
    struct evparse_token m[EVPARSE_REQ_MEMBERS];
    unsigned seen = 0;
    int more = evparse_open(s, '{', '}');

    memset(m, 0, sizeof(m));
    while (more > 0) {
        int i = evparse_member(s, evparse_request_names, EVPARSE_REQ_MEMBERS,
                               &seen);

        if (i < 0)
            return -1;
        if ((i == EVPARSE_REQ_PARAMS ? evparse_params(s, rec)
                                 : evparse_scalar(s, &m[i])) != 0)
            return -1;
        more = evparse_more(s, '}');
    }
    if (more < 0)
        return -1;
    if (evparse_peek(s) != -1)
        return evparse_fallback(s, "data after the request");
    if (!evparse_token_is(&m[EVPARSE_REQ_JSONRPC], version,
                          sizeof(version) - 1))
        return evparse_fallback(s, "jsonrpc is not \"2.0\"");
    if (!evparse_token_is(&m[EVPARSE_REQ_METHOD], method, sizeof(method) - 1))
        return evparse_fallback(s, "not events.record");
    if (!(seen & (1u << EVPARSE_REQ_PARAMS)))
        return evparse_fallback(s, "no params");
    return evparse_id(s, &m[EVPARSE_REQ_ID], &rec->id);
}

/* ---- public ------------------------------------------------------------- */

int
evparse_record_parse(struct evparse_record *rec, const char *body,
                     size_t len, char *err, size_t errlen)
{
    struct evparse_scanner s = {
        .p = body, .end = body + len, .err = err, .errlen = errlen,
    };

    memset(rec, 0, sizeof(*rec));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    /* jsonrpc's json-c path refuses bodies this long */
    if (len > INT_MAX - 1) {
        evparse_fallback(&s, "body too large");
        return -1;
    }
    if (evparse_request(&s, rec) != 0) {
        evparse_record_destroy(rec);
        return -1;
    }
    return 0;
}

int
evparse_record_stamp(struct evparse_record *rec, int64_t now_us)
{
    for (size_t i = 0; i < rec->count; i++) {
        struct event *ev = &rec->events[i];

        if (ev->time_us == EVPARSE_TIME_ABSENT)
            ev->time_us = now_us;
        if (event_check_time(ev->time_us, now_us) != EVENT_OK)
            return -1;
    }
    return 0;
}

void
evparse_record_destroy(struct evparse_record *rec)
{
    free(rec->events);
    json_object_put(rec->id);
    memset(rec, 0, sizeof(*rec));
}
