/*
 * percentile: the state of a `percentile` metric. Exact count, sum, min
 * and max, plus a DDSketch (ddsketch.h) for quantiles within 1% relative
 * error. Answers count, sum, min, max, p50, p90, p95, p99 and p999.
 *
 *   fold(value) ──▶ count += 1, sum += value, min/max, sketch add
 *   merge       ──▶ the same field by field (all associative, commutative)
 *   render      ──▶ quantile q = value at nearest rank ceil(q * count) of
 *                   the sketch, clamped into [min, max]
 *
 * Encoding (schema/state-percentile.md): type byte, version byte, count
 * varint, sum (sum.h), min and max as binary64 when count > 0, then the
 * sketch (ddsketch_encode).
 */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ddsketch.h"
#include "state.h"
#include "sum.h"
#include "xalloc.h"

/* Quantiles rendered, as per-mille fractions so ranks are exact integers. */
#define PERCENTILE_RANK_DENOMINATOR 1000
static const struct {
    const char *field;
    uint64_t per_mille;
} percentile_fields[] = {
    { .field = "p50", .per_mille = 500 },
    { .field = "p90", .per_mille = 900 },
    { .field = "p95", .per_mille = 950 },
    { .field = "p99", .per_mille = 990 },
    { .field = "p999", .per_mille = 999 },
};
#define PERCENTILE_FIELD_COUNT \
    (sizeof(percentile_fields) / sizeof(percentile_fields[0]))

struct percentile {
    uint64_t count;
    struct sum sum;
    double min;              /* meaningful when count > 0 */
    double max;
    struct ddsketch *sketch; /* owned */
};

static void *
percentile_create(const struct state_config *config)
{
    struct percentile *p = xcalloc(1, sizeof(*p));

    (void)config;
    p->sketch = ddsketch_create();
    return p;
}

static void
percentile_destroy(void *state)
{
    struct percentile *p = state;

    if (p == NULL)
        return;
    ddsketch_destroy(p->sketch);
    free(p);
}

static void *
percentile_clone(const void *state)
{
    const struct percentile *src = state;
    struct percentile *p = xmalloc(sizeof(*p));

    *p = *src;
    p->sketch = ddsketch_clone(src->sketch);
    return p;
}

static void
percentile_fold(void *state, const struct event *ev)
{
    struct percentile *p = state;
    double v = ev->value + 0.0;    /* -0 becomes +0: min/max stay canonical */

    /* Fails only for an invalid value or past DDSKETCH_COUNT_MAX events;
     * the event is then left out of every field alike. */
    if (ddsketch_add(p->sketch, v) != 0)
        return;
    if (p->count == 0 || v < p->min)
        p->min = v;
    if (p->count == 0 || v > p->max)
        p->max = v;
    p->count++;
    sum_add(&p->sum, v);
}

static int
percentile_merge(void *dst, const void *src)
{
    struct percentile *d = dst;
    const struct percentile *s = src;

    if (s->count == 0)
        return 0;
    if (d == s) {   /* merging a state into itself: merge a copy */
        void *copy = percentile_clone(s);
        int rc = percentile_merge(d, copy);

        percentile_destroy(copy);
        return rc;
    }
    if (ddsketch_merge(d->sketch, s->sketch) != 0)
        return -1;
    if (d->count == 0 || s->min < d->min)
        d->min = s->min;
    if (d->count == 0 || s->max > d->max)
        d->max = s->max;
    d->count += s->count;
    sum_merge(&d->sum, &s->sum);
    return 0;
}

static int
percentile_empty(const void *state)
{
    return ((const struct percentile *)state)->count == 0;
}

static void
percentile_encode(const void *state, struct buf_writer *out)
{
    const struct percentile *p = state;

    buf_put_u8(out, EVENT_PERCENTILE);
    buf_put_u8(out, STATE_FORMAT_VERSION);
    buf_put_varint(out, p->count);
    sum_encode(&p->sum, out);
    if (p->count > 0) {
        buf_put_double(out, p->min);
        buf_put_double(out, p->max);
    }
    ddsketch_encode(p->sketch, out);
}

/* A canonical extreme: finite, within the event limit, and not -0. */
static int
extreme_valid(double v)
{
    return fabs(v) <= EVENT_VALUE_MAX && !(v == 0 && signbit(v));
}

static void *
percentile_decode(struct buf_reader *in, char *err, size_t errlen)
{
    struct percentile *p = xcalloc(1, sizeof(*p));
    uint8_t type, version;

    if (buf_get_u8(in, &type) != 0 || buf_get_u8(in, &version) != 0) {
        snprintf(err, errlen, "percentile: truncated");
        goto fail;
    }
    if (type != EVENT_PERCENTILE || version != STATE_FORMAT_VERSION) {
        snprintf(err, errlen, "percentile: bad type %u or version %u", type,
                 version);
        goto fail;
    }
    if (buf_get_varint(in, &p->count) != 0 || sum_decode(&p->sum, in) != 0
        || (p->count > 0 && (buf_get_double(in, &p->min) != 0
                             || buf_get_double(in, &p->max) != 0))) {
        snprintf(err, errlen, "percentile: truncated or malformed header");
        goto fail;
    }
    if (p->count > 0
        && (!extreme_valid(p->min) || !extreme_valid(p->max)
            || p->min > p->max)) {
        snprintf(err, errlen, "percentile: bad min or max");
        goto fail;
    }
    if (p->count == 0 && sum_value(&p->sum) != 0) {
        snprintf(err, errlen, "percentile: non-zero sum without values");
        goto fail;
    }
    /* Folded values obey |v| <= EVENT_VALUE_MAX, so merging such sums
     * never overflows; a larger one would merge into infinity, which no
     * encoding can hold. */
    if (fabs(sum_value(&p->sum)) > (double)p->count * EVENT_VALUE_MAX) {
        snprintf(err, errlen, "percentile: sum larger than count values "
                 "allow");
        goto fail;
    }
    p->sketch = ddsketch_decode(in);
    if (p->sketch == NULL) {
        snprintf(err, errlen, "percentile: truncated or malformed sketch");
        goto fail;
    }
    if (ddsketch_count(p->sketch) != p->count) {
        snprintf(err, errlen, "percentile: count %llu but sketch holds %llu",
                 (unsigned long long)p->count,
                 (unsigned long long)ddsketch_count(p->sketch));
        goto fail;
    }
    if (p->count > 0
        && !ddsketch_extremes_consistent(p->sketch, p->min, p->max)) {
        snprintf(err, errlen, "percentile: min or max disagrees with sketch");
        goto fail;
    }
    return p;

fail:
    percentile_destroy(p);
    return NULL;
}

/* ceil(PER_MILLE * COUNT / 1000) without overflow or rounding. */
static uint64_t
percentile_rank(uint64_t per_mille, uint64_t count)
{
    uint64_t whole = count / PERCENTILE_RANK_DENOMINATOR;
    uint64_t part = count % PERCENTILE_RANK_DENOMINATOR * per_mille;

    return whole * per_mille + (part + PERCENTILE_RANK_DENOMINATOR - 1)
                               / PERCENTILE_RANK_DENOMINATOR;
}

static struct json_object *
percentile_render(const void *state, const struct state_render_context *ctx)
{
    const struct percentile *p = state;
    struct json_object *o = json_object_new_object();

    (void)ctx;
    json_object_object_add(o, "count", json_object_new_int64((int64_t)p->count));
    json_object_object_add(o, "sum",
                           json_object_new_double(sum_value(&p->sum)));
    json_object_object_add(o, "min", p->count > 0
                                     ? json_object_new_double(p->min) : NULL);
    json_object_object_add(o, "max", p->count > 0
                                     ? json_object_new_double(p->max) : NULL);
    for (size_t i = 0; i < PERCENTILE_FIELD_COUNT; i++) {
        struct json_object *v = NULL;

        if (p->count > 0) {
            double q = ddsketch_quantile_at_rank(
                p->sketch, percentile_rank(percentile_fields[i].per_mille,
                                           p->count));

            q = q < p->min ? p->min : q > p->max ? p->max : q;
            v = json_object_new_double(q);
        }
        json_object_object_add(o, percentile_fields[i].field, v);
    }
    return o;
}

const struct state_ops percentile_ops = {
    .type = EVENT_PERCENTILE,
    .create = percentile_create,
    .destroy = percentile_destroy,
    .clone = percentile_clone,
    .fold = percentile_fold,
    .merge = percentile_merge,
    .empty = percentile_empty,
    .encode = percentile_encode,
    .decode = percentile_decode,
    .render = percentile_render,
};
