/*
 * unique: the `unique` state type, a distinct count per bucket. It is a thin
 * wrapper that plugs a HyperLogLog sketch (hll.c) into struct state_ops.
 *
 *   event.str --fold--> hll registers --render--> {"distinct": N}
 *                           |   ^
 *                     encode|   |decode    EVENT_UNIQUE, version, hll bytes
 *                           v   |
 *                        bytes (schema/state-unique.md)
 *
 * The only exported symbol is unique_ops.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "hll.h"
#include "state.h"

/* The oldest state format version this reader accepts ("version N reads
 * N-1"). The unique layout has not changed since version 1. */
#define UNIQUE_FORMAT_OLDEST 1
/* Estimates at or above this do not fit an int64 and render as INT64_MAX
 * (only a saturated sketch gets there; its estimate is infinite). */
#define UNIQUE_RENDER_LIMIT 9.2e18

static void *
unique_create(const struct state_config *config)
{
    (void)config;
    return hll_create();
}

static void
unique_destroy(void *state)
{
    hll_destroy(state);
}

static void *
unique_clone(const void *state)
{
    return hll_clone(state);
}

static void
unique_fold(void *state, const struct event *ev)
{
    hll_add(state, ev->str, ev->str_len);
}

static int
unique_merge(void *dst, const void *src)
{
    hll_merge(dst, src);
    return 0;
}

static int
unique_empty(const void *state)
{
    return hll_nonzero(state) == 0;
}

static void
unique_encode(const void *state, struct buf_writer *out)
{
    buf_put_u8(out, EVENT_UNIQUE);
    buf_put_u8(out, STATE_FORMAT_VERSION);
    hll_encode(state, out);
}

static void *
unique_decode(struct buf_reader *in, char *err, size_t errlen)
{
    uint8_t type, version;
    int oldest = STATE_FORMAT_VERSION - 1 < UNIQUE_FORMAT_OLDEST
                     ? UNIQUE_FORMAT_OLDEST : STATE_FORMAT_VERSION - 1;

    if (buf_get_u8(in, &type) != 0 || buf_get_u8(in, &version) != 0) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "unique: truncated prefix");
        return NULL;
    }
    if (type != EVENT_UNIQUE) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "unique: wrong state type %u", type);
        return NULL;
    }
    if (version < oldest || version > STATE_FORMAT_VERSION) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "unique: unsupported format version %u",
                     version);
        return NULL;
    }
    return hll_decode(in, err, errlen);
}

static struct json_object *
unique_render(const void *state, const struct state_render_context *ctx)
{
    struct json_object *obj = json_object_new_object();
    double estimate = hll_estimate(state);
    int64_t distinct = estimate < UNIQUE_RENDER_LIMIT
                           ? (int64_t)llround(estimate) : INT64_MAX;

    (void)ctx;
    json_object_object_add(obj, "distinct", json_object_new_int64(distinct));
    return obj;
}

const struct state_ops unique_ops = {
    .type = EVENT_UNIQUE,
    .create = unique_create,
    .destroy = unique_destroy,
    .clone = unique_clone,
    .fold = unique_fold,
    .merge = unique_merge,
    .empty = unique_empty,
    .encode = unique_encode,
    .decode = unique_decode,
    .render = unique_render,
};
