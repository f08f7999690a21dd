/*
 * meta: a frontend's short-lived local cache of what it knows about a
 * metric (type, generation, deleted), read from the header of the metric's
 * open-buckets value in memcached. events.record uses it to reject known
 * type conflicts by index and to stamp entries with the generation; a
 * tally.control message about a metric drops its entry at once.
 *
 *   meta_lookup_many(names of one request)
 *     under the lock: each name fresh in the table (younger than the TTL)
 *       is answered from it
 *     the rest: one multi-get of their open keys per memcached server
 *       (cache_mget_many), then stored in the table
 *
 * The table is a chained hash table that doubles as it fills. At
 * META_ENTRIES_MAX entries the expired ones go, and if that is not enough,
 * all of them.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frontend.h"
#include "hash.h"
#include "xalloc.h"

#define META_BUCKETS_MIN 4096       /* a power of two */
#define META_ENTRIES_MAX 100000
#define META_US_PER_MS 1000

struct meta_entry {
    struct meta_entry *next;
    uint64_t hash;              /* hash_fnv1a64 of the name */
    char *name;
    size_t len;
    struct meta_info info;
    int64_t fetched_us;
};

struct meta {
    pthread_mutex_t lock;
    struct meta_entry **buckets;
    size_t bucket_count;        /* a power of two; count <= bucket_count */
    size_t count;
    uint64_t forgets;           /* meta_forget calls so far */
    int64_t ttl_us;
};

struct meta *
meta_create(long ttl_ms)
{
    struct meta *m = xcalloc(1, sizeof(*m));

    pthread_mutex_init(&m->lock, NULL);
    m->bucket_count = META_BUCKETS_MIN;
    m->buckets = xcalloc(m->bucket_count, sizeof(*m->buckets));
    m->ttl_us = (int64_t)ttl_ms * META_US_PER_MS;
    return m;
}

static void
meta_entry_free(struct meta_entry *e)
{
    free(e->name);
    free(e);
}

/* Drops every entry, or with EXPIRED_ONLY those older than the TTL at
 * NOW. */
static void
meta_sweep(struct meta *m, int expired_only, int64_t now)
{
    for (size_t i = 0; i < m->bucket_count; i++) {
        struct meta_entry **p = &m->buckets[i];

        while (*p != NULL) {
            struct meta_entry *e = *p;

            if (expired_only && now - e->fetched_us < m->ttl_us) {
                p = &e->next;
                continue;
            }
            *p = e->next;
            meta_entry_free(e);
            m->count--;
        }
    }
}

void
meta_destroy(struct meta *m)
{
    if (m == NULL)
        return;
    meta_sweep(m, 0, 0);
    free(m->buckets);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* The link that points at the entry of NAME (hash HASH), or the NULL link
 * at the end of its chain. */
static struct meta_entry **
meta_find(struct meta *m, uint64_t hash, const char *name, size_t len)
{
    struct meta_entry **p = &m->buckets[hash & (m->bucket_count - 1)];

    for (; *p != NULL; p = &(*p)->next)
        if ((*p)->hash == hash && (*p)->len == len
            && memcmp((*p)->name, name, len) == 0)
            return p;
    return p;
}

/* Doubles the buckets, so chains stay about one entry long. */
static void
meta_grow(struct meta *m)
{
    size_t count = m->bucket_count * 2;
    struct meta_entry **buckets = xcalloc(count, sizeof(*buckets));

    for (size_t i = 0; i < m->bucket_count; i++) {
        while (m->buckets[i] != NULL) {
            struct meta_entry *e = m->buckets[i];

            m->buckets[i] = e->next;
            e->next = buckets[e->hash & (count - 1)];
            buckets[e->hash & (count - 1)] = e;
        }
    }
    free(m->buckets);
    m->buckets = buckets;
    m->bucket_count = count;
}

/* Stores INFO about NAME, fetched at NOW. Called with the lock held. */
static void
meta_store(struct meta *m, uint64_t hash, const char *name, size_t len,
           const struct meta_info *info, int64_t now)
{
    struct meta_entry **p = meta_find(m, hash, name, len);

    if (*p == NULL) {
        if (m->count >= META_ENTRIES_MAX) {
            meta_sweep(m, 1, now);
            if (m->count >= META_ENTRIES_MAX)
                meta_sweep(m, 0, now);
        } else if (m->count >= m->bucket_count) {
            meta_grow(m);
        }
        p = meta_find(m, hash, name, len);
        *p = xcalloc(1, sizeof(**p));
        (*p)->hash = hash;
        (*p)->name = xstrndup(name, len);
        (*p)->len = len;
        m->count++;
    }
    (*p)->info = *info;
    (*p)->fetched_us = now;
}

void
meta_forget(struct meta *m, const char *name, size_t len)
{
    struct meta_entry **p, *e;

    pthread_mutex_lock(&m->lock);
    m->forgets++;
    p = meta_find(m, hash_fnv1a64(name, len), name, len);
    e = *p;
    if (e != NULL) {
        *p = e->next;
        meta_entry_free(e);
        m->count--;
    }
    pthread_mutex_unlock(&m->lock);
}

/* The names of a lookup that the table could not answer: MISSING[k] is
 * the index of the k-th in the caller's arrays. */
struct meta_fetch {
    const size_t *missing;
    struct meta_info *out;      /* the caller's, by the caller's index */
    uint8_t *found;             /* by k */
};

static void
meta_found(void *ctx, size_t k, const uint8_t *value, size_t len)
{
    struct meta_fetch *f = ctx;
    struct meta_info *info = &f->out[f->missing[k]];
    struct codec_cache_header header;
    struct buf_reader in;
    char err[CODEC_ERR_MAX];

    buf_reader_init(&in, value, len);
    if (codec_cache_header_decode(&in, &header, err, sizeof(err)) != 0)
        return;     /* not a value we can read: as if absent */
    f->found[k] = 1;
    info->generation = header.generation;
    info->deleted = header.kind == CODEC_CACHE_TOMBSTONE;
    info->exists = !info->deleted;
    info->type = (enum event_type)header.type;
}

void
meta_lookup_many(struct frontend *fe, const char *const *names,
                 const size_t *lens, size_t n, struct meta_info *out)
{
    struct meta *m = fe->meta;
    int64_t now = daemon_now_us();
    uint64_t *hashes = xcalloc(n, sizeof(*hashes));
    size_t *missing = xcalloc(n, sizeof(*missing));
    size_t miss = 0;
    char (*keys)[CACHE_KEY_MAX];
    const char **key_ptrs, **miss_names;
    size_t *key_lens, *miss_lens;
    struct meta_fetch f;
    char err[CACHE_ERR_MAX];
    uint64_t forgets;
    int complete;

    memset(out, 0, n * sizeof(*out));
    for (size_t i = 0; i < n; i++)
        hashes[i] = hash_fnv1a64(names[i], lens[i]);
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < n; i++) {
        const struct meta_entry *e = *meta_find(m, hashes[i], names[i],
                                                lens[i]);

        if (e != NULL && now - e->fetched_us < m->ttl_us)
            out[i] = e->info;
        else
            missing[miss++] = i;
    }
    forgets = m->forgets;
    pthread_mutex_unlock(&m->lock);
    if (miss == 0)
        goto done;

    keys = xcalloc(miss, sizeof(*keys));
    key_ptrs = xcalloc(miss, sizeof(*key_ptrs));
    key_lens = xcalloc(miss, sizeof(*key_lens));
    miss_names = xcalloc(miss, sizeof(*miss_names));
    miss_lens = xcalloc(miss, sizeof(*miss_lens));
    f = (struct meta_fetch){ .missing = missing, .out = out,
                             .found = xcalloc(miss, 1) };
    for (size_t k = 0; k < miss; k++) {
        size_t i = missing[k];

        miss_names[k] = names[i];
        miss_lens[k] = lens[i];
        key_lens[k] = cache_key_open(keys[k], names[i], lens[i]);
        key_ptrs[k] = keys[k];
    }
    complete = cache_mget_many(fe->cache, miss_names, miss_lens, key_ptrs,
                               key_lens, miss, meta_found, &f, err,
                               sizeof(err)) == 0;
    /* Cached: what was read, and what is absent unless a server failed
     * (then unknown). Nothing when a control message came in meanwhile:
     * what was read may be from before it. */
    pthread_mutex_lock(&m->lock);
    if (m->forgets == forgets) {
        for (size_t k = 0; k < miss; k++) {
            size_t i = missing[k];

            if (complete || f.found[k])
                meta_store(m, hashes[i], names[i], lens[i], &out[i], now);
        }
    }
    pthread_mutex_unlock(&m->lock);
    free(f.found);
    free(keys);
    free(key_ptrs);
    free(key_lens);
    free(miss_names);
    free(miss_lens);

done:
    free(hashes);
    free(missing);
}

void
meta_lookup(struct frontend *fe, const char *name, size_t len,
            struct meta_info *out)
{
    meta_lookup_many(fe, &name, &len, 1, out);
}
