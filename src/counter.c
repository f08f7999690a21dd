/*
 * counter: count and sum of the values folded in. Answers count, sum and
 * rate (sum per second over the span the caller says the state covers).
 *
 * Encoding (after the type/version prefix): count varint, sum (sum.h).
 * A bucket of 60,000 events with an integer total takes 2 + 3 + 1 + 4..8
 * bytes.
 */
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "state.h"
#include "sum.h"
#include "xalloc.h"

struct counter {
    uint64_t count;
    struct sum sum;
};

static void *
counter_create(const struct state_config *config)
{
    (void)config;
    return xcalloc(1, sizeof(struct counter));
}

static void
counter_destroy(void *state)
{
    free(state);
}

static void *
counter_clone(const void *state)
{
    struct counter *c = xmalloc(sizeof(*c));

    *c = *(const struct counter *)state;
    return c;
}

static void
counter_fold(void *state, const struct event *ev)
{
    struct counter *c = state;

    c->count++;
    sum_add(&c->sum, ev->value);
}

static int
counter_merge(void *dst, const void *src)
{
    struct counter *d = dst;
    const struct counter *s = src;

    d->count += s->count;
    sum_merge(&d->sum, &s->sum);
    return 0;
}

static int
counter_empty(const void *state)
{
    return ((const struct counter *)state)->count == 0;
}

static void
counter_encode(const void *state, struct buf_writer *out)
{
    const struct counter *c = state;

    buf_put_u8(out, EVENT_COUNTER);
    buf_put_u8(out, STATE_FORMAT_VERSION);
    buf_put_varint(out, c->count);
    sum_encode(&c->sum, out);
}

static void *
counter_decode(struct buf_reader *in, char *err, size_t errlen)
{
    struct counter c = { 0 };
    uint8_t type, version;

    if (buf_get_u8(in, &type) != 0 || buf_get_u8(in, &version) != 0
        || buf_get_varint(in, &c.count) != 0 || sum_decode(&c.sum, in) != 0) {
        snprintf(err, errlen, "counter: truncated or malformed");
        return NULL;
    }
    if (type != EVENT_COUNTER || version != STATE_FORMAT_VERSION) {
        snprintf(err, errlen, "counter: bad type %u or version %u", type,
                 version);
        return NULL;
    }
    if (c.count == 0 && sum_value(&c.sum) != 0) {
        snprintf(err, errlen, "counter: non-zero sum without events");
        return NULL;
    }
    if (fabs(sum_value(&c.sum)) > (double)c.count * EVENT_VALUE_MAX) {
        snprintf(err, errlen, "counter: sum larger than count events allow");
        return NULL;
    }
    return counter_clone(&c);
}

static struct json_object *
counter_render(const void *state, const struct state_render_context *ctx)
{
    const struct counter *c = state;
    struct json_object *o = json_object_new_object();
    double sum = sum_value(&c->sum);
    double span = ctx != NULL ? ctx->span_seconds : 0;

    json_object_object_add(o, "count", json_object_new_int64((int64_t)c->count));
    json_object_object_add(o, "sum", json_object_new_double(sum));
    json_object_object_add(o, "rate",
                           json_object_new_double(span > 0 ? sum / span : 0));
    return o;
}

const struct state_ops counter_ops = {
    .type = EVENT_COUNTER,
    .create = counter_create,
    .destroy = counter_destroy,
    .clone = counter_clone,
    .fold = counter_fold,
    .merge = counter_merge,
    .empty = counter_empty,
    .encode = counter_encode,
    .decode = counter_decode,
    .render = counter_render,
};
