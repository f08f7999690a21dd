/*
 * cacheval: cache value bodies, see cacheval.h and schema/cache-value.md.
 */
#include "cacheval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

/* Most buckets one ring can hold (window.h capacities are below). */
#define CACHEVAL_PRESENT_MAX 128
/* The closed marks section of an open value: from this version on, and
 * the tag byte that starts it. */
#define CACHEVAL_MARKS_VERSION 2
#define CACHEVAL_MARKS_TAG 1


static int
cacheval_fail(char *err, size_t errlen, const char *reason)
{
    snprintf(err, errlen, "%s", reason);
    return -1;
}

/* Appends "ring u8, start svarint, state" of M's bucket. */
static void
cacheval_put_bucket(const struct metric *m, enum ring ring, int64_t start,
                    const void *bucket, struct buf_writer *out)
{
    buf_put_u8(out, (uint8_t)ring);
    buf_put_svarint(out, start);
    state_ops_for(metric_type(m))->encode(bucket, out);
}

void
cacheval_encode_open(const struct metric *m, struct codec_cache_header *h,
                     int64_t now_us, const struct cacheval_bucket *closed,
                     size_t n_closed, struct buf_writer *out)
{
    const struct state_ops *ops = state_ops_for(metric_type(m));
    int64_t first_us, last_us;
    size_t count_at;
    uint8_t count = 0;

    h->kind = CODEC_CACHE_OPEN_BUCKETS;
    h->type = (uint8_t)metric_type(m);
    codec_cache_header_encode(h, out);
    metric_time_range(m, &first_us, &last_us);
    buf_put_svarint(out, first_us);
    buf_put_svarint(out, last_us);
    ops->encode(metric_all(m), out);
    for (int r = 0; r < RING_COUNT; r++) {
        const struct ring_layout *layout = window_ring_layout(r);
        int64_t newest = window_align(now_us + EVENT_FUTURE_LIMIT_US,
                                      layout->width_s);
        int64_t starts[CACHEVAL_PRESENT_MAX];
        size_t n = metric_bucket_starts(
            m, (enum ring)r,
            newest - (int64_t)layout->capacity * layout->width_s, newest,
            starts, CACHEVAL_PRESENT_MAX);

        buf_put_varint(out, n);
        for (size_t i = 0; i < n; i++)
            buf_put_svarint(out, starts[i]);
    }
    count_at = out->len;
    buf_put_u8(out, 0);
    for (int r = 0; r < RING_COUNT; r++) {
        int64_t start = window_align(now_us, window_ring_layout(r)->width_s);
        const void *bucket = metric_bucket_at(m, r, start);

        if (bucket == NULL)
            continue;
        cacheval_put_bucket(m, (enum ring)r, start, bucket, out);
        count++;
    }
    for (size_t i = 0; i < n_closed && h->version != 1
                       && count < CACHEVAL_HELD_MAX; i++) {
        const struct cacheval_bucket *b = &closed[i];
        const void *bucket = metric_bucket_at(m, b->ring, b->start_s);

        if (bucket == NULL
            || b->start_s == window_align(now_us,
                                          window_ring_layout(b->ring)->width_s))
            continue;
        cacheval_put_bucket(m, b->ring, b->start_s, bucket, out);
        count++;
    }
    out->data[count_at] = count;
}

int
cacheval_encode_closed(const struct metric *m, struct codec_cache_header *h,
                       enum ring ring, int64_t start_s, struct buf_writer *out)
{
    const void *bucket = metric_bucket_at(m, ring, start_s);

    if (bucket == NULL)
        return -1;
    h->kind = CODEC_CACHE_CLOSED_BUCKET;
    h->type = (uint8_t)metric_type(m);
    codec_cache_header_encode(h, out);
    buf_put_u8(out, (uint8_t)ring);
    buf_put_svarint(out, start_s);
    state_ops_for(metric_type(m))->encode(bucket, out);
    return 0;
}

void
cacheval_encode_tombstone(struct codec_cache_header *h, struct buf_writer *out)
{
    h->kind = CODEC_CACHE_TOMBSTONE;
    codec_cache_header_encode(h, out);
}

/* Reads "ring u8, start_s svarint" and checks them. 0, or -1 with a
 * reason in ERR. */
static int
cacheval_get_place(struct buf_reader *in, enum ring *ring, int64_t *start_s,
                   char *err, size_t errlen)
{
    uint8_t r;

    if (buf_get_u8(in, &r) != 0 || buf_get_svarint(in, start_s) != 0)
        return cacheval_fail(err, errlen, "truncated bucket");
    if (r >= RING_COUNT || *start_s < 0
        || *start_s % window_ring_layout(r)->width_s != 0)
        return cacheval_fail(err, errlen, "bad bucket ring or start");
    *ring = (enum ring)r;
    return 0;
}

/* Reads "ring u8, start_s svarint, state" of TYPE. Returns the state (owned
 * by the caller) or NULL with a reason in ERR. */
static void *
cacheval_get_bucket(struct buf_reader *in, enum event_type type,
                    enum ring *ring, int64_t *start_s, char *err,
                    size_t errlen)
{
    enum event_type got;
    void *state;

    if (cacheval_get_place(in, ring, start_s, err, errlen) != 0)
        return NULL;
    state = state_decode_any(in, &got, err, errlen);
    if (state != NULL && got != type) {
        state_ops_for(got)->destroy(state);
        cacheval_fail(err, errlen, "bucket state of another type");
        return NULL;
    }
    return state;
}

/* 1 if OPEN holds RING's bucket at START; with ANY_START, any of RING's. */
static int
cacheval_holds(const struct cacheval_open *open, enum ring ring, int64_t start,
               int any_start)
{
    for (size_t i = 0; i < open->held_count; i++)
        if (open->held[i].ring == ring
            && (any_start || open->held[i].start_s == start))
            return 1;
    return 0;
}

/* Reads the closed marks section (tag, then sequences as distances
 * below the open value's own) into OUT. 0, or -1 with a reason. */
static int
cacheval_get_marks(struct buf_reader *in, struct cacheval_open *out,
                   char *err, size_t errlen)
{
    uint64_t seq = out->header.sequence, d;
    uint8_t tag;

    if (buf_get_u8(in, &tag) != 0 || tag != CACHEVAL_MARKS_TAG)
        return cacheval_fail(err, errlen, "unknown open value section");
    if (buf_get_varint(in, &d) != 0)
        return cacheval_fail(err, errlen, "truncated closed marks");
    if (d > seq)
        return cacheval_fail(err, errlen, "closed marks out of range");
    out->marks.flush_first = seq - d;
    for (int r = 0; r < RING_COUNT; r++) {
        if (buf_get_varint(in, &d) != 0)
            return cacheval_fail(err, errlen, "truncated closed marks");
        if (d > seq)
            return cacheval_fail(err, errlen, "closed marks out of range");
        out->marks.closed_seq[r] = d == 0 ? 0 : seq - d;
    }
    out->has_marks = 1;
    return 0;
}

void
cacheval_encode_marks(const struct codec_cache_header *h,
                      const struct cacheval_marks *marks,
                      struct buf_writer *out)
{
    if (h->version < CACHEVAL_MARKS_VERSION)
        return;
    buf_put_u8(out, CACHEVAL_MARKS_TAG);
    buf_put_varint(out, h->sequence - marks->flush_first);
    for (int r = 0; r < RING_COUNT; r++)
        buf_put_varint(out, marks->closed_seq[r] == 0
                                ? 0 : h->sequence - marks->closed_seq[r]);
}

int
cacheval_ring_settled(const struct cacheval_open *open, enum ring ring)
{
    return open->has_marks
           && open->marks.closed_seq[ring] < open->marks.flush_first;
}

int
cacheval_decode_open(const uint8_t *value, size_t len,
                     struct cacheval_open *out, char *err, size_t errlen)
{
    struct buf_reader in;
    int64_t first_us, last_us;
    uint8_t count;
    void *state;
    enum event_type type;

    memset(out, 0, sizeof(*out));
    buf_reader_init(&in, value, len);
    if (codec_cache_header_decode(&in, &out->header, err, errlen) != 0)
        return -1;
    if (out->header.kind == CODEC_CACHE_TOMBSTONE)
        return buf_remaining(&in) == 0
                   ? 0 : cacheval_fail(err, errlen, "tombstone with a body");
    if (out->header.kind != CODEC_CACHE_OPEN_BUCKETS)
        return cacheval_fail(err, errlen, "not an open-buckets value");
    type = (enum event_type)out->header.type;
    if (buf_get_svarint(&in, &first_us) != 0
        || buf_get_svarint(&in, &last_us) != 0)
        return cacheval_fail(err, errlen, "truncated times");
    state = state_decode_any(&in, &type, err, errlen);
    if (state == NULL)
        return -1;
    if (type != (enum event_type)out->header.type) {
        state_ops_for(type)->destroy(state);
        return cacheval_fail(err, errlen, "state of another type");
    }
    out->metric = metric_create(type, out->header.generation, NULL);
    metric_set_all(out->metric, state, first_us, last_us);
    for (int r = 0; r < RING_COUNT; r++) {
        uint64_t n;

        if (buf_get_varint(&in, &n) != 0 || n > CACHEVAL_PRESENT_MAX)
            goto truncated;
        out->present_count[r] = (size_t)n;
        out->present[r] = xcalloc(n > 0 ? (size_t)n : 1, sizeof(int64_t));
        for (uint64_t i = 0; i < n; i++)
            if (buf_get_svarint(&in, &out->present[r][i]) != 0)
                goto truncated;
    }
    if (buf_get_u8(&in, &count) != 0)
        goto truncated;
    for (uint8_t i = 0; i < count; i++) {
        enum ring ring;
        int64_t start;

        state = cacheval_get_bucket(&in, type, &ring, &start, err, errlen);
        if (state == NULL)
            goto fail;
        /* a bucket twice, or in version 1 a second one of a ring */
        if (cacheval_holds(out, ring, start, out->header.version == 1)) {
            /* not handed to the metric yet: ours to free */
            state_ops_for(type)->destroy(state);
            cacheval_fail(err, errlen, "open bucket repeated or refused");
            goto fail;
        }
        if (metric_set_bucket(out->metric, ring, start, state) != 0) {
            cacheval_fail(err, errlen, "open bucket repeated or refused");
            goto fail;
        }
        out->held[out->held_count++] = (struct cacheval_bucket){ ring, start };
    }
    if (out->header.version >= CACHEVAL_MARKS_VERSION
        && buf_remaining(&in) != 0
        && cacheval_get_marks(&in, out, err, errlen) != 0)
        goto fail;
    if (buf_remaining(&in) != 0) {
        cacheval_fail(err, errlen, "trailing bytes");
        goto fail;
    }
    return 0;

truncated:
    cacheval_fail(err, errlen, "truncated open value");
fail:
    cacheval_open_release(out);
    return -1;
}

int
cacheval_apply_closed(struct cacheval_open *open, const uint8_t *value,
                      size_t len, char *err, size_t errlen)
{
    struct codec_cache_header h;
    struct buf_reader in;
    enum ring ring;
    int64_t start;
    void *state;

    buf_reader_init(&in, value, len);
    if (codec_cache_header_decode(&in, &h, err, errlen) != 0)
        return -1;
    if (h.kind != CODEC_CACHE_CLOSED_BUCKET)
        return cacheval_fail(err, errlen, "not a closed-bucket value");
    if (open->metric == NULL || h.generation != open->header.generation
        || h.type != open->header.type)
        return 0;
    state = cacheval_get_bucket(&in, (enum event_type)h.type, &ring, &start,
                                err, errlen);
    if (state == NULL)
        return -1;
    if (buf_remaining(&in) != 0) {
        state_ops_for((enum event_type)h.type)->destroy(state);
        return cacheval_fail(err, errlen, "trailing bytes");
    }
    if (cacheval_holds(open, ring, start, 0)
        && h.sequence < open->header.sequence) {
        state_ops_for((enum event_type)h.type)->destroy(state);
        return 0;
    }
    return metric_set_bucket(open->metric, ring, start, state) == 0 ? 1 : 0;
}

int
cacheval_closed_begin(struct buf_reader *in, struct codec_cache_header *h,
                      enum ring *ring, int64_t *start_s, char *err,
                      size_t errlen)
{
    if (codec_cache_header_decode(in, h, err, errlen) != 0)
        return -1;
    if (h->kind != CODEC_CACHE_CLOSED_BUCKET)
        return cacheval_fail(err, errlen, "not a closed-bucket value");
    return cacheval_get_place(in, ring, start_s, err, errlen);
}

void *
cacheval_closed_state(struct buf_reader *in, enum event_type type,
                      char *err, size_t errlen)
{
    enum event_type got;
    void *state = state_decode_any(in, &got, err, errlen);

    if (state == NULL)
        return NULL;
    if (got != type) {
        state_ops_for(got)->destroy(state);
        cacheval_fail(err, errlen, "bucket state of another type");
        return NULL;
    }
    if (buf_remaining(in) != 0) {
        state_ops_for(got)->destroy(state);
        cacheval_fail(err, errlen, "trailing bytes");
        return NULL;
    }
    return state;
}

size_t
cacheval_wanted(const struct cacheval_open *open, enum window window,
                int64_t now_us, enum ring *ring, int64_t *starts, size_t max)
{
    const struct window_layout *w = window_layout(window);
    int64_t oldest = window == WINDOW_ALL ? INT64_MIN
                                          : window_oldest_bucket(window, now_us);
    int64_t newest = window_align(now_us, window_ring_layout(w->ring)->width_s);
    size_t n = 0;

    *ring = w->ring;
    for (size_t i = 0; i < open->present_count[w->ring] && n < max; i++) {
        int64_t s = open->present[w->ring][i];

        if (s >= oldest && s <= newest)
            starts[n++] = s;
    }
    return n;
}

int
cacheval_complete(const struct cacheval_open *open, enum window window,
                  int64_t now_us)
{
    int64_t starts[CACHEVAL_PRESENT_MAX];
    enum ring ring;
    size_t n = cacheval_wanted(open, window, now_us, &ring, starts,
                               CACHEVAL_PRESENT_MAX);

    for (size_t i = 0; i < n; i++)
        if (metric_bucket_at(open->metric, ring, starts[i]) == NULL)
            return 0;
    return 1;
}

void
cacheval_open_release(struct cacheval_open *open)
{
    metric_destroy(open->metric);
    open->metric = NULL;
    for (int r = 0; r < RING_COUNT; r++) {
        free(open->present[r]);
        open->present[r] = NULL;
        open->present_count[r] = 0;
    }
}
