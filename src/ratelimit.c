/*
 * ratelimit: token buckets in a chained hash table under one mutex. A
 * bucket is refilled lazily on each take from the time since the last.
 * Levels are counted in millionths of a request, so that a refill of
 * RATE per second is exact per microsecond, in integers.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "ratelimit.h"
#include "xalloc.h"

#define RATELIMIT_BUCKETS 4096
#define RATELIMIT_SWEEP_MIN 1024    /* keys before the first sweep */
#define RATELIMIT_UNIT 1000000     /* millionths of a request */

struct ratelimit_entry {
    struct ratelimit_entry *next;
    int64_t level;                  /* millionths */
    int64_t last_us;
    char key[];
};

struct ratelimit {
    pthread_mutex_t lock;
    int64_t rate;                   /* requests per second = millionths
                                       per microsecond */
    int64_t burst;                  /* millionths */
    size_t count;
    size_t sweep_at;                /* sweep when count reaches it */
    struct ratelimit_entry *buckets[RATELIMIT_BUCKETS];
};

struct ratelimit *
ratelimit_create(long rate, long burst)
{
    struct ratelimit *r = xcalloc(1, sizeof(*r));

    pthread_mutex_init(&r->lock, NULL);
    r->rate = rate;
    r->burst = (int64_t)burst * RATELIMIT_UNIT;
    r->sweep_at = RATELIMIT_SWEEP_MIN;
    return r;
}

void
ratelimit_destroy(struct ratelimit *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < RATELIMIT_BUCKETS; i++) {
        while (r->buckets[i] != NULL) {
            struct ratelimit_entry *e = r->buckets[i];

            r->buckets[i] = e->next;
            free(e);
        }
    }
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* The level of E's bucket at NOW_US. */
static int64_t
ratelimit_level(const struct ratelimit *r, const struct ratelimit_entry *e,
                int64_t now_us)
{
    int64_t idle = now_us - e->last_us;

    if (idle <= 0)
        return e->level;
    if (idle >= (r->burst - e->level) / r->rate + 1)
        return r->burst;
    return e->level + idle * r->rate;
}

/* Forgets every key whose bucket is full again: it is as if it had never
 * been seen. */
static void
ratelimit_sweep(struct ratelimit *r, int64_t now_us)
{
    for (size_t i = 0; i < RATELIMIT_BUCKETS; i++) {
        struct ratelimit_entry **p = &r->buckets[i];

        while (*p != NULL) {
            struct ratelimit_entry *e = *p;

            if (ratelimit_level(r, e, now_us) >= r->burst) {
                *p = e->next;
                free(e);
                r->count--;
            } else {
                p = &e->next;
            }
        }
    }
    r->sweep_at = 2 * r->count > RATELIMIT_SWEEP_MIN ? 2 * r->count
                                                     : RATELIMIT_SWEEP_MIN;
}

int
ratelimit_take(struct ratelimit *r, const char *key, int64_t now_us)
{
    size_t len = strlen(key);
    size_t b = (size_t)(hash_fnv1a64(key, len) % RATELIMIT_BUCKETS);
    struct ratelimit_entry *e;
    int allowed;

    pthread_mutex_lock(&r->lock);
    for (e = r->buckets[b]; e != NULL; e = e->next)
        if (strcmp(e->key, key) == 0)
            break;
    if (e == NULL) {
        if (r->count >= r->sweep_at)
            ratelimit_sweep(r, now_us);
        e = xmalloc(sizeof(*e) + len + 1);
        memcpy(e->key, key, len + 1);
        e->level = r->burst;
        e->last_us = now_us;
        e->next = r->buckets[b];
        r->buckets[b] = e;
        r->count++;
    }
    e->level = ratelimit_level(r, e, now_us);
    if (now_us > e->last_us)
        e->last_us = now_us;
    allowed = e->level >= RATELIMIT_UNIT;
    if (allowed)
        e->level -= RATELIMIT_UNIT;
    pthread_mutex_unlock(&r->lock);
    return allowed;
}

size_t
ratelimit_keys(struct ratelimit *r)
{
    size_t n;

    pthread_mutex_lock(&r->lock);
    n = r->count;
    pthread_mutex_unlock(&r->lock);
    return n;
}
