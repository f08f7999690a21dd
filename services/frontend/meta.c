/*
 * meta: a frontend's short-lived local cache of what it knows about a
 * metric (type, generation, deleted), read from the header of the metric's
 * open-buckets value in memcached. events.record uses it to reject known
 * type conflicts by index and to stamp entries with the generation; a
 * tally.control message about a metric drops its entry at once.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frontend.h"
#include "hash.h"
#include "xalloc.h"

#define META_BUCKETS 4096
#define META_ENTRIES_MAX 100000     /* then the cache starts over */
#define META_US_PER_MS 1000

struct meta_entry {
    struct meta_entry *next;
    char *name;
    size_t len;
    struct meta_info info;
    int64_t fetched_us;
};

struct meta {
    pthread_mutex_t lock;
    struct meta_entry *buckets[META_BUCKETS];
    size_t count;
    int64_t ttl_us;
};

struct meta *
meta_create(long ttl_ms)
{
    struct meta *m = xcalloc(1, sizeof(*m));

    pthread_mutex_init(&m->lock, NULL);
    m->ttl_us = (int64_t)ttl_ms * META_US_PER_MS;
    return m;
}

static void
meta_clear(struct meta *m)
{
    for (size_t i = 0; i < META_BUCKETS; i++) {
        while (m->buckets[i] != NULL) {
            struct meta_entry *e = m->buckets[i];

            m->buckets[i] = e->next;
            free(e->name);
            free(e);
        }
    }
    m->count = 0;
}

void
meta_destroy(struct meta *m)
{
    if (m == NULL)
        return;
    meta_clear(m);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static struct meta_entry **
meta_find(struct meta *m, const char *name, size_t len)
{
    struct meta_entry **p = &m->buckets[hash_fnv1a64(name, len) % META_BUCKETS];

    for (; *p != NULL; p = &(*p)->next)
        if ((*p)->len == len && memcmp((*p)->name, name, len) == 0)
            return p;
    return p;
}

void
meta_forget(struct meta *m, const char *name, size_t len)
{
    struct meta_entry **p, *e;

    pthread_mutex_lock(&m->lock);
    p = meta_find(m, name, len);
    e = *p;
    if (e != NULL) {
        *p = e->next;
        free(e->name);
        free(e);
        m->count--;
    }
    pthread_mutex_unlock(&m->lock);
}

struct meta_fetch {
    int found;
    struct codec_cache_header header;
};

static void
meta_found(void *ctx, size_t index, const uint8_t *value, size_t len)
{
    struct meta_fetch *f = ctx;
    struct buf_reader in;
    char err[CODEC_ERR_MAX];

    (void)index;
    buf_reader_init(&in, value, len);
    if (codec_cache_header_decode(&in, &f->header, err, sizeof(err)) == 0)
        f->found = 1;
}

void
meta_lookup(struct frontend *fe, const char *name, size_t len,
            struct meta_info *out)
{
    struct meta *m = fe->meta;
    int64_t now = daemon_now_us();
    struct meta_entry **p, *e;
    struct meta_fetch f;
    char key[CACHE_KEY_MAX], err[CACHE_ERR_MAX];
    const char *keys[1];
    size_t key_len;

    pthread_mutex_lock(&m->lock);
    e = *meta_find(m, name, len);
    if (e != NULL && now - e->fetched_us < m->ttl_us) {
        *out = e->info;
        pthread_mutex_unlock(&m->lock);
        return;
    }
    pthread_mutex_unlock(&m->lock);

    memset(out, 0, sizeof(*out));
    memset(&f, 0, sizeof(f));
    key_len = cache_key_open(key, name, len);
    keys[0] = key;
    if (cache_mget(fe->cache, name, len, keys, &key_len, 1, meta_found, &f,
                   err, sizeof(err)) != 0)
        return;     /* unknown; not cached */
    if (f.found) {
        out->generation = f.header.generation;
        out->deleted = f.header.kind == CODEC_CACHE_TOMBSTONE;
        out->exists = !out->deleted;
        out->type = (enum event_type)f.header.type;
    }
    pthread_mutex_lock(&m->lock);
    if (m->count >= META_ENTRIES_MAX)
        meta_clear(m);
    p = meta_find(m, name, len);
    if (*p == NULL) {
        *p = xcalloc(1, sizeof(**p));
        (*p)->name = xstrndup(name, len);
        (*p)->len = len;
        m->count++;
    }
    (*p)->info = *out;
    (*p)->fetched_us = now;
    pthread_mutex_unlock(&m->lock);
}
