/*
 * window: tables for the rings and windows of window.h, and the time
 * arithmetic on them. All bucket arithmetic is in whole seconds; event
 * times are microseconds and are floored into buckets.
 */
#include "window.h"

#include <string.h>

#include "event.h"

static const struct ring_layout window_rings[RING_COUNT] = {
    [RING_10S] = { .width_s = 10, .retained = 60, .capacity = 91 },
    [RING_1MIN] = { .width_s = 60, .retained = 60, .capacity = 66 },
    [RING_15MIN] = { .width_s = 900, .retained = 96, .capacity = 98 },
};

static const struct window_layout window_windows[WINDOW_COUNT] = {
    [WINDOW_1M] = { .name = "1m", .seconds = 60, .ring = RING_10S,
                    .buckets = 6 },
    [WINDOW_10M] = { .name = "10m", .seconds = 600, .ring = RING_10S,
                     .buckets = 60 },
    [WINDOW_1H] = { .name = "1h", .seconds = 3600, .ring = RING_1MIN,
                    .buckets = 60 },
    [WINDOW_1D] = { .name = "1d", .seconds = 86400, .ring = RING_15MIN,
                    .buckets = 96 },
    [WINDOW_ALL] = { .name = "all", .seconds = 0, .ring = RING_15MIN,
                     .buckets = 96 },
};

const struct ring_layout *
window_ring_layout(enum ring ring)
{
    return &window_rings[ring];
}

const struct window_layout *
window_layout(enum window window)
{
    return &window_windows[window];
}

int
window_parse(const char *s, size_t len, enum window *window)
{
    for (int i = 0; i < WINDOW_COUNT; i++) {
        const char *name = window_windows[i].name;

        if (strlen(name) == len && memcmp(name, s, len) == 0) {
            *window = (enum window)i;
            return 0;
        }
    }
    return -1;
}

const char *
window_name(enum window window)
{
    return window_windows[window].name;
}

int64_t
window_align(int64_t time_us, int64_t width_s)
{
    int64_t seconds = time_us / EVENT_US_PER_SECOND;

    if (time_us < 0 && time_us % EVENT_US_PER_SECOND != 0)
        seconds--;                       /* floor, not truncate */
    if (seconds < 0 && seconds % width_s != 0)
        return seconds - (seconds % width_s) - width_s;
    return seconds - (seconds % width_s);
}

int
window_ring_retains(enum ring ring, int64_t bucket_start_s, int64_t now_us)
{
    const struct ring_layout *r = &window_rings[ring];
    int64_t current = window_align(now_us, r->width_s);
    int64_t newest = window_align(now_us + EVENT_FUTURE_LIMIT_US, r->width_s);

    return bucket_start_s > current - r->retained * r->width_s
           && bucket_start_s <= newest;
}

int64_t
window_oldest_bucket(enum window window, int64_t now_us)
{
    const struct window_layout *w = &window_windows[window];
    int64_t width = window_rings[w->ring].width_s;

    return window_align(now_us, width) - (w->buckets - 1) * width;
}

double
window_span_seconds(enum window window, int64_t now_us)
{
    int64_t oldest_us = window_oldest_bucket(window, now_us)
                        * EVENT_US_PER_SECOND;

    return (double)(now_us - oldest_us) / (double)EVENT_US_PER_SECOND;
}

int64_t
window_oldest_accepted_us(int64_t now_us)
{
    const struct ring_layout *r = &window_rings[RING_15MIN];

    return (window_align(now_us, r->width_s)
            - (r->retained - 1) * r->width_s) * EVENT_US_PER_SECOND;
}
