/*
 * gauge: the last value per source. For each source the entry with the
 * latest event time wins; at equal times the greater value wins (by a total
 * order on doubles), so fold and merge give the same answer in any order.
 * Answers the per-source values and their min, max and mean.
 *
 * Entries are kept sorted by source bytes, which is also the encoding order:
 *   count varint, then per entry: source string, time_us svarint, value f64
 */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "number.h"
#include "state.h"
#include "xalloc.h"

struct gauge_entry {
    char *source;          /* owned, NUL-terminated, SOURCE_LEN bytes */
    size_t source_len;
    int64_t time_us;
    double value;
};

struct gauge {
    struct gauge_entry *entries;   /* sorted by source */
    size_t count;
    size_t cap;
};

/* 1 if (TIME_A, A) beats (TIME_B, B). */
static int
gauge_newer(int64_t time_a, double a, int64_t time_b, double b)
{
    if (time_a != time_b)
        return time_a > time_b;
    return number_order_key(a) > number_order_key(b);
}

static void *
gauge_create(const struct state_config *config)
{
    (void)config;
    return xcalloc(1, sizeof(struct gauge));
}

static void
gauge_destroy(void *state)
{
    struct gauge *g = state;

    for (size_t i = 0; i < g->count; i++)
        free(g->entries[i].source);
    free(g->entries);
    free(g);
}

static void *
gauge_clone(const void *state)
{
    const struct gauge *g = state;
    struct gauge *c = xcalloc(1, sizeof(*c));

    c->entries = xmalloc(sizeof(*c->entries) * (g->count ? g->count : 1));
    c->cap = g->count;
    c->count = g->count;
    for (size_t i = 0; i < g->count; i++) {
        c->entries[i] = g->entries[i];
        c->entries[i].source = xstrndup(g->entries[i].source,
                                        g->entries[i].source_len);
    }
    return c;
}

/* Sets SOURCE's entry to (TIME_US, VALUE) if that is newer than what the
 * gauge holds, inserting it if the source is new. */
static void
gauge_put(struct gauge *g, const char *source, size_t source_len,
          int64_t time_us, double value)
{
    size_t lo = 0, hi = g->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = buf_compare(g->entries[mid].source,
                                 g->entries[mid].source_len, source,
                                 source_len);

        if (c == 0) {
            struct gauge_entry *e = &g->entries[mid];

            if (gauge_newer(time_us, value, e->time_us, e->value)) {
                e->time_us = time_us;
                e->value = value;
            }
            return;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (g->count == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 4;
        g->entries = xrealloc(g->entries, sizeof(*g->entries) * g->cap);
    }
    memmove(&g->entries[lo + 1], &g->entries[lo],
            sizeof(*g->entries) * (g->count - lo));
    g->entries[lo] = (struct gauge_entry){
        .source = xstrndup(source, source_len),
        .source_len = source_len,
        .time_us = time_us,
        .value = value,
    };
    g->count++;
}

static void
gauge_fold(void *state, const struct event *ev)
{
    gauge_put(state, ev->source, ev->source_len, ev->time_us, ev->value);
}

static int
gauge_merge(void *dst, const void *src)
{
    const struct gauge *s = src;

    for (size_t i = 0; i < s->count; i++)
        gauge_put(dst, s->entries[i].source, s->entries[i].source_len,
                  s->entries[i].time_us, s->entries[i].value);
    return 0;
}

static int
gauge_empty(const void *state)
{
    return ((const struct gauge *)state)->count == 0;
}

static void
gauge_encode(const void *state, struct buf_writer *out)
{
    const struct gauge *g = state;

    buf_put_u8(out, EVENT_GAUGE);
    buf_put_u8(out, STATE_FORMAT_VERSION);
    buf_put_varint(out, g->count);
    for (size_t i = 0; i < g->count; i++) {
        buf_put_string(out, g->entries[i].source, g->entries[i].source_len);
        buf_put_svarint(out, g->entries[i].time_us);
        buf_put_double(out, g->entries[i].value);
    }
}

/* Smallest encoded entry: empty source (1), time (1), value (8). */
#define GAUGE_ENTRY_MIN_BYTES 10

static void *
gauge_decode(struct buf_reader *in, char *err, size_t errlen)
{
    struct gauge *g = NULL;
    uint8_t type, version;
    uint64_t count;

    if (buf_get_u8(in, &type) != 0 || buf_get_u8(in, &version) != 0
        || buf_get_varint(in, &count) != 0)
        goto truncated;
    if (type != EVENT_GAUGE || version != STATE_FORMAT_VERSION) {
        snprintf(err, errlen, "gauge: bad type %u or version %u", type,
                 version);
        return NULL;
    }
    if (count > buf_remaining(in) / GAUGE_ENTRY_MIN_BYTES)
        goto truncated;
    g = xcalloc(1, sizeof(*g));
    g->entries = xcalloc(count ? count : 1, sizeof(*g->entries));
    g->cap = count;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *src;
        size_t len;
        int64_t time_us;
        double value;

        if (buf_get_string(in, &src, &len, EVENT_SOURCE_MAX) != 0
            || buf_get_svarint(in, &time_us) != 0
            || buf_get_double(in, &value) != 0)
            goto truncated;
        if (!event_source_valid((const char *)src, len)
            || !event_value_valid(value)) {
            snprintf(err, errlen, "gauge: entry %zu invalid", (size_t)i);
            goto fail;
        }
        if (i > 0 && buf_compare(g->entries[i - 1].source,
                                      g->entries[i - 1].source_len,
                                      (const char *)src, len) >= 0) {
            snprintf(err, errlen, "gauge: sources not in strict order");
            goto fail;
        }
        g->entries[i] = (struct gauge_entry){
            .source = xstrndup((const char *)src, len),
            .source_len = len,
            .time_us = time_us,
            .value = value,
        };
        g->count++;
    }
    return g;

truncated:
    snprintf(err, errlen, "gauge: truncated or malformed");
fail:
    if (g != NULL)
        gauge_destroy(g);
    return NULL;
}

static struct json_object *
gauge_render(const void *state, const struct state_render_context *ctx)
{
    const struct gauge *g = state;
    struct json_object *o = json_object_new_object();
    struct json_object *sources = json_object_new_object();
    double min = INFINITY, max = -INFINITY;
    long double total = 0;

    (void)ctx;
    for (size_t i = 0; i < g->count; i++) {
        double v = g->entries[i].value;

        json_object_object_add(sources, g->entries[i].source,
                               json_object_new_double(v));
        min = fmin(min, v);
        max = fmax(max, v);
        total += v;
    }
    json_object_object_add(o, "sources", sources);
    if (g->count == 0) {
        json_object_object_add(o, "min", NULL);
        json_object_object_add(o, "max", NULL);
        json_object_object_add(o, "mean", NULL);
    } else {
        json_object_object_add(o, "min", json_object_new_double(min));
        json_object_object_add(o, "max", json_object_new_double(max));
        json_object_object_add(o, "mean",
                               json_object_new_double(
                                   (double)(total / (long double)g->count)));
    }
    return o;
}

const struct state_ops gauge_ops = {
    .type = EVENT_GAUGE,
    .create = gauge_create,
    .destroy = gauge_destroy,
    .clone = gauge_clone,
    .fold = gauge_fold,
    .merge = gauge_merge,
    .empty = gauge_empty,
    .encode = gauge_encode,
    .decode = gauge_decode,
    .render = gauge_render,
};
