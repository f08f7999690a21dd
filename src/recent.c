/*
 * recent: the K newest (value, time, source) entries, newest first. Order:
 * time descending, then source ascending (bytes), then value ascending (a
 * total order on doubles). Merge keeps the K first of the union in that
 * order, which is associative and commutative. K comes from the config
 * (default 100); a merge keeps the smaller K of the two (taking the larger
 * would not be associative: a state already cut to the smaller K cannot
 * give back what it dropped).
 *
 * Encoding: keep varint, count varint, then per entry in order:
 *   time_us svarint, value f64, source string
 *
 * In memory the entries array grows up to K as entries arrive, and the
 * sources' bytes share one buffer per state. A dropped entry leaves its
 * bytes behind as garbage; the buffer is compacted when it is full and at
 * least half garbage, so it stays within a small multiple of the live bytes
 * at an amortized constant cost per entry.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "number.h"
#include "state.h"
#include "xalloc.h"

#define RECENT_INITIAL_ENTRIES 4
#define RECENT_INITIAL_NAMES 32

struct recent_entry {
    int64_t time_us;
    double value;
    uint32_t source;       /* offset of its bytes in recent.names */
    uint32_t source_len;   /* at most EVENT_SOURCE_MAX */
};

struct recent {
    uint32_t keep;                 /* K */
    uint32_t count, cap;           /* entries used / allocated, <= K */
    struct recent_entry *entries;  /* in order */
    char *names;                   /* the entries' source bytes, and garbage */
    uint32_t names_len, names_cap;
    uint32_t names_live;           /* bytes of NAMES the entries use */
};

static const char *
recent_source(const struct recent *r, const struct recent_entry *e)
{
    return r->names + e->source;
}

/* <0 if A comes before B (is "newer"), 0 if equal, >0 after. */
static int
recent_cmp(const struct recent *r, int64_t a_time, const char *a_src,
           size_t a_len, double a_value, const struct recent_entry *b)
{
    int c;
    int64_t ka, kb;

    if (a_time != b->time_us)
        return a_time > b->time_us ? -1 : 1;
    c = buf_compare(a_src, a_len, recent_source(r, b), b->source_len);
    if (c != 0)
        return c;
    ka = number_order_key(a_value);
    kb = number_order_key(b->value);
    return ka < kb ? -1 : ka > kb;
}

static struct recent *
recent_new(uint32_t keep)
{
    struct recent *r = xcalloc(1, sizeof(*r));

    r->keep = keep;
    return r;
}

static void *
recent_create(const struct state_config *config)
{
    uint32_t keep = config != NULL ? config->recent_keep : 0;

    if (keep == 0)
        keep = RECENT_DEFAULT_KEEP;
    if (keep > RECENT_KEEP_MAX)
        keep = RECENT_KEEP_MAX;
    return recent_new(keep);
}

static void
recent_destroy(void *state)
{
    struct recent *r = state;

    free(r->entries);
    free(r->names);
    free(r);
}

/* Makes room for LEN more bytes in R's names (allocated from the first
 * entry on, even for empty sources): compacts the buffer if it is at least
 * half garbage, else grows it. */
static void
recent_names_reserve(struct recent *r, size_t len)
{
    size_t need = r->names_len + len, cap;
    char *names;

    if (r->names != NULL && need <= r->names_cap)
        return;
    if (r->names_len - r->names_live < r->names_live) {
        cap = r->names_cap ? r->names_cap : RECENT_INITIAL_NAMES;
        while (cap < need)
            cap *= 2;
        r->names = xrealloc(r->names, cap);
        r->names_cap = (uint32_t)cap;
        return;
    }
    cap = 2 * (r->names_live + len);
    if (cap < RECENT_INITIAL_NAMES)
        cap = RECENT_INITIAL_NAMES;
    names = xmalloc(cap);
    r->names_len = 0;
    for (uint32_t i = 0; i < r->count; i++) {
        struct recent_entry *e = &r->entries[i];

        memcpy(names + r->names_len, recent_source(r, e), e->source_len);
        e->source = r->names_len;
        r->names_len += e->source_len;
    }
    free(r->names);
    r->names = names;
    r->names_cap = (uint32_t)cap;
}

/* Inserts an entry at POS (its place in the order; COUNT < KEEP). SOURCE
 * must not point into R. */
static void
recent_insert(struct recent *r, size_t pos, int64_t time_us,
              const char *source, size_t source_len, double value)
{
    if (r->count == r->cap) {
        uint32_t cap = r->cap ? 2 * r->cap : RECENT_INITIAL_ENTRIES;

        r->cap = cap < r->keep ? cap : r->keep;
        r->entries = xrealloc(r->entries, sizeof(*r->entries) * r->cap);
    }
    recent_names_reserve(r, source_len);
    memcpy(r->names + r->names_len, source, source_len);
    memmove(&r->entries[pos + 1], &r->entries[pos],
            sizeof(*r->entries) * (r->count - pos));
    r->entries[pos] = (struct recent_entry){
        .time_us = time_us,
        .value = value,
        .source = r->names_len,
        .source_len = (uint32_t)source_len,
    };
    r->names_len += (uint32_t)source_len;
    r->names_live += (uint32_t)source_len;
    r->count++;
}

/* Drops the last (oldest) entry. */
static void
recent_drop_last(struct recent *r)
{
    r->count--;
    r->names_live -= r->entries[r->count].source_len;
}

static void *
recent_clone(const void *state)
{
    const struct recent *r = state;
    struct recent *c = recent_new(r->keep);

    for (uint32_t i = 0; i < r->count; i++)
        recent_insert(c, i, r->entries[i].time_us,
                      recent_source(r, &r->entries[i]),
                      r->entries[i].source_len, r->entries[i].value);
    return c;
}

/* Inserts an entry in order if it is among the KEEP first. */
static void
recent_put(struct recent *r, int64_t time_us, const char *source,
           size_t source_len, double value)
{
    size_t lo = 0, hi = r->count;

    if (r->count == r->keep
        && recent_cmp(r, time_us, source, source_len, value,
                      &r->entries[r->count - 1]) >= 0)
        return;                      /* not newer than the oldest kept */
    /* the first entry the new one comes before */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (recent_cmp(r, time_us, source, source_len, value,
                       &r->entries[mid]) < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (r->count == r->keep)
        recent_drop_last(r);
    recent_insert(r, lo, time_us, source, source_len, value);
}

static void
recent_fold(void *state, const struct event *ev)
{
    recent_put(state, ev->time_us, ev->source, ev->source_len, ev->value);
}

static int
recent_merge(void *dst, const void *src)
{
    struct recent *d = dst;
    const struct recent *s = src;

    if (d == s) {   /* sources must not point into D: merge a copy */
        void *copy = recent_clone(s);

        recent_merge(d, copy);
        recent_destroy(copy);
        return 0;
    }
    if (s->keep < d->keep) {
        while (d->count > s->keep)
            recent_drop_last(d);
        d->keep = s->keep;
    }
    for (uint32_t i = 0; i < s->count; i++)
        recent_put(d, s->entries[i].time_us, recent_source(s, &s->entries[i]),
                   s->entries[i].source_len, s->entries[i].value);
    return 0;
}

static int
recent_empty(const void *state)
{
    return ((const struct recent *)state)->count == 0;
}

static void
recent_encode(const void *state, struct buf_writer *out)
{
    const struct recent *r = state;

    buf_put_u8(out, EVENT_RECENT);
    buf_put_u8(out, STATE_FORMAT_VERSION);
    buf_put_varint(out, r->keep);
    buf_put_varint(out, r->count);
    for (size_t i = 0; i < r->count; i++) {
        buf_put_svarint(out, r->entries[i].time_us);
        buf_put_double(out, r->entries[i].value);
        buf_put_string(out, recent_source(r, &r->entries[i]),
                       r->entries[i].source_len);
    }
}

static void *
recent_decode(struct buf_reader *in, char *err, size_t errlen)
{
    struct recent *r = NULL;
    uint8_t type, version;
    uint64_t keep, count;

    if (buf_get_u8(in, &type) != 0 || buf_get_u8(in, &version) != 0
        || buf_get_varint(in, &keep) != 0 || buf_get_varint(in, &count) != 0)
        goto truncated;
    if (type != EVENT_RECENT || version != STATE_FORMAT_VERSION) {
        snprintf(err, errlen, "recent: bad type %u or version %u", type,
                 version);
        return NULL;
    }
    if (keep == 0 || keep > RECENT_KEEP_MAX || count > keep) {
        snprintf(err, errlen, "recent: bad keep %llu or count %llu",
                 (unsigned long long)keep, (unsigned long long)count);
        return NULL;
    }
    r = recent_new((uint32_t)keep);
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *src;
        size_t len;
        int64_t time_us;
        double value;

        if (buf_get_svarint(in, &time_us) != 0
            || buf_get_double(in, &value) != 0
            || buf_get_string(in, &src, &len, EVENT_SOURCE_MAX) != 0)
            goto truncated;
        if (!event_source_valid((const char *)src, len)
            || !event_value_valid(value)) {
            snprintf(err, errlen, "recent: entry %zu invalid", (size_t)i);
            goto fail;
        }
        if (i > 0 && recent_cmp(r, time_us, (const char *)src, len, value,
                                &r->entries[i - 1]) < 0) {
            snprintf(err, errlen, "recent: entries out of order");
            goto fail;
        }
        recent_insert(r, r->count, time_us, (const char *)src, len, value);
    }
    return r;

truncated:
    snprintf(err, errlen, "recent: truncated or malformed");
fail:
    if (r != NULL)
        recent_destroy(r);
    return NULL;
}

static struct json_object *
recent_render(const void *state, const struct state_render_context *ctx)
{
    const struct recent *r = state;
    struct json_object *o = json_object_new_object();
    struct json_object *list = json_object_new_array_ext((int)r->count);

    (void)ctx;
    for (size_t i = 0; i < r->count; i++) {
        struct json_object *e = json_object_new_object();

        json_object_object_add(e, "value",
                               json_object_new_double(r->entries[i].value));
        json_object_object_add(e, "time", json_object_new_double(
            (double)r->entries[i].time_us / (double)EVENT_US_PER_SECOND));
        json_object_object_add(e, "source",
                               json_object_new_string_len(
                                   recent_source(r, &r->entries[i]),
                                   (int)r->entries[i].source_len));
        json_object_array_add(list, e);
    }
    json_object_object_add(o, "entries", list);
    return o;
}

const struct state_ops recent_ops = {
    .type = EVENT_RECENT,
    .create = recent_create,
    .destroy = recent_destroy,
    .clone = recent_clone,
    .fold = recent_fold,
    .merge = recent_merge,
    .empty = recent_empty,
    .encode = recent_encode,
    .decode = recent_decode,
    .render = recent_render,
};
