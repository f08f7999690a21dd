/*
 * metric: rings of bucket states plus a lifetime state, see metric.h.
 *
 * Encoding: 'M', version u8, type u8, generation varint, expired varint,
 *   flags u8 (bit 0: the metric is not empty and its times follow),
 *   [first_us svarint, last_us svarint],
 *   `all` state,
 *   for each ring (not for recent): bucket count varint, then buckets in
 *   increasing start: start_s svarint, state.
 */
#include "metric.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define METRIC_MAGIC 'M'
#define METRIC_FLAG_TIMES 0x01    /* first_us and last_us follow */

struct metric_bucket {
    int64_t start_s;
    void *state;            /* owned, never NULL */
};

/* The buckets one ring holds, sorted by start. Only buckets that hold
 * something are stored: a metric active now pays for a few buckets, not
 * for every slot of every ring. The ring still behaves as the array of
 * window.h's CAPACITY slots indexed by (start / width) mod capacity: at
 * most one bucket per slot, so COUNT never exceeds the capacity. */
struct metric_ring {
    struct metric_bucket *buckets;   /* owned; CAP entries, COUNT used */
    uint16_t count;
    uint16_t cap;
};

struct metric {
    const struct state_ops *ops;
    struct state_config config;
    uint64_t generation;
    int64_t first_us;
    int64_t last_us;
    uint64_t expired;
    void *all;                                 /* owned */
    struct metric_ring rings[RING_COUNT];      /* empty for recent */
};

static int
metric_windowed(enum event_type type)
{
    return type != EVENT_RECENT;
}

/* ---------------------------------------------------------------------- */
/* Rings                                                                   */
/* ---------------------------------------------------------------------- */

/* The position of the first bucket of R starting at or after START_S. */
static size_t
metric_ring_search(const struct metric_ring *r, int64_t start_s)
{
    size_t lo = 0, hi = r->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (r->buckets[mid].start_s < start_s)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The bucket of R (RING's) starting at START_S, or NULL. Buckets mostly
 * follow each other without gaps, so the distance from the newest one
 * tells where to look; a binary search covers the rest. */
static struct metric_bucket *
metric_ring_get(const struct metric_ring *r, enum ring ring, int64_t start_s)
{
    size_t last = (size_t)r->count - 1, pos;
    uint64_t back;

    if (r->count == 0 || start_s < r->buckets[0].start_s
        || start_s > r->buckets[last].start_s)
        return NULL;
    if (start_s == r->buckets[last].start_s)
        return &r->buckets[last];
    back = (uint64_t)(r->buckets[last].start_s - start_s)
           / (uint64_t)window_ring_layout(ring)->width_s;
    if (back <= last && r->buckets[last - back].start_s == start_s)
        return &r->buckets[last - back];
    pos = metric_ring_search(r, start_s);
    return r->buckets[pos].start_s == start_s ? &r->buckets[pos] : NULL;
}

/* The position of the bucket of RING (in R) occupying the slot START_S
 * maps to, or -1 if that slot is free. Starts of one slot differ by a
 * multiple of width x capacity. Linear, but only run when a new bucket
 * opens. */
static ptrdiff_t
metric_ring_slot_holder(const struct metric_ring *r, enum ring ring,
                        int64_t start_s)
{
    const struct ring_layout *layout = window_ring_layout(ring);
    int64_t period = layout->width_s * layout->capacity;

    for (size_t i = 0; i < r->count; i++)
        if ((r->buckets[i].start_s - start_s) % period == 0)
            return (ptrdiff_t)i;
    return -1;
}

static void
metric_ring_remove(struct metric_ring *r, size_t pos)
{
    memmove(&r->buckets[pos], &r->buckets[pos + 1],
            (r->count - pos - 1) * sizeof(*r->buckets));
    r->count--;
}

/* Inserts (START_S, STATE) at POS, keeping the order; the caller has made
 * sure the slot is free, so COUNT stays within the ring's capacity. */
static void
metric_ring_insert(struct metric_ring *r, enum ring ring, size_t pos,
                   int64_t start_s, void *state)
{
    if (r->count == r->cap) {
        int capacity = window_ring_layout(ring)->capacity;
        int cap = r->cap == 0 ? 1 : 2 * r->cap;

        r->cap = (uint16_t)(cap < capacity ? cap : capacity);
        r->buckets = xrealloc(r->buckets, r->cap * sizeof(*r->buckets));
    }
    memmove(&r->buckets[pos + 1], &r->buckets[pos],
            (r->count - pos) * sizeof(*r->buckets));
    r->buckets[pos].start_s = start_s;
    r->buckets[pos].state = state;
    r->count++;
}

/* Frees the slot of RING that START_S (aligned, not held) maps to, for a
 * new bucket: an older bucket there is dropped. 0, or -1 if a newer bucket
 * holds the slot. */
static int
metric_ring_claim(struct metric *m, enum ring ring, int64_t start_s)
{
    struct metric_ring *r = &m->rings[ring];
    ptrdiff_t holder = metric_ring_slot_holder(r, ring, start_s);

    if (holder < 0)
        return 0;
    if (r->buckets[holder].start_s > start_s)
        return -1;
    m->ops->destroy(r->buckets[holder].state);
    metric_ring_remove(r, (size_t)holder);
    return 0;
}

static void
metric_ring_clear(struct metric *m, struct metric_ring *r)
{
    for (size_t i = 0; i < r->count; i++)
        m->ops->destroy(r->buckets[i].state);
    free(r->buckets);
    r->buckets = NULL;
    r->count = r->cap = 0;
}

/* ---------------------------------------------------------------------- */
/* Lifecycle                                                               */
/* ---------------------------------------------------------------------- */

static struct metric *
metric_alloc(const struct state_ops *ops, uint64_t generation,
             const struct state_config *config)
{
    struct metric *m = xcalloc(1, sizeof(*m));

    m->ops = ops;
    if (config != NULL)
        m->config = *config;
    m->generation = generation;
    m->first_us = INT64_MAX;
    m->last_us = INT64_MIN;
    return m;
}

struct metric *
metric_create(enum event_type type, uint64_t generation,
              const struct state_config *config)
{
    const struct state_ops *ops = state_ops_for(type);
    struct metric *m;

    if (ops == NULL)
        return NULL;
    m = metric_alloc(ops, generation, config);
    m->all = ops->create(&m->config);
    return m;
}

void
metric_destroy(struct metric *m)
{
    if (m == NULL)
        return;
    for (int r = 0; r < RING_COUNT; r++)
        metric_ring_clear(m, &m->rings[r]);
    if (m->all != NULL)
        m->ops->destroy(m->all);
    free(m);
}

struct metric *
metric_clone(const struct metric *m)
{
    struct metric *c = metric_alloc(m->ops, m->generation, &m->config);

    c->first_us = m->first_us;
    c->last_us = m->last_us;
    c->expired = m->expired;
    c->all = m->ops->clone(m->all);
    for (int r = 0; r < RING_COUNT; r++) {
        const struct metric_ring *from = &m->rings[r];
        struct metric_ring *to = &c->rings[r];

        if (from->count == 0)
            continue;
        to->buckets = xmalloc(from->count * sizeof(*to->buckets));
        to->count = to->cap = from->count;
        for (size_t i = 0; i < from->count; i++) {
            to->buckets[i].start_s = from->buckets[i].start_s;
            to->buckets[i].state = m->ops->clone(from->buckets[i].state);
        }
    }
    return c;
}

enum event_type
metric_type(const struct metric *m)
{
    return m->ops->type;
}

uint64_t
metric_generation(const struct metric *m)
{
    return m->generation;
}

int
metric_time_range(const struct metric *m, int64_t *first_us, int64_t *last_us)
{
    if (m->first_us > m->last_us) {
        *first_us = 0;
        *last_us = -1;
        return -1;
    }
    *first_us = m->first_us;
    *last_us = m->last_us;
    return 0;
}

uint64_t
metric_expired(const struct metric *m)
{
    return m->expired;
}

/* ---------------------------------------------------------------------- */
/* Folding and merging                                                     */
/* ---------------------------------------------------------------------- */

/* The bucket state of RING starting at START_S, opened (evicting an older
 * bucket of its slot) if not held; NULL if the ring no longer retains that
 * bucket or its slot holds a newer one. */
static void *
metric_bucket_for(struct metric *m, enum ring ring, int64_t start_s,
                  int64_t now_us)
{
    struct metric_bucket *b;
    void *state;

    if (!window_ring_retains(ring, start_s, now_us))
        return NULL;
    b = metric_ring_get(&m->rings[ring], ring, start_s);
    if (b != NULL)
        return b->state;
    if (metric_ring_claim(m, ring, start_s) != 0)
        return NULL;
    state = m->ops->create(&m->config);
    metric_ring_insert(&m->rings[ring], ring,
                       metric_ring_search(&m->rings[ring], start_s), start_s,
                       state);
    return state;
}

static void
metric_note_times(struct metric *m, int64_t first_us, int64_t last_us)
{
    if (first_us < m->first_us)
        m->first_us = first_us;
    if (last_us > m->last_us)
        m->last_us = last_us;
}

void
metric_fold(struct metric *m, const struct event *ev, int64_t now_us)
{
    metric_note_times(m, ev->time_us, ev->time_us);
    m->ops->fold(m->all, ev);
    if (!metric_windowed(m->ops->type))
        return;
    for (int r = 0; r < RING_COUNT; r++) {
        int64_t start = window_align(ev->time_us, window_ring_layout(r)->width_s);
        void *state = metric_bucket_for(m, r, start, now_us);

        if (state != NULL)
            m->ops->fold(state, ev);
        else
            m->expired++;
    }
}

int
metric_merge_partial(struct metric *m, int64_t granule_start_s,
                     int64_t first_us, int64_t last_us, const void *state,
                     int64_t now_us)
{
    int64_t granule_us;

    if (granule_start_s < 0
        || granule_start_s >= EVENT_TIME_MAX_SECONDS
        || m->ops->empty(state))
        return -1;
    granule_us = granule_start_s * EVENT_US_PER_SECOND;
    if (granule_start_s % WINDOW_GRANULE_S != 0 || first_us > last_us
        || first_us < granule_us
        || last_us >= granule_us + WINDOW_GRANULE_S * EVENT_US_PER_SECOND)
        return -1;
    if (m->ops->merge(m->all, state) != 0)
        return -1;
    metric_note_times(m, first_us, last_us);
    if (!metric_windowed(m->ops->type))
        return 0;
    for (int r = 0; r < RING_COUNT; r++) {
        int64_t start = window_align(first_us, window_ring_layout(r)->width_s);
        void *bucket = metric_bucket_for(m, r, start, now_us);

        if (bucket == NULL || m->ops->merge(bucket, state) != 0)
            m->expired++;
    }
    return 0;
}

int
metric_merge(struct metric *dst, const struct metric *src)
{
    if (dst->ops != src->ops || dst->ops->merge(dst->all, src->all) != 0)
        return -1;
    metric_note_times(dst, src->first_us, src->last_us);
    dst->expired += src->expired;
    for (int r = 0; r < RING_COUNT; r++) {
        /* slot by slot: the newer bucket, or the merge of equal ones */
        for (size_t i = 0; i < src->rings[r].count; i++) {
            const struct metric_bucket *s = &src->rings[r].buckets[i];
            struct metric_bucket *d = metric_ring_get(&dst->rings[r], r,
                                                      s->start_s);

            if (d != NULL) {
                dst->ops->merge(d->state, s->state);
                continue;
            }
            if (metric_ring_claim(dst, r, s->start_s) != 0)
                continue;
            metric_ring_insert(&dst->rings[r], r,
                               metric_ring_search(&dst->rings[r], s->start_s),
                               s->start_s, dst->ops->clone(s->state));
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Encoding                                                                */
/* ---------------------------------------------------------------------- */

void
metric_encode(const struct metric *m, struct buf_writer *out)
{
    buf_put_u8(out, METRIC_MAGIC);
    buf_put_u8(out, METRIC_FORMAT_VERSION);
    buf_put_u8(out, (uint8_t)m->ops->type);
    buf_put_varint(out, m->generation);
    buf_put_varint(out, m->expired);
    buf_put_u8(out, m->ops->empty(m->all) ? 0 : METRIC_FLAG_TIMES);
    if (!m->ops->empty(m->all)) {
        buf_put_svarint(out, m->first_us);
        buf_put_svarint(out, m->last_us);
    }
    m->ops->encode(m->all, out);
    if (!metric_windowed(m->ops->type))
        return;
    for (int r = 0; r < RING_COUNT; r++) {
        const struct metric_ring *ring = &m->rings[r];

        buf_put_varint(out, ring->count);
        for (size_t i = 0; i < ring->count; i++) {
            buf_put_svarint(out, ring->buckets[i].start_s);
            m->ops->encode(ring->buckets[i].state, out);
        }
    }
}

static int
metric_decode_ring(struct metric *m, enum ring ring, struct buf_reader *in,
                   char *err, size_t errlen)
{
    const struct ring_layout *layout = window_ring_layout(ring);
    struct metric_ring *r = &m->rings[ring];
    uint64_t count;
    int64_t previous = INT64_MIN;

    if (buf_get_varint(in, &count) != 0 || count > (uint64_t)layout->capacity) {
        snprintf(err, errlen, "metric: ring %d: bad bucket count", ring);
        return -1;
    }
    for (uint64_t i = 0; i < count; i++) {
        int64_t start;
        void *state;

        if (buf_get_svarint(in, &start) != 0) {
            snprintf(err, errlen, "metric: ring %d: truncated", ring);
            return -1;
        }
        /* every bucket lies within the metric's event-time range */
        if (start % layout->width_s != 0 || start <= previous
            || m->first_us > m->last_us
            || start < window_align(m->first_us, layout->width_s)
            || start > window_align(m->last_us, layout->width_s)) {
            snprintf(err, errlen, "metric: ring %d: bad bucket start %lld",
                     ring, (long long)start);
            return -1;
        }
        if (metric_ring_slot_holder(r, ring, start) >= 0) {
            snprintf(err, errlen, "metric: ring %d: buckets collide", ring);
            return -1;
        }
        state = m->ops->decode(in, err, errlen);
        if (state == NULL)
            return -1;
        /* increasing starts: each bucket goes last */
        metric_ring_insert(r, ring, r->count, start, state);
        if (m->ops->empty(state)) {
            snprintf(err, errlen, "metric: ring %d: empty bucket", ring);
            return -1;
        }
        previous = start;
    }
    return 0;
}

struct metric *
metric_decode(struct buf_reader *in, char *err, size_t errlen)
{
    const struct state_ops *ops;
    struct metric *m = NULL;
    uint8_t magic, version, type, flags;
    uint64_t generation, expired;
    int64_t first = INT64_MAX, last = INT64_MIN;

    if (buf_get_u8(in, &magic) != 0 || buf_get_u8(in, &version) != 0
        || buf_get_u8(in, &type) != 0 || buf_get_varint(in, &generation) != 0
        || buf_get_varint(in, &expired) != 0 || buf_get_u8(in, &flags) != 0)
        goto truncated;
    if (magic != METRIC_MAGIC || version != METRIC_FORMAT_VERSION) {
        snprintf(err, errlen, "metric: bad magic or version %u", version);
        return NULL;
    }
    ops = state_ops_for((enum event_type)type);
    if (ops == NULL || (flags & ~METRIC_FLAG_TIMES) != 0) {
        snprintf(err, errlen, "metric: unknown type %u or flags %u", type,
                 flags);
        return NULL;
    }
    if ((flags & METRIC_FLAG_TIMES)
        && (buf_get_svarint(in, &first) != 0
            || buf_get_svarint(in, &last) != 0))
        goto truncated;
    if ((flags & METRIC_FLAG_TIMES)
        && (first > last || first < 0 || last >= EVENT_TIME_MAX_US)) {
        snprintf(err, errlen, "metric: bad time range");
        return NULL;
    }
    m = metric_alloc(ops, generation, NULL);
    m->expired = expired;
    m->first_us = first;
    m->last_us = last;
    m->all = ops->decode(in, err, errlen);
    if (m->all == NULL)
        goto fail;
    if (ops->empty(m->all) != !(flags & METRIC_FLAG_TIMES)) {
        snprintf(err, errlen, "metric: times must be present exactly when "
                 "the metric is not empty");
        goto fail;
    }
    if (metric_windowed(ops->type))
        for (int r = 0; r < RING_COUNT; r++)
            if (metric_decode_ring(m, r, in, err, errlen) != 0)
                goto fail;
    return m;

truncated:
    snprintf(err, errlen, "metric: truncated or malformed");
fail:
    metric_destroy(m);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Queries                                                                 */
/* ---------------------------------------------------------------------- */

const void *
metric_bucket_at(const struct metric *m, enum ring ring, int64_t start_s)
{
    const struct metric_bucket *b = metric_ring_get(&m->rings[ring], ring,
                                                    start_s);

    return b != NULL ? b->state : NULL;
}

size_t
metric_bucket_starts(const struct metric *m, enum ring ring, int64_t from_s,
                     int64_t to_s, int64_t *starts, size_t max)
{
    const struct metric_ring *r = &m->rings[ring];
    size_t n = 0;

    for (size_t i = metric_ring_search(r, from_s);
         i < r->count && r->buckets[i].start_s <= to_s && n < max; i++)
        starts[n++] = r->buckets[i].start_s;
    return n;
}

const void *
metric_all(const struct metric *m)
{
    return m->all;
}

int
metric_set_bucket(struct metric *m, enum ring ring, int64_t start_s,
                  void *state)
{
    struct metric_bucket *b;

    if (!metric_windowed(m->ops->type)
        || start_s % window_ring_layout(ring)->width_s != 0) {
        m->ops->destroy(state);
        return -1;
    }
    b = metric_ring_get(&m->rings[ring], ring, start_s);
    if (b != NULL) {
        m->ops->destroy(b->state);
        b->state = state;
        return 0;
    }
    if (metric_ring_claim(m, ring, start_s) != 0) {
        m->ops->destroy(state);
        return -1;
    }
    metric_ring_insert(&m->rings[ring], ring,
                       metric_ring_search(&m->rings[ring], start_s), start_s,
                       state);
    return 0;
}

void
metric_set_all(struct metric *m, void *state, int64_t first_us,
               int64_t last_us)
{
    m->ops->destroy(m->all);
    m->all = state;
    m->first_us = INT64_MAX;
    m->last_us = INT64_MIN;
    if (!m->ops->empty(state))
        metric_note_times(m, first_us, last_us);
}

void *
metric_window_state(const struct metric *m, enum window window, int64_t now_us)
{
    const struct window_layout *w = window_layout(window);
    int64_t width = window_ring_layout(w->ring)->width_s;
    int64_t start = window_oldest_bucket(window, now_us);
    void *state;

    if (window == WINDOW_ALL || !metric_windowed(m->ops->type))
        return m->ops->clone(m->all);
    state = m->ops->create(&m->config);
    for (int i = 0; i < w->buckets; i++, start += width) {
        const void *bucket = metric_bucket_at(m, w->ring, start);

        if (bucket != NULL)
            m->ops->merge(state, bucket);
    }
    return state;
}

/* Copies every field of FIELDS into RESULT (FIELDS is released). */
static void
metric_take_fields(struct json_object *result, struct json_object *fields)
{
    json_object_object_foreach(fields, key, value)
        json_object_object_add(result, key, json_object_get(value));
    json_object_put(fields);
}

/* [[bucket_start, {fields}], ...] over the buckets WINDOW covers, oldest
 * first, empty buckets included so a chart has every point. The `all`
 * series is the 1d ring's; `recent` has none. Each bucket's rate is its sum
 * over the bucket width. */
static struct json_object *
metric_series(const struct metric *m, enum window window, int64_t now_us)
{
    const struct window_layout *w = window_layout(window);
    int64_t width = window_ring_layout(w->ring)->width_s;
    struct state_render_context ctx = { .span_seconds = (double)width };
    struct json_object *series = json_object_new_array();
    int64_t start;
    void *empty;

    if (!metric_windowed(m->ops->type))
        return series;
    start = window_oldest_bucket(window, now_us);    /* all: the 1d ring's */
    empty = m->ops->create(&m->config);
    for (int i = 0; i < w->buckets; i++, start += width) {
        const void *bucket = metric_bucket_at(m, w->ring, start);
        struct json_object *point = json_object_new_array_ext(2);

        json_object_array_add(point, json_object_new_int64(start));
        json_object_array_add(point, m->ops->render(bucket ? bucket : empty,
                                                    &ctx));
        json_object_array_add(series, point);
    }
    m->ops->destroy(empty);
    return series;
}

struct json_object *
metric_render(const struct metric *m, enum window window, int64_t now_us,
              int with_series)
{
    struct json_object *result = json_object_new_object();
    struct state_render_context ctx;
    void *state = metric_window_state(m, window, now_us);

    if (window == WINDOW_ALL) {
        /* per second since the first event, at least one second */
        double since = (double)(now_us - m->first_us)
                       / (double)EVENT_US_PER_SECOND;

        ctx.span_seconds = m->first_us <= now_us && since > 1.0 ? since : 1.0;
    } else {
        ctx.span_seconds = window_span_seconds(window, now_us);
    }
    json_object_object_add(result, "type",
                           json_object_new_string(
                               event_type_name(m->ops->type)));
    json_object_object_add(result, "window",
                           json_object_new_string(window_name(window)));
    metric_take_fields(result, m->ops->render(state, &ctx));
    m->ops->destroy(state);
    if (with_series)
        json_object_object_add(result, "series",
                               metric_series(m, window, now_us));
    return result;
}
