/*
 * state: the interface every state type implements, and the dispatch from
 * an event type to its implementation.
 *
 *   counter.c  gauge.c  percentile.c  unique.c  recent.c
 *        \        |         |            |        /
 *         +------ struct state_ops (this file) --+
 *                           |
 *                   metric.c (windows of buckets)
 *
 * A state is an opaque pointer owned by whoever created it. One state covers
 * one bucket of one window, or a metric's lifetime (`all`), or a partial
 * fold of a request's events. Merge is associative and commutative, so a
 * query can merge bucket states from any instances in any order.
 *
 * Encodings start with two bytes, the event type and the state format
 * version, and are documented in schema/state-encoding.md.
 */
#ifndef TALLY_STATE_H
#define TALLY_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"

struct json_object;

#define STATE_FORMAT_VERSION 1
#define RECENT_DEFAULT_KEEP 100
#define RECENT_KEEP_MAX 10000

/* Options that shape a new state. */
struct state_config {
    uint32_t recent_keep;     /* K for `recent`; 0 means the default */
};

/* What a rendering needs beyond the state itself. */
struct state_render_context {
    double span_seconds;      /* seconds the state covers, for `rate` */
};

struct state_ops {
    enum event_type type;
    /* Returns a new empty state, owned by the caller. CONFIG may be NULL. */
    void *(*create)(const struct state_config *config);
    void (*destroy)(void *state);
    /* Returns an independent copy. */
    void *(*clone)(const void *state);
    /* Folds one event (already validated, of this type) into STATE. */
    void (*fold)(void *state, const struct event *ev);
    /* DST := merge(DST, SRC). SRC is not changed. 0, or -1 if they cannot
     * be merged (different parameters); DST is then unchanged. */
    int (*merge)(void *dst, const void *src);
    /* 1 if nothing was ever folded or merged into STATE. */
    int (*empty)(const void *state);
    /* Appends the encoding of STATE, 2-byte prefix included, to OUT. */
    void (*encode)(const void *state, struct buf_writer *out);
    /* Decodes one state (prefix included) from IN. Returns a new state
     * owned by the caller, or NULL on any malformed, truncated or
     * out-of-range input, with a reason in ERR. Never reads past IN. */
    void *(*decode)(struct buf_reader *in, char *err, size_t errlen);
    /* Returns a new JSON object with the type's query fields (DESIGN.md
     * "Interfaces"), owned by the caller. */
    struct json_object *(*render)(const void *state,
                                  const struct state_render_context *ctx);
};

/* The implementation for TYPE, or NULL for an invalid type. */
const struct state_ops *state_ops_for(enum event_type type);

/* Decodes a state of any type (read from its prefix); *TYPE is set on
 * success. Same ownership and error rules as state_ops.decode. */
void *state_decode_any(struct buf_reader *in, enum event_type *type,
                       char *err, size_t errlen);

extern const struct state_ops counter_ops;
extern const struct state_ops gauge_ops;
extern const struct state_ops percentile_ops;
extern const struct state_ops unique_ops;
extern const struct state_ops recent_ops;

#endif
