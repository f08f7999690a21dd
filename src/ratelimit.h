/*
 * ratelimit: a token bucket per client key (a token's name or an IP
 * address), for the frontend's --rate-limit. Each key may make RATE
 * requests per second on average, and BURST at once after being idle.
 * Thread-safe; keys idle long enough to have a full bucket again are
 * forgotten, so memory follows the number of recently active clients.
 */
#ifndef TALLY_RATELIMIT_H
#define TALLY_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

struct ratelimit;

/* RATE >= 1 requests per second, BURST >= 1. */
struct ratelimit *ratelimit_create(long rate, long burst);
void ratelimit_destroy(struct ratelimit *r);

/* Takes one request from KEY's bucket at time NOW_US (microseconds,
 * monotonic). Returns 1 when allowed, 0 when the bucket is empty. */
int ratelimit_take(struct ratelimit *r, const char *key, int64_t now_us);

/* Keys remembered now. */
size_t ratelimit_keys(struct ratelimit *r);

#endif
