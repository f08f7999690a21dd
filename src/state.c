/*
 * state: dispatch from an event type to its state implementation, and
 * decoding of a state whose type is read from its encoding.
 */
#include "state.h"

#include <stdio.h>

static const struct state_ops *const state_table[] = {
    [EVENT_COUNTER] = &counter_ops,
    [EVENT_GAUGE] = &gauge_ops,
    [EVENT_PERCENTILE] = &percentile_ops,
    [EVENT_UNIQUE] = &unique_ops,
    [EVENT_RECENT] = &recent_ops,
};

const struct state_ops *
state_ops_for(enum event_type type)
{
    if (type < EVENT_TYPE_MIN || type > EVENT_TYPE_MAX)
        return NULL;
    return state_table[type];
}

void *
state_decode_any(struct buf_reader *in, enum event_type *type, char *err,
                 size_t errlen)
{
    const struct state_ops *ops;
    void *state;

    if (buf_remaining(in) < 1) {
        snprintf(err, errlen, "state: truncated");
        return NULL;
    }
    ops = state_ops_for((enum event_type)in->data[in->pos]);
    if (ops == NULL) {
        snprintf(err, errlen, "state: unknown type %u", in->data[in->pos]);
        return NULL;
    }
    state = ops->decode(in, err, errlen);
    if (state != NULL)
        *type = ops->type;
    return state;
}
