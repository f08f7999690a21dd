/*
 * gauge: the last value per source. For each source the entry with the
 * latest event time wins; at equal times the greater value wins (by a total
 * order on doubles), so fold and merge give the same answer in any order.
 * Answers the per-source values and their min, max and mean.
 *
 * Entries are kept sorted by source bytes, which is also the encoding order:
 *   count varint, then per entry: source string, time_us svarint, value f64
 * Sources are never removed, so their bytes live in one append-only buffer
 * per state instead of one allocation each.
 */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "number.h"
#include "state.h"
#include "xalloc.h"

#define GAUGE_INITIAL_ENTRIES 4
#define GAUGE_INITIAL_NAMES 16

struct gauge_entry {
    uint32_t source;       /* offset of its bytes in gauge.names */
    uint32_t source_len;   /* at most EVENT_SOURCE_MAX */
    int64_t time_us;
    double value;
};

struct gauge {
    struct gauge_entry *entries;   /* sorted by source */
    char *names;                   /* each source's bytes, NUL-terminated */
    uint32_t count, cap;
    uint32_t names_len, names_cap;
};

static const char *
gauge_source(const struct gauge *g, const struct gauge_entry *e)
{
    return g->names + e->source;
}

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

    free(g->entries);
    free(g->names);
    free(g);
}

static void *
gauge_clone(const void *state)
{
    const struct gauge *g = state;
    struct gauge *c = xcalloc(1, sizeof(*c));

    if (g->count == 0)
        return c;
    c->entries = xmalloc(sizeof(*c->entries) * g->count);
    memcpy(c->entries, g->entries, sizeof(*c->entries) * g->count);
    c->count = c->cap = g->count;
    c->names = xmalloc(g->names_len);
    memcpy(c->names, g->names, g->names_len);
    c->names_len = c->names_cap = g->names_len;
    return c;
}

/* Inserts a new entry for SOURCE at POS (its place in the order). */
static void
gauge_insert(struct gauge *g, size_t pos, const char *source,
             size_t source_len, int64_t time_us, double value)
{
    size_t need = g->names_len + source_len + 1;

    if (g->count == g->cap) {
        g->cap = g->cap ? g->cap * 2 : GAUGE_INITIAL_ENTRIES;
        g->entries = xrealloc(g->entries, sizeof(*g->entries) * g->cap);
    }
    if (need > g->names_cap) {
        size_t cap = g->names_cap ? g->names_cap : GAUGE_INITIAL_NAMES;

        while (cap < need)
            cap *= 2;
        g->names = xrealloc(g->names, cap);
        g->names_cap = (uint32_t)cap;
    }
    memcpy(g->names + g->names_len, source, source_len);
    g->names[g->names_len + source_len] = '\0';
    memmove(&g->entries[pos + 1], &g->entries[pos],
            sizeof(*g->entries) * (g->count - pos));
    g->entries[pos] = (struct gauge_entry){
        .source = g->names_len,
        .source_len = (uint32_t)source_len,
        .time_us = time_us,
        .value = value,
    };
    g->names_len = (uint32_t)need;
    g->count++;
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
        struct gauge_entry *e = &g->entries[mid];
        int c = buf_compare(gauge_source(g, e), e->source_len, source,
                            source_len);

        if (c == 0) {
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
    gauge_insert(g, lo, source, source_len, time_us, value);
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
        gauge_put(dst, gauge_source(s, &s->entries[i]),
                  s->entries[i].source_len, s->entries[i].time_us,
                  s->entries[i].value);
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
        buf_put_string(out, gauge_source(g, &g->entries[i]),
                       g->entries[i].source_len);
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
    if (count > 0) {
        g->entries = xmalloc(sizeof(*g->entries) * count);
        g->cap = (uint32_t)count;
    }
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
        if (i > 0 && buf_compare(gauge_source(g, &g->entries[i - 1]),
                                 g->entries[i - 1].source_len,
                                 (const char *)src, len) >= 0) {
            snprintf(err, errlen, "gauge: sources not in strict order");
            goto fail;
        }
        gauge_insert(g, g->count, (const char *)src, len, time_us, value);
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

        json_object_object_add(sources, gauge_source(g, &g->entries[i]),
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
