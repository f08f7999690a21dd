/*
 * store: an aggregator's owned metrics, see store.h.
 *
 * A chained hash table of entries (by FNV-1a of the name) plus a vector of
 * all entries for the flusher's and the listing's walks. An entry outlives
 * its metric after a delete, remembering the generation so that entries
 * routed before the delete cannot bring the metric back.
 */
#include "store.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cacheval.h"
#include "hash.h"
#include "metric.h"
#include "slotmap.h"
#include "state.h"
#include "window.h"
#include "xalloc.h"

#define STORE_BUCKETS_INITIAL 1024
#define STORE_UNSETTLED_MAX 12        /* unsettled starts kept per ring;
                                         past them a repair rewrites all */
#define STORE_HELD_KEEP 8             /* closed buckets an open value keeps
                                         per ring; the oldest settle first */
#define STORE_SETTLE_FLUSHES 4        /* flushes without a change before a
                                         held bucket gets its own value */
#define STORE_EXPIRE_MARGIN_S 3600    /* closed values outlive retention */
#define STORE_OPEN_EXPIRE_MARGIN_S 86400
/* memcached reads a larger expiry as an absolute time */
#define STORE_EXPIRE_RELATIVE_MAX 2592000

struct store_entry {
    struct store_entry *next;      /* hash chain */
    size_t index;                  /* in store.all */
    uint64_t hash;
    char *name;
    size_t name_len;
    struct metric *metric;         /* NULL after a delete */
    uint64_t generation;
    uint64_t sequence;
    int64_t updated_us;
    int64_t deleted_us;            /* when the last tombstone was applied */
    int dirty;
    int repair;                    /* rewrite every bucket at next flush */
    int tombstone_pending;         /* the cache tombstone must be written */
    int64_t open_start[RING_COUNT];   /* bucket in the last open value */
    /* Per ring, the buckets whose newest state has no closed value of its
     * own yet: changed since the last flush (quiet 0) or, in cache format
     * 2, closed buckets that late events still touch, which the open value
     * holds until they have been quiet for STORE_SETTLE_FLUSHES flushes
     * (schema/cache-value.md). One value per flush instead of one per
     * touched bucket. */
    int64_t unsettled_start[RING_COUNT][STORE_UNSETTLED_MAX];
    uint8_t unsettled_quiet[RING_COUNT][STORE_UNSETTLED_MAX];
    uint8_t unsettled_count[RING_COUNT];
    /* The closed marks of the open value (cacheval_marks): the newest
     * closed value written per ring, and whether the last flush wrote
     * closed values, so that the next one writes the open value again
     * with marks that show them stored. */
    uint64_t closed_seq[RING_COUNT];
    int resettle;
};

struct store {
    pthread_mutex_t lock;
    struct store_entry **table;
    size_t table_size;             /* power of two */
    struct store_entry **all;
    size_t count, cap;
    int64_t idle_expiry_s;
    uint64_t metrics_max;          /* quota on live metrics; 0 = none */
    uint64_t sequence_floor;       /* no cache sequence starts below it */
    uint8_t cache_format;          /* cache value version written */
    struct store_stats stats;
};

struct store *
store_create(int64_t idle_expiry_s, uint64_t metrics_max,
             int64_t sequence_floor, int cache_format)
{
    struct store *s = xcalloc(1, sizeof(*s));

    s->cache_format = (uint8_t)cache_format;
    s->sequence_floor = (uint64_t)sequence_floor;
    pthread_mutex_init(&s->lock, NULL);
    s->table_size = STORE_BUCKETS_INITIAL;
    s->table = xcalloc(s->table_size, sizeof(*s->table));
    s->idle_expiry_s = idle_expiry_s;
    s->metrics_max = metrics_max;
    return s;
}

static void
store_entry_free(struct store_entry *e)
{
    metric_destroy(e->metric);
    free(e->name);
    free(e);
}

void
store_destroy(struct store *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->count; i++)
        store_entry_free(s->all[i]);
    free(s->all);
    free(s->table);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static struct store_entry *
store_find(struct store *s, const char *name, size_t len, uint64_t hash)
{
    struct store_entry *e = s->table[hash & (s->table_size - 1)];

    for (; e != NULL; e = e->next)
        if (e->hash == hash && e->name_len == len
            && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

static void
store_grow(struct store *s)
{
    size_t size = s->table_size * 2;
    struct store_entry **table = xcalloc(size, sizeof(*table));

    for (size_t i = 0; i < s->count; i++) {
        struct store_entry *e = s->all[i];

        e->next = table[e->hash & (size - 1)];
        table[e->hash & (size - 1)] = e;
    }
    free(s->table);
    s->table = table;
    s->table_size = size;
}

static struct store_entry *
store_insert(struct store *s, const char *name, size_t len, uint64_t hash,
             int64_t now_us)
{
    struct store_entry *e = xcalloc(1, sizeof(*e));

    if (s->count + 1 > s->table_size)
        store_grow(s);
    e->hash = hash;
    e->name = xstrndup(name, len);
    e->name_len = len;
    e->sequence = (uint64_t)now_us > s->sequence_floor ? (uint64_t)now_us
                                                        : s->sequence_floor;
    e->updated_us = now_us;
    for (int r = 0; r < RING_COUNT; r++)
        e->open_start[r] = -1;
    e->next = s->table[hash & (s->table_size - 1)];
    s->table[hash & (s->table_size - 1)] = e;
    if (s->count == s->cap) {
        s->cap = s->cap ? s->cap * 2 : STORE_BUCKETS_INITIAL;
        s->all = xrealloc(s->all, s->cap * sizeof(*s->all));
    }
    e->index = s->count;
    s->all[s->count++] = e;
    return e;
}

static void
store_remove(struct store *s, struct store_entry *e)
{
    struct store_entry **p = &s->table[e->hash & (s->table_size - 1)];

    while (*p != e)
        p = &(*p)->next;
    *p = e->next;
    s->all[e->index] = s->all[--s->count];
    s->all[e->index]->index = e->index;
    if (e->metric != NULL)
        s->stats.metrics--;
    store_entry_free(e);
}

/* ---------------------------------------------------------------------- */
/* Applying messages                                                       */
/* ---------------------------------------------------------------------- */

/* The position of START in RING's unsettled list, or -1. */
static int
store_unsettled_find(const struct store_entry *e, enum ring ring,
                     int64_t start)
{
    for (int i = 0; i < e->unsettled_count[ring]; i++)
        if (e->unsettled_start[ring][i] == start)
            return i;
    return -1;
}

static void
store_mark(struct store_entry *e, int64_t time_us, int64_t now_us)
{
    e->dirty = 1;
    e->updated_us = now_us;
    for (int r = 0; r < RING_COUNT; r++) {
        int64_t start = window_align(time_us, window_ring_layout(r)->width_s);
        int i = store_unsettled_find(e, r, start);

        if (i < 0) {
            if (e->unsettled_count[r] == STORE_UNSETTLED_MAX) {
                e->repair = 1;
                continue;
            }
            i = e->unsettled_count[r]++;
            e->unsettled_start[r][i] = start;
        }
        e->unsettled_quiet[r][i] = 0;
    }
}

struct store_notices {
    struct store_notice *items;
    size_t count, cap;
};

static struct store_notice *
store_notice_add(struct store_notices *n, const struct codec_entry *ce)
{
    struct store_notice *x;

    if (n->count == n->cap) {
        n->cap = n->cap ? n->cap * 2 : 8;
        n->items = xrealloc(n->items, n->cap * sizeof(*n->items));
    }
    x = &n->items[n->count++];
    memset(x, 0, sizeof(*x));
    x->name = xstrndup(ce->name, ce->name_len);
    x->type = (enum event_type)ce->type;
    x->event_count = ce->kind == CODEC_ENTRY_PARTIAL
                         ? ce->u.partial.event_count : 1;
    return x;
}

static void
store_tombstone(struct store *s, struct store_entry *e,
                const struct codec_entry *ce, int64_t now_us,
                struct store_notices *n)
{
    struct store_notice *x;
    uint64_t gen = e->generation > ce->generation ? e->generation
                                                  : ce->generation;

    if (e->metric != NULL)
        s->stats.metrics--;
    metric_destroy(e->metric);
    e->metric = NULL;
    e->generation = gen + 1;
    e->deleted_us = now_us;
    e->updated_us = now_us;
    e->dirty = 0;
    e->repair = 0;
    for (int r = 0; r < RING_COUNT; r++) {
        e->unsettled_count[r] = 0;
        e->open_start[r] = -1;
    }
    s->stats.tombstones++;
    x = store_notice_add(n, ce);
    x->tombstone = 1;
    x->generation = e->generation;
    if (e->sequence < (uint64_t)now_us)
        e->sequence = (uint64_t)now_us;
    if (e->sequence < s->sequence_floor)
        e->sequence = s->sequence_floor;
    x->sequence = ++e->sequence;
}

/* Applies one EVENT or PARTIAL entry; a reason is written when refused. */
static int
store_apply_data(struct store *s, struct store_entry *e,
                 const struct codec_entry *ce, int64_t created_us,
                 int64_t now_us, char *reason, size_t len)
{
    enum event_type type = (enum event_type)ce->type;
    uint64_t generation = ce->generation;

    /* A sub-batch made after the last delete was applied belongs to the
     * current life even if its frontend did not know the generation (a
     * cache miss, or a local cache not yet cleared); one made before the
     * delete is stale. */
    if (generation < e->generation && created_us > e->deleted_us)
        generation = e->generation;
    if (generation < e->generation) {
        s->stats.stale_generation++;
        snprintf(reason, len, "metric was deleted (generation %llu < %llu)",
                 (unsigned long long)ce->generation,
                 (unsigned long long)e->generation);
        return -1;
    }
    if (e->metric != NULL && generation > e->generation) {
        metric_destroy(e->metric);       /* a newer generation replaces */
        e->metric = NULL;
        s->stats.metrics--;
    }
    e->generation = generation;
    /* The frontends check times against their clocks; a bus message from
     * elsewhere could still carry one no state can hold. */
    if (ce->kind == CODEC_ENTRY_EVENT
            ? ce->u.event.time_us < 0
              || ce->u.event.time_us >= EVENT_TIME_MAX_US
            : ce->u.partial.first_us < 0
              || ce->u.partial.last_us >= EVENT_TIME_MAX_US) {
        snprintf(reason, len, "event time out of range");
        return -1;
    }
    if (e->metric != NULL && metric_type(e->metric) != type) {
        s->stats.type_conflicts++;
        snprintf(reason, len, "type conflict: %s is a %s, not a %s",
                 e->name, event_type_name(metric_type(e->metric)),
                 event_type_name(type));
        return -1;
    }
    if (e->metric == NULL) {
        if (s->metrics_max > 0 && s->stats.metrics >= s->metrics_max) {
            s->stats.quota_refused++;
            snprintf(reason, len, "metric quota reached: this instance "
                     "holds %" PRIu64 " metrics (--metrics-max)",
                     s->stats.metrics);
            return -1;
        }
        e->metric = metric_create(type, e->generation, NULL);
        s->stats.metrics++;
    }
    if (ce->kind == CODEC_ENTRY_EVENT) {
        metric_fold(e->metric, &ce->u.event, now_us);
        store_mark(e, ce->u.event.time_us, now_us);
        s->stats.events_applied++;
    } else {
        struct buf_reader in;
        enum event_type got;
        char err[STORE_REASON_MAX / 2];
        void *state;

        buf_reader_init(&in, ce->u.partial.state, ce->u.partial.state_len);
        state = state_decode_any(&in, &got, err, sizeof(err));
        if (state == NULL || got != type
            || metric_merge_partial(e->metric, ce->u.partial.bucket_start_s,
                                    ce->u.partial.first_us,
                                    ce->u.partial.last_us, state,
                                    now_us) != 0) {
            snprintf(reason, len, "bad partial state: %s",
                     state == NULL ? err : "refused by the metric");
            if (state != NULL)
                state_ops_for(got)->destroy(state);
            return -1;
        }
        state_ops_for(got)->destroy(state);
        store_mark(e, ce->u.partial.first_us, now_us);
        s->stats.events_applied += ce->u.partial.event_count;
    }
    s->stats.entries_applied++;
    return 0;
}

size_t
store_apply(struct store *s, const struct codec_message *msg,
            const uint8_t *skip, const uint8_t *skip_entry, int64_t now_us,
            struct store_notice **notices)
{
    struct store_notices n = {0};

    pthread_mutex_lock(&s->lock);
    for (size_t b = 0; b < msg->subbatch_count; b++) {
        const struct codec_subbatch *sb = &msg->subbatches[b];

        if (skip != NULL && skip[b])
            continue;
        for (size_t i = 0; i < sb->entry_count; i++) {
            const struct codec_entry *ce = &sb->entries[i];
            uint64_t hash;
            struct store_entry *e;
            char reason[STORE_REASON_MAX];

            if (skip_entry != NULL && skip_entry[ce - msg->entries])
                continue;
            if (ce->kind != CODEC_ENTRY_EVENT
                && ce->kind != CODEC_ENTRY_PARTIAL
                && ce->kind != CODEC_ENTRY_TOMBSTONE)
                continue;   /* metric states and dedup keys: slot moves */
            hash = hash_fnv1a64(ce->name, ce->name_len);
            e = store_find(s, ce->name, ce->name_len, hash);
            if (e == NULL)
                e = store_insert(s, ce->name, ce->name_len, hash, now_us);
            if (ce->kind == CODEC_ENTRY_TOMBSTONE)
                store_tombstone(s, e, ce, now_us, &n);
            else if (store_apply_data(s, e, ce, sb->created_us, now_us,
                                      reason, sizeof(reason)) != 0)
                snprintf(store_notice_add(&n, ce)->reason, STORE_REASON_MAX,
                         "%s", reason);
        }
    }
    pthread_mutex_unlock(&s->lock);
    *notices = n.items;
    return n.count;
}

void
store_notices_free(struct store_notice *n, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(n[i].name);
    free(n);
}

/* ---------------------------------------------------------------------- */
/* Flushing                                                                */
/* ---------------------------------------------------------------------- */

struct store_writes {
    struct store_write *items;
    size_t count, cap;
};

static struct store_write *
store_write_add(struct store_writes *w, const struct store_entry *e)
{
    struct store_write *x;

    if (w->count == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 64;
        w->items = xrealloc(w->items, w->cap * sizeof(*w->items));
    }
    x = &w->items[w->count++];
    memset(x, 0, sizeof(*x));
    x->name = xstrndup(e->name, e->name_len);
    x->name_len = e->name_len;
    return x;
}

static void
store_write_closed(struct store_writes *w, struct store_entry *e,
                   enum ring ring, int64_t start, uint64_t map_version,
                   uint8_t format)
{
    const struct ring_layout *layout = window_ring_layout(ring);
    struct codec_cache_header h = {0};
    struct buf_writer out;
    struct store_write *x;

    if (metric_bucket_at(e->metric, ring, start) == NULL)
        return;
    h.version = format;
    h.generation = e->generation;
    h.map_version = map_version;
    h.sequence = ++e->sequence;
    e->closed_seq[ring] = h.sequence;
    buf_writer_create(&out, 256);
    cacheval_encode_closed(e->metric, &h, ring, start, &out);
    x = store_write_add(w, e);
    x->key_len = cache_key_bucket(x->key, e->name, e->name_len, e->generation,
                                  ring, start);
    x->value = buf_writer_release(&out, &x->len);
    x->expire_s = (uint32_t)(layout->width_s * layout->capacity
                             + STORE_EXPIRE_MARGIN_S);
}

/* Drops entry I of RING's unsettled list (order is not kept). */
static void
store_unsettled_drop(struct store_entry *e, enum ring ring, int i)
{
    int last = --e->unsettled_count[ring];

    e->unsettled_start[ring][i] = e->unsettled_start[ring][last];
    e->unsettled_quiet[ring][i] = e->unsettled_quiet[ring][last];
}

/* Settles RING's unsettled buckets at flush time NOW_US: the current one
 * leaves the list (the open value holds it); a closed one gets its own
 * value (W) once quiet long enough, at once in cache format 1, or when
 * more than STORE_HELD_KEEP are held (oldest first); the rest stay held
 * and are appended to HELD (*N_HELD). */
static void
store_settle(struct store *s, struct store_entry *e, enum ring ring,
             int64_t cur, uint64_t map_version, struct store_writes *w,
             struct cacheval_bucket *held, size_t *n_held)
{
    int settle_after = s->cache_format == 1 ? 0 : STORE_SETTLE_FLUSHES;
    int kept = 0;

    for (int i = 0; i < e->unsettled_count[ring];) {
        int64_t start = e->unsettled_start[ring][i];

        if (start != cur && e->unsettled_quiet[ring][i] >= settle_after)
            store_write_closed(w, e, ring, start, map_version,
                               s->cache_format);
        if (start == cur || e->unsettled_quiet[ring][i] >= settle_after
            || metric_bucket_at(e->metric, ring, start) == NULL) {
            store_unsettled_drop(e, ring, i);
            continue;
        }
        kept++;
        i++;
    }
    while (kept > STORE_HELD_KEEP) {
        int oldest = 0;

        for (int i = 1; i < e->unsettled_count[ring]; i++)
            if (e->unsettled_start[ring][i] < e->unsettled_start[ring][oldest])
                oldest = i;
        store_write_closed(w, e, ring, e->unsettled_start[ring][oldest],
                           map_version, s->cache_format);
        store_unsettled_drop(e, ring, oldest);
        kept--;
    }
    for (int i = 0; i < e->unsettled_count[ring]; i++) {
        held[(*n_held)++] = (struct cacheval_bucket){
            ring, e->unsettled_start[ring][i] };
        if (e->unsettled_quiet[ring][i] < UINT8_MAX)
            e->unsettled_quiet[ring][i]++;
    }
}

static uint32_t
store_open_expiry(const struct store *s)
{
    int64_t e = s->idle_expiry_s + STORE_OPEN_EXPIRE_MARGIN_S;

    return (uint32_t)(e < STORE_EXPIRE_RELATIVE_MAX ? e
                                                    : STORE_EXPIRE_RELATIVE_MAX);
}

/* Adds the tombstone value of deleted entry E to W. */
static void
store_write_tombstone(struct store *s, struct store_entry *e,
                      uint64_t map_version, struct store_writes *w)
{
    struct codec_cache_header h = {0};
    struct buf_writer out;
    struct store_write *x;

    h.version = s->cache_format;
    h.generation = e->generation;
    h.map_version = map_version;
    h.sequence = ++e->sequence;
    buf_writer_create(&out, CODEC_CACHE_HEADER_SIZE);
    cacheval_encode_tombstone(&h, &out);
    x = store_write_add(w, e);
    x->key_len = cache_key_open(x->key, e->name, e->name_len);
    x->value = buf_writer_release(&out, &x->len);
    x->expire_s = store_open_expiry(s);
    e->tombstone_pending = 0;
}

/* Adds E's changed values at NOW_US to W. */
static void
store_collect_entry(struct store *s, struct store_entry *e, int64_t now_us,
                    uint64_t map_version, struct store_writes *w)
{
    struct codec_cache_header h = {0};
    struct cacheval_bucket held[RING_COUNT * STORE_UNSETTLED_MAX];
    size_t n_held = 0;
    struct cacheval_marks marks;
    struct buf_writer out;
    struct store_write *x;
    uint64_t first = e->sequence + 1;    /* of this flush */
    int rolled = 0, wrote;

    for (int r = 0; r < RING_COUNT; r++) {
        const struct ring_layout *layout = window_ring_layout(r);
        int64_t cur = window_align(now_us, layout->width_s);

        if (e->open_start[r] != -1 && e->open_start[r] != cur)
            rolled = 1;
        if (e->repair) {
            int64_t newest = window_align(now_us + EVENT_FUTURE_LIMIT_US,
                                          layout->width_s);
            int64_t start = newest - (int64_t)layout->capacity * layout->width_s;

            for (; start <= newest; start += layout->width_s)
                if (start != cur)
                    store_write_closed(w, e, r, start, map_version,
                                       s->cache_format);
            e->unsettled_count[r] = 0;
            continue;
        }
        /* The bucket open at the last open value has closed since: unless
         * it changed (then it is in the list), it gets its own value. */
        if (e->open_start[r] != -1 && e->open_start[r] != cur
            && store_unsettled_find(e, r, e->open_start[r]) < 0)
            store_write_closed(w, e, r, e->open_start[r], map_version,
                               s->cache_format);
        store_settle(s, e, r, cur, map_version, w, held, &n_held);
    }
    wrote = e->sequence >= first;        /* closed values went out */
    if (!e->dirty && !e->repair && !rolled && !e->resettle) {
        e->resettle = wrote;
        return;
    }
    h.version = s->cache_format;
    h.generation = e->generation;
    h.map_version = map_version;
    h.sequence = ++e->sequence;
    buf_writer_create(&out, 256);
    cacheval_encode_open(e->metric, &h, now_us, held, n_held, &out);
    marks.flush_first = first;
    memcpy(marks.closed_seq, e->closed_seq, sizeof(marks.closed_seq));
    cacheval_encode_marks(&h, &marks, &out);
    e->resettle = wrote;
    x = store_write_add(w, e);
    x->key_len = cache_key_open(x->key, e->name, e->name_len);
    x->value = buf_writer_release(&out, &x->len);
    x->expire_s = store_open_expiry(s);
    for (int r = 0; r < RING_COUNT; r++) {
        int64_t cur = window_align(now_us, window_ring_layout(r)->width_s);

        e->open_start[r] = metric_bucket_at(e->metric, r, cur) != NULL ? cur
                                                                       : -1;
    }
    e->dirty = 0;
    e->repair = 0;
}

size_t
store_collect(struct store *s, int64_t now_us, uint64_t map_version,
              struct store_write **writes)
{
    struct store_writes w = {0};

    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->count;) {
        struct store_entry *e = s->all[i];

        if (now_us - e->updated_us > s->idle_expiry_s * EVENT_US_PER_SECOND) {
            store_remove(s, e);      /* moves another entry into slot i */
            s->stats.metrics_collected++;
            continue;
        }
        if (e->metric != NULL)
            store_collect_entry(s, e, now_us, map_version, &w);
        else if (e->tombstone_pending)
            store_write_tombstone(s, e, map_version, &w);
        i++;
    }
    pthread_mutex_unlock(&s->lock);
    *writes = w.items;
    return w.count;
}

void
store_writes_free(struct store_write *w, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(w[i].name);
        free(w[i].value);
    }
    free(w);
}

/* ---------------------------------------------------------------------- */
/* Reading                                                                 */
/* ---------------------------------------------------------------------- */

int
store_get(struct store *s, const char *name, size_t name_len,
          struct buf_writer *out, uint64_t *generation)
{
    struct store_entry *e;
    int found = 0;

    pthread_mutex_lock(&s->lock);
    e = store_find(s, name, name_len, hash_fnv1a64(name, name_len));
    *generation = e != NULL ? e->generation : 0;
    if (e != NULL && e->metric != NULL) {
        metric_encode(e->metric, out);
        e->repair = 1;
        found = 1;
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

static int
store_compare_names(const void *a, const void *b)
{
    const struct store_entry *x = *(const struct store_entry *const *)a;
    const struct store_entry *y = *(const struct store_entry *const *)b;

    return buf_compare(x->name, x->name_len, y->name, y->name_len);
}

json_object *
store_list(struct store *s, const char *prefix, const char *after,
           size_t limit)
{
    json_object *result = json_object_new_object();
    json_object *metrics = json_object_new_array();
    struct store_entry **match;
    size_t n = 0, prefix_len = strlen(prefix), after_len = strlen(after);

    pthread_mutex_lock(&s->lock);
    match = xcalloc(s->count + 1, sizeof(*match));
    for (size_t i = 0; i < s->count; i++) {
        struct store_entry *e = s->all[i];

        if (e->metric == NULL || e->name_len < prefix_len
            || memcmp(e->name, prefix, prefix_len) != 0
            || buf_compare(e->name, e->name_len, after, after_len) <= 0)
            continue;
        match[n++] = e;
    }
    qsort(match, n, sizeof(*match), store_compare_names);
    for (size_t i = 0; i < n && i < limit; i++) {
        json_object *m = json_object_new_object();

        json_object_object_add(m, "name",
                               json_object_new_string_len(
                                   match[i]->name, (int)match[i]->name_len));
        json_object_object_add(m, "type", json_object_new_string(
            event_type_name(metric_type(match[i]->metric))));
        json_object_object_add(m, "updated", json_object_new_double(
            (double)match[i]->updated_us / EVENT_US_PER_SECOND));
        json_object_array_add(metrics, m);
    }
    pthread_mutex_unlock(&s->lock);
    json_object_object_add(result, "metrics", metrics);
    json_object_object_add(result, "more", json_object_new_boolean(n > limit));
    free(match);
    return result;
}

void
store_repair(struct store *s, const char *name, size_t len)
{
    struct store_entry *e;

    pthread_mutex_lock(&s->lock);
    e = store_find(s, name, len, hash_fnv1a64(name, len));
    if (e != NULL && e->metric != NULL)
        e->repair = 1;
    else if (e != NULL)
        e->tombstone_pending = 1;
    pthread_mutex_unlock(&s->lock);
}

size_t
store_take_slots(struct store *s, const uint8_t *leaving,
                 struct store_taken **out)
{
    struct store_taken *t = NULL;
    size_t n = 0, cap = 0;

    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->count;) {
        struct store_entry *e = s->all[i];
        struct store_taken *x;

        if (!leaving[e->hash % SLOTMAP_SLOTS]) {
            i++;
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            t = xrealloc(t, cap * sizeof(*t));
        }
        x = &t[n++];
        x->name = xstrndup(e->name, e->name_len);
        x->name_len = e->name_len;
        x->slot = (uint16_t)(e->hash % SLOTMAP_SLOTS);
        x->generation = e->generation;
        x->metric = e->metric;
        x->deleted_us = e->deleted_us;
        e->metric = NULL;
        if (x->metric != NULL)
            s->stats.metrics--;
        store_remove(s, e);         /* moves another entry into slot i */
    }
    pthread_mutex_unlock(&s->lock);
    *out = t;
    return n;
}

void
store_taken_free(struct store_taken *t, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(t[i].name);
        metric_destroy(t[i].metric);
    }
    free(t);
}

int
store_merge_metric(struct store *s, const char *name, size_t name_len,
                   uint64_t generation, struct metric *metric,
                   int64_t now_us, char *reason, size_t len)
{
    uint64_t hash = hash_fnv1a64(name, name_len);
    struct store_entry *e;
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    e = store_find(s, name, name_len, hash);
    if (e == NULL)
        e = store_insert(s, name, name_len, hash, now_us);
    if (generation < e->generation) {
        /* deleted here since: the moved state belongs to the old life */
        metric_destroy(metric);
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    if (e->metric == NULL) {
        e->metric = metric;
        s->stats.metrics++;
    } else if (generation > e->generation) {
        /* what this instance holds is of an older life: replaced */
        metric_destroy(e->metric);
        e->metric = metric;
    } else if (metric_type(e->metric) != metric_type(metric)) {
        snprintf(reason, len, "type conflict: %s is a %s here, the moved "
                 "state a %s (the moved state is dropped)", e->name,
                 event_type_name(metric_type(e->metric)),
                 event_type_name(metric_type(metric)));
        s->stats.type_conflicts++;
        metric_destroy(metric);
        rc = -1;
    } else {
        metric_merge(e->metric, metric);
        metric_destroy(metric);
    }
    if (generation > e->generation)
        e->generation = generation;
    e->repair = 1;
    e->dirty = 1;
    e->updated_us = now_us;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

size_t
store_count(struct store *s)
{
    size_t n;

    pthread_mutex_lock(&s->lock);
    n = (size_t)s->stats.metrics;
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* ---------------------------------------------------------------------- */
/* Snapshots                                                               */
/* ---------------------------------------------------------------------- */

#define STORE_SNAP_METRIC 0x01u
#define STORE_SNAP_TOMBSTONE_PENDING 0x02u
#define STORE_SNAP_FLAGS 0x03u

void
store_encode(struct store *s, struct buf_writer *out)
{
    struct buf_writer m;

    buf_writer_create(&m, 256);
    pthread_mutex_lock(&s->lock);
    buf_put_varint(out, s->count);
    for (size_t i = 0; i < s->count; i++) {
        const struct store_entry *e = s->all[i];
        uint8_t flags = (e->metric != NULL ? STORE_SNAP_METRIC : 0)
                        | (e->tombstone_pending
                               ? STORE_SNAP_TOMBSTONE_PENDING : 0);

        buf_put_string(out, e->name, e->name_len);
        buf_put_varint(out, e->generation);
        buf_put_varint(out, e->sequence);
        buf_put_svarint(out, e->deleted_us);
        buf_put_svarint(out, e->updated_us);
        buf_put_u8(out, flags);
        if (e->metric != NULL) {
            buf_writer_reset(&m);
            metric_encode(e->metric, &m);
            buf_put_string(out, m.data, m.len);
        }
    }
    pthread_mutex_unlock(&s->lock);
    buf_writer_destroy(&m);
}

int
store_decode(struct store *s, struct buf_reader *in, char *err,
             size_t errlen)
{
    uint64_t count;
    int rc = -1;

    pthread_mutex_lock(&s->lock);
    if (buf_get_varint(in, &count) != 0 || count > buf_remaining(in)) {
        snprintf(err, errlen, "snapshot: bad metric count");
        goto out;
    }
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *name, *blob;
        size_t name_len, blob_len;
        uint64_t generation, sequence;
        int64_t deleted_us, updated_us;
        uint8_t flags;
        struct store_entry *e;
        uint64_t hash;

        if (buf_get_string(in, &name, &name_len, EVENT_NAME_MAX) != 0
            || !event_name_valid((const char *)name, name_len)
            || buf_get_varint(in, &generation) != 0
            || buf_get_varint(in, &sequence) != 0
            || buf_get_svarint(in, &deleted_us) != 0
            || buf_get_svarint(in, &updated_us) != 0
            || buf_get_u8(in, &flags) != 0 || (flags & ~STORE_SNAP_FLAGS)) {
            snprintf(err, errlen, "snapshot: metric %llu is malformed",
                     (unsigned long long)i);
            goto out;
        }
        hash = hash_fnv1a64(name, name_len);
        if (store_find(s, (const char *)name, name_len, hash) != NULL) {
            snprintf(err, errlen, "snapshot: metric %.*s twice",
                     (int)name_len, (const char *)name);
            goto out;
        }
        e = store_insert(s, (const char *)name, name_len, hash, updated_us);
        e->generation = generation;
        e->sequence = sequence > s->sequence_floor ? sequence
                                                   : s->sequence_floor;
        e->deleted_us = deleted_us;
        e->tombstone_pending = (flags & STORE_SNAP_TOMBSTONE_PENDING) != 0;
        if (flags & STORE_SNAP_METRIC) {
            struct buf_reader mr;

            if (buf_get_string(in, &blob, &blob_len, CODEC_METRIC_MAX) != 0) {
                snprintf(err, errlen, "snapshot: metric %.*s truncated",
                         (int)name_len, (const char *)name);
                goto out;
            }
            buf_reader_init(&mr, blob, blob_len);
            e->metric = metric_decode(&mr, err, errlen);
            if (e->metric != NULL)
                s->stats.metrics++;
            if (e->metric == NULL || buf_remaining(&mr) != 0) {
                snprintf(err, errlen, "snapshot: metric %.*s does not decode",
                         (int)name_len, (const char *)name);
                goto out;
            }
            e->repair = 1;
        }
    }
    rc = 0;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void
store_stats(struct store *s, struct store_stats *out)
{
    pthread_mutex_lock(&s->lock);
    *out = s->stats;
    pthread_mutex_unlock(&s->lock);
}
