/*
 * metric: one metric's whole state: its type and generation, a lifetime
 * accumulator (`all`) and the rings of time buckets of window.h, each
 * bucket holding a state of the metric's type.
 *
 *   event / partial state
 *        |
 *        v
 *   metric_fold ----> all  (always)
 *               \---> ring 10s   bucket align(t, 10)   (if retained)
 *               \---> ring 1min  bucket align(t, 60)   (if retained)
 *               \---> ring 15min bucket align(t, 900)  (if retained)
 *
 *   metric_render(window, now): merge the window's buckets -> render JSON
 *
 * `recent` keeps only `all`: it is not windowed.
 * A ring has CAPACITY slots, bucket start / width mod capacity; a slot
 * holding an older start than the one arriving is reset, a slot holding a
 * newer one refuses the older bucket (counted as expired). Merging two
 * metrics takes, slot by slot, the newer bucket or the merge of equal ones,
 * so it is associative and commutative like the states themselves. Only
 * the buckets that hold something take memory: a metric active for a few
 * seconds holds `all` and one bucket per ring.
 */
#ifndef TALLY_METRIC_H
#define TALLY_METRIC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"
#include "state.h"
#include "window.h"

#define METRIC_FORMAT_VERSION 1

struct metric;
struct json_object;

/* Returns a new empty metric owned by the caller (metric_destroy). CONFIG
 * may be NULL for defaults; it is copied. */
struct metric *metric_create(enum event_type type, uint64_t generation,
                             const struct state_config *config);
void metric_destroy(struct metric *m);
/* Returns an independent copy owned by the caller. */
struct metric *metric_clone(const struct metric *m);

enum event_type metric_type(const struct metric *m);
uint64_t metric_generation(const struct metric *m);
/* Earliest and latest event time seen; 0 and -1 if none yet. */
int metric_time_range(const struct metric *m, int64_t *first_us,
                      int64_t *last_us);
/* Ring placements refused because the bucket was older than the ring
 * retains at the time it was applied (the event still counts in `all`). */
uint64_t metric_expired(const struct metric *m);

/* Folds EV (validated, of the metric's type) as applied at NOW_US. */
void metric_fold(struct metric *m, const struct event *ev, int64_t now_us);

/* Merges STATE (of the metric's type, not consumed) as a partial state of
 * events whose times lie in [FIRST_US, LAST_US], all within the 10-second
 * granule starting at GRANULE_START_S. 0, or -1 (wrong type, misaligned
 * granule, times outside it, or states that cannot merge). */
int metric_merge_partial(struct metric *m, int64_t granule_start_s,
                         int64_t first_us, int64_t last_us, const void *state,
                         int64_t now_us);

/* DST := merge(DST, SRC). 0, or -1 if types differ. Generations must be
 * handled by the caller (a newer generation replaces, never merges). */
int metric_merge(struct metric *dst, const struct metric *src);

/* Canonical encoding (schema/state-encoding.md): equal metrics give equal
 * bytes. */
void metric_encode(const struct metric *m, struct buf_writer *out);
/* Returns a new metric owned by the caller, or NULL with a reason in ERR on
 * malformed, truncated or non-canonical input. */
struct metric *metric_decode(struct buf_reader *in, char *err, size_t errlen);

/* The query answer for WINDOW at NOW_US: a new JSON object owned by the
 * caller, {"type":..., "window":..., <type fields>} plus "series" when
 * WITH_SERIES. */
struct json_object *metric_render(const struct metric *m, enum window window,
                                  int64_t now_us, int with_series);

/* The state of RING's bucket starting at START_S (borrowed, valid until
 * the metric changes), or NULL if that bucket is not held. */
const void *metric_bucket_at(const struct metric *m, enum ring ring,
                             int64_t start_s);
/* The starts of the buckets RING holds within [FROM_S, TO_S], ascending,
 * written to STARTS (room for MAX); returns how many. */
size_t metric_bucket_starts(const struct metric *m, enum ring ring,
                            int64_t from_s, int64_t to_s, int64_t *starts,
                            size_t max);
/* The lifetime state (borrowed, valid until the metric changes). */
const void *metric_all(const struct metric *m);

/* Assembling a metric from cached pieces (the frontend's query path).
 * metric_set_bucket takes ownership of STATE (of the metric's type) and
 * puts it as RING's bucket at START_S, replacing what that slot holds
 * unless the slot holds a newer bucket; 0, or -1 (STATE freed) for a
 * newer slot, a misaligned start or a metric without rings (recent).
 * metric_set_all takes ownership of STATE and makes it the lifetime state,
 * with the times of its events in [FIRST_US, LAST_US]. */
int metric_set_bucket(struct metric *m, enum ring ring, int64_t start_s,
                      void *state);
void metric_set_all(struct metric *m, void *state, int64_t first_us,
                    int64_t last_us);

/* Returns a new state (owned by the caller) merging the buckets WINDOW
 * covers at NOW_US, or a clone of `all` for WINDOW_ALL and for `recent`. */
void *metric_window_state(const struct metric *m, enum window window,
                          int64_t now_us);

#endif
