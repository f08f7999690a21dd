/*
 * window: the bucket layout of the query windows, bucket alignment,
 * retention, and the "too old" edge. docs/core.md explains the choice.
 *
 *   ring    bucket width  retained  capacity  serves windows
 *   10s     10 s          60        91        1m (last 6), 10m (last 60)
 *   1min    60 s          60        66        1h (60)
 *   15min   900 s         96        98        1d (96)
 *   -       -             -         -         all (one lifetime state)
 *
 * Bucket starts are multiples of the width in UTC seconds since the epoch,
 * so states from any instance merge bucket by bucket. A ring retains the
 * buckets whose start lies within its last RETAINED widths counted from the
 * bucket holding "now"; its capacity adds room for events up to 5 minutes
 * in the future, so a future bucket never evicts a retained one.
 *
 * A window of W seconds covers every bucket that starts within the last W
 * seconds, the current partial bucket included: k = W / width buckets,
 * the oldest starting at align(now) - (k - 1) * width.
 */
#ifndef TALLY_WINDOW_H
#define TALLY_WINDOW_H

#include <stddef.h>
#include <stdint.h>

enum window {
    WINDOW_1M = 0,
    WINDOW_10M = 1,
    WINDOW_1H = 2,
    WINDOW_1D = 3,
    WINDOW_ALL = 4,
};
#define WINDOW_COUNT 5

enum ring {
    RING_10S = 0,
    RING_1MIN = 1,
    RING_15MIN = 2,
};
#define RING_COUNT 3

/* Partial states travel per 10-second granule: the finest bucket width,
 * which divides every other width. */
#define WINDOW_GRANULE_S 10

struct ring_layout {
    int64_t width_s;
    int retained;        /* buckets a query may read */
    int capacity;        /* retained + room for future buckets */
};

struct window_layout {
    const char *name;    /* "1m" ... "all" */
    int64_t seconds;     /* W; 0 for all */
    enum ring ring;      /* the ring it reads (1d's for the all series) */
    int buckets;         /* k = W / width */
};

const struct ring_layout *window_ring_layout(enum ring ring);
const struct window_layout *window_layout(enum window window);

/* 0 and *WINDOW set, or -1 if S (LEN bytes) names no window. */
int window_parse(const char *s, size_t len, enum window *window);
const char *window_name(enum window window);

/* Start (seconds) of the bucket of width WIDTH_S holding TIME_US. */
int64_t window_align(int64_t time_us, int64_t width_s);

/* 1 if RING retains the bucket starting at BUCKET_START_S at NOW_US: not
 * older than the ring's retention and not beyond the bucket of NOW_US plus
 * the 5-minute future limit (so a far-future bucket cannot evict a
 * retained one), else 0. */
int window_ring_retains(enum ring ring, int64_t bucket_start_s, int64_t now_us);

/* Start of the oldest bucket WINDOW (not WINDOW_ALL) covers at NOW_US. */
int64_t window_oldest_bucket(enum window window, int64_t now_us);

/* Seconds WINDOW covers at NOW_US, from the start of its oldest bucket to
 * NOW: between W - width and W. Used for `rate`. */
double window_span_seconds(enum window window, int64_t now_us);

/* The oldest event time accepted at NOW_US: the start of the oldest bucket
 * the longest ring (1d) retains. */
int64_t window_oldest_accepted_us(int64_t now_us);

#endif
