/*
 * cacheval: the bodies of tally's cache values, after the 32-byte header
 * of schema/cache-value.md. The aggregator encodes them from a metric; a
 * frontend decodes them and assembles a metric it can render exactly as
 * the owner would (metric_render).
 *
 *   open buckets   first_us svarint, last_us svarint, `all` state,
 *                  for each of the 3 rings: count varint, count x
 *                  start_s svarint (ascending) -- every bucket the owner
 *                  holds, so a reader can tell a missing value (evicted,
 *                  flushed) from an empty bucket,
 *                  count u8, count x (ring u8, start_s svarint, state)
 *                  -- version 1: the bucket of each ring holding "now" at
 *                  the flush; version 2: those, and closed buckets that
 *                  still change (late events), several per ring
 *   closed bucket  ring u8, start_s svarint, state
 *   tombstone      (empty)
 *
 *   query:  open value --cacheval_decode_open--> metric (all + open buckets)
 *           closed values --cacheval_apply_closed--> the window's buckets
 *
 * A bucket may sit both in the open value and in its own closed value
 * (for example one written early for a future event); the value with the
 * higher sequence wins, because both come from one per-metric counter.
 */
#ifndef TALLY_CACHEVAL_H
#define TALLY_CACHEVAL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "codec.h"
#include "metric.h"

#define CACHEVAL_HELD_MAX 255     /* buckets in one open value: u8 count */

/* One bucket of a metric: its ring and start. */
struct cacheval_bucket {
    enum ring ring;
    int64_t start_s;
};

/* The closed marks of a version 2 open value (schema/cache-value.md,
 * "Closed marks"): what a reader needs to keep closed buckets it has read
 * without reading them again. FLUSH_FIRST is the first sequence the owner
 * used for the metric in the flush that wrote the open value (the open
 * value's own sequence when that flush wrote no closed value);
 * CLOSED_SEQ[r] the sequence of the newest closed value of ring r the
 * owner has written in this generation, 0 if none since it got the
 * metric. Both are below the open value's sequence, or equal to it for
 * FLUSH_FIRST. */
struct cacheval_marks {
    uint64_t flush_first;
    uint64_t closed_seq[RING_COUNT];
};

/* A decoded open-buckets or tombstone value. */
struct cacheval_open {
    struct codec_cache_header header;
    struct metric *metric;            /* owned; NULL for a tombstone */
    struct cacheval_bucket held[CACHEVAL_HELD_MAX];  /* the buckets the */
    size_t held_count;                               /* open value holds */
    int64_t *present[RING_COUNT];     /* owned: starts the owner holds */
    size_t present_count[RING_COUNT];
    int has_marks;                    /* MARKS was in the value */
    struct cacheval_marks marks;
};

/* Append a whole value, header H included (H's kind is set here; its type
 * must be M's, 0 for the tombstone; its version says the format). The open
 * value holds M's `all` and, for each ring, the bucket holding NOW_US if M
 * has it; in version 2 also the N closed buckets CLOSED[] that M has (at
 * most CACHEVAL_HELD_MAX - RING_COUNT; none in version 1).
 * cacheval_encode_closed returns -1 (OUT untouched) if M has no such
 * bucket. */
void cacheval_encode_open(const struct metric *m, struct codec_cache_header *h,
                          int64_t now_us, const struct cacheval_bucket *closed,
                          size_t n, struct buf_writer *out);
int cacheval_encode_closed(const struct metric *m,
                           struct codec_cache_header *h, enum ring ring,
                           int64_t start_s, struct buf_writer *out);
void cacheval_encode_tombstone(struct codec_cache_header *h,
                               struct buf_writer *out);
/* Appends MARKS to a version 2 open value that cacheval_encode_open has
 * just written to OUT with header H (its sequence; nothing to a version 1
 * value, which has no room for them). */
void cacheval_encode_marks(const struct codec_cache_header *h,
                           const struct cacheval_marks *marks,
                           struct buf_writer *out);
/* 1 if OPEN's marks show that no closed value of RING was written in the
 * flush that wrote OPEN, so every closed value of RING up to
 * marks.closed_seq[RING] was stored before OPEN was; 0 without marks. */
int cacheval_ring_settled(const struct cacheval_open *open, enum ring ring);

/* Decodes an open-buckets or tombstone value (LEN bytes at VALUE,
 * borrowed) into OUT. 0, or -1 with a reason in ERR (a closed-bucket
 * value, a bad header or body). On 0 the caller releases OUT with
 * cacheval_open_release. */
int cacheval_decode_open(const uint8_t *value, size_t len,
                         struct cacheval_open *out, char *err, size_t errlen);

/* Puts the bucket of a closed-bucket value into OPEN's metric unless the
 * open value holds a fresher copy of it (a higher sequence) or the value
 * belongs to another generation or type. 1 applied, 0 skipped, -1 malformed (reason in
 * ERR). */
int cacheval_apply_closed(struct cacheval_open *open, const uint8_t *value,
                          size_t len, char *err, size_t errlen);

/* A closed-bucket value in two steps, so a reader that already holds the
 * bucket at that sequence need not decode its state again:
 * cacheval_closed_begin reads the header, ring and start of the value IN
 * holds and leaves IN at the state (0, or -1 with a reason in ERR: not a
 * closed-bucket value, a bad header, ring or start); cacheval_closed_state
 * then reads the state, which must be of TYPE and end the value (the
 * state, owned by the caller, or NULL with a reason). */
int cacheval_closed_begin(struct buf_reader *in, struct codec_cache_header *h,
                          enum ring *ring, int64_t *start_s, char *err,
                          size_t errlen);
void *cacheval_closed_state(struct buf_reader *in, enum event_type type,
                            char *err, size_t errlen);

/* The starts of the closed buckets a query of WINDOW at NOW_US needs
 * (those the owner holds within the window; for WINDOW_ALL, the ring the
 * all-series reads), written to STARTS (room for MAX); returns how many
 * and sets *RING. */
size_t cacheval_wanted(const struct cacheval_open *open, enum window window,
                       int64_t now_us, enum ring *ring, int64_t *starts,
                       size_t max);
/* 1 if OPEN's metric now holds every bucket cacheval_wanted named, else 0
 * (a value was missing: ask the owner). */
int cacheval_complete(const struct cacheval_open *open, enum window window,
                      int64_t now_us);

void cacheval_open_release(struct cacheval_open *open);

#endif
