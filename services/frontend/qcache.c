/*
 * qcache: decoded metrics kept between queries, see qcache.h.
 *
 * A chained hash table of entries by FNV-1a of the name, with a list from
 * the most to the least recently used one. The table lock guards the
 * table, the list and each entry's reference count; an entry's own lock
 * guards what it holds.
 *
 * Each entry keeps, per ring, one slot per bucket position (start / width
 * mod capacity, as the metric's rings place buckets), telling where the
 * metric's bucket there came from:
 *
 *   held    from the open value now installed (its copy is the newest)
 *   closed  from a closed value of sequence SEQ; vouched for while the
 *           open value's closed mark of the ring is still MARK, if it was
 *           read under an open value whose ring was settled (CONFIRMED)
 *   stale   held by an earlier open value but not by this one: read again
 */
#include "qcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cacheval.h"
#include "hash.h"
#include "state.h"
#include "xalloc.h"

#define QCACHE_TABLE_MIN 64
#define QCACHE_SLOTS 128          /* >= every ring's capacity (window.h) */
#define QCACHE_WANTED_MAX 128     /* >= the most starts an open value lists */

enum qcache_slot_kind {
    QCACHE_SLOT_EMPTY = 0,
    QCACHE_SLOT_HELD,
    QCACHE_SLOT_CLOSED,
    QCACHE_SLOT_STALE,
};

struct qcache_slot {
    int64_t start;
    uint64_t seq;             /* of the value the bucket came from */
    uint64_t mark;            /* closed mark of the ring when it was read */
    uint64_t round;           /* qcache_missing round that read it */
    uint8_t kind;             /* enum qcache_slot_kind */
    uint8_t confirmed;        /* read under a settled open value */
    uint32_t bytes;           /* length of the closed value it came from */
};

/* The merge of a window's buckets that no open value holds, oldest
 * first, from OLDEST up to SPLIT (the first held one), as of VERSION. */
struct qcache_prefix {
    void *state;                           /* owned; NULL: none */
    int64_t oldest, split;
    uint64_t version;
};

struct qcache_entry {
    struct qcache_entry *next;             /* hash chain */
    struct qcache_entry *newer, *older;    /* use list */
    char *name;
    size_t len;
    uint64_t hash;
    unsigned refs;                         /* table lock */
    int dropped;                           /* out of the table: free at
                                              the last release */
    pthread_mutex_t lock;
    int state;                             /* 0, QCACHE_LIVE, _DELETED */
    struct cacheval_open open;             /* open.metric: the entry's */
    int64_t bytes;                         /* counted: open + slot bytes */
    int64_t open_bytes;                    /* length of the open value */
    uint64_t round;
    struct qcache_slot slots[RING_COUNT][QCACHE_SLOTS];
    /* Bumped whenever a bucket of the ring changes but the one an open
     * value holds and holds again. */
    uint64_t version[RING_COUNT];
    struct qcache_prefix prefix[WINDOW_ALL];   /* per windowed window */
};

struct qcache {
    pthread_mutex_t lock;
    struct qcache_entry **table;
    size_t table_size;                     /* power of two */
    size_t count, max;
    uint64_t bytes, max_bytes;             /* bytes: atomic */
    struct qcache_entry *newest, *oldest;
    struct qcache_stats stats;             /* atomic counters */
};

static void
qcache_count(uint64_t *counter, uint64_t n)
{
    __atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

/* Adds DELTA to the bytes E and C count: the lengths of the values E's
 * states were decoded from, an estimate of the memory they take. */
static void
qcache_account(struct qcache *c, struct qcache_entry *e, int64_t delta)
{
    e->bytes += delta;
    __atomic_add_fetch(&c->bytes, (uint64_t)delta, __ATOMIC_RELAXED);
}

struct qcache *
qcache_create(size_t max_metrics, size_t max_bytes)
{
    struct qcache *c = xcalloc(1, sizeof(*c));

    for (int r = 0; r < RING_COUNT; r++)
        if (window_ring_layout((enum ring)r)->capacity > QCACHE_SLOTS)
            abort();           /* window.h grew past QCACHE_SLOTS */
    pthread_mutex_init(&c->lock, NULL);
    c->max = max_metrics > 0 ? max_metrics : 1;
    c->max_bytes = max_bytes;
    c->table_size = QCACHE_TABLE_MIN;
    c->table = xcalloc(c->table_size, sizeof(*c->table));
    return c;
}

/* Empties what E holds (the entry itself stays). */
static void
qcache_entry_clear(struct qcache_entry *e)
{
    for (int w = 0; w < WINDOW_ALL; w++) {
        if (e->prefix[w].state != NULL)
            state_ops_for((enum event_type)e->open.header.type)->destroy(
                e->prefix[w].state);
        e->prefix[w].state = NULL;
    }
    cacheval_open_release(&e->open);
    memset(&e->open, 0, sizeof(e->open));
    memset(e->slots, 0, sizeof(e->slots));
    e->state = 0;
}

/* Empties E and stops counting its bytes. */
static void
qcache_entry_reset(struct qcache *c, struct qcache_entry *e)
{
    qcache_account(c, e, -e->bytes);
    e->open_bytes = 0;
    qcache_entry_clear(e);
}

static void
qcache_entry_free(struct qcache *c, struct qcache_entry *e)
{
    qcache_entry_reset(c, e);
    pthread_mutex_destroy(&e->lock);
    free(e->name);
    free(e);
}

void
qcache_destroy(struct qcache *c)
{
    if (c == NULL)
        return;
    while (c->newest != NULL) {
        struct qcache_entry *e = c->newest;

        c->newest = e->older;
        qcache_entry_free(c, e);
    }
    free(c->table);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* ---------------------------------------------------------------------- */
/* Table and use list (table lock held)                                    */
/* ---------------------------------------------------------------------- */

static struct qcache_entry *
qcache_find(struct qcache *c, const char *name, size_t len, uint64_t hash)
{
    struct qcache_entry *e = c->table[hash & (c->table_size - 1)];

    for (; e != NULL; e = e->next)
        if (e->hash == hash && e->len == len
            && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

static void
qcache_list_unlink(struct qcache *c, struct qcache_entry *e)
{
    if (e->newer != NULL)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    if (e->older != NULL)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void
qcache_list_push(struct qcache *c, struct qcache_entry *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest != NULL)
        c->newest->newer = e;
    c->newest = e;
    if (c->oldest == NULL)
        c->oldest = e;
}

/* Takes E out of the table and the list; frees it unless it is held. */
static void
qcache_remove(struct qcache *c, struct qcache_entry *e)
{
    struct qcache_entry **p = &c->table[e->hash & (c->table_size - 1)];

    while (*p != e)
        p = &(*p)->next;
    *p = e->next;
    qcache_list_unlink(c, e);
    c->count--;
    if (e->refs == 0)
        qcache_entry_free(c, e);
    else
        e->dropped = 1;
}

static void
qcache_grow(struct qcache *c)
{
    size_t size = c->table_size * 2;
    struct qcache_entry **table = xcalloc(size, sizeof(*table));

    for (struct qcache_entry *e = c->newest; e != NULL; e = e->older) {
        e->next = table[e->hash & (size - 1)];
        table[e->hash & (size - 1)] = e;
    }
    free(c->table);
    c->table = table;
    c->table_size = size;
}

/* 1 if C counts more bytes than its budget (none: 0). */
static int
qcache_over_bytes(struct qcache *c)
{
    return c->max_bytes != 0
           && __atomic_load_n(&c->bytes, __ATOMIC_RELAXED) > c->max_bytes;
}

struct qcache_entry *
qcache_acquire(struct qcache *c, const char *name, size_t len)
{
    uint64_t hash = hash_fnv1a64(name, len);
    struct qcache_entry *e;

    pthread_mutex_lock(&c->lock);
    e = qcache_find(c, name, len, hash);
    if (e == NULL) {
        /* Room first: the least recently used entries nobody holds. */
        for (struct qcache_entry *old = c->oldest;
             old != NULL && (c->count >= c->max || qcache_over_bytes(c));) {
            struct qcache_entry *newer = old->newer;

            if (old->refs == 0) {
                qcache_remove(c, old);
                qcache_count(&c->stats.evicted, 1);
            }
            old = newer;
        }
        if (c->count + 1 > c->table_size)
            qcache_grow(c);
        e = xcalloc(1, sizeof(*e));
        e->name = xstrndup(name, len);
        e->len = len;
        e->hash = hash;
        pthread_mutex_init(&e->lock, NULL);
        e->next = c->table[hash & (c->table_size - 1)];
        c->table[hash & (c->table_size - 1)] = e;
        c->count++;
    } else {
        qcache_list_unlink(c, e);
    }
    qcache_list_push(c, e);
    e->refs++;
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_lock(&e->lock);
    return e;
}

void
qcache_release(struct qcache *c, struct qcache_entry *e)
{
    pthread_mutex_unlock(&e->lock);
    pthread_mutex_lock(&c->lock);
    if (--e->refs == 0 && e->dropped)
        qcache_entry_free(c, e);
    pthread_mutex_unlock(&c->lock);
}

void
qcache_forget(struct qcache *c, const char *name, size_t len)
{
    struct qcache_entry *e;

    pthread_mutex_lock(&c->lock);
    e = qcache_find(c, name, len, hash_fnv1a64(name, len));
    if (e != NULL)
        qcache_remove(c, e);
    pthread_mutex_unlock(&c->lock);
}

void
qcache_stats(struct qcache *c, struct qcache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    out->entries = c->count;
    pthread_mutex_unlock(&c->lock);
    out->bytes = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
    out->evicted = __atomic_load_n(&c->stats.evicted, __ATOMIC_RELAXED);
    out->opens = __atomic_load_n(&c->stats.opens, __ATOMIC_RELAXED);
    out->closed_read = __atomic_load_n(&c->stats.closed_read,
                                       __ATOMIC_RELAXED);
    out->closed_decoded = __atomic_load_n(&c->stats.closed_decoded,
                                          __ATOMIC_RELAXED);
    out->closed_kept = __atomic_load_n(&c->stats.closed_kept,
                                       __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------- */
/* An entry's content (entry lock held)                                    */
/* ---------------------------------------------------------------------- */

/* The position of RING's bucket at START, as the metric's ring places
 * it: the index of its slot. */
static size_t
qcache_pos(enum ring ring, int64_t start)
{
    const struct ring_layout *l = window_ring_layout(ring);
    int64_t pos = (start / l->width_s) % l->capacity;

    return (size_t)(pos < 0 ? pos + l->capacity : pos);
}

static struct qcache_slot *
qcache_slot(struct qcache_entry *e, enum ring ring, int64_t start)
{
    return &e->slots[ring][qcache_pos(ring, start)];
}

/* Marks the buckets E's open value holds as held (counted with the open
 * value from then on). */
static void
qcache_mark_held(struct qcache *c, struct qcache_entry *e)
{
    for (size_t i = 0; i < e->open.held_count; i++) {
        const struct cacheval_bucket *b = &e->open.held[i];
        struct qcache_slot *s = qcache_slot(e, b->ring, b->start_s);

        qcache_account(c, e, -(int64_t)s->bytes);
        memset(s, 0, sizeof(*s));
        s->start = b->start_s;
        s->seq = e->open.header.sequence;
        s->kind = QCACHE_SLOT_HELD;
    }
}

/* Makes the decoded value O (taken; LEN bytes encoded) all that E
 * holds. */
static int
qcache_take(struct qcache *c, struct qcache_entry *e, struct cacheval_open *o,
            size_t len)
{
    qcache_entry_reset(c, e);
    e->open = *o;
    e->state = o->metric == NULL ? QCACHE_DELETED : QCACHE_LIVE;
    qcache_mark_held(c, e);
    qcache_account(c, e, (int64_t)len);
    e->open_bytes = (int64_t)len;
    return e->state;
}

/* Puts the newer open value O of E's generation into E's metric: `all`
 * and the buckets O holds (copies), the rest of E's buckets staying; then
 * O (its metric freed) becomes E's open value. -1 (E unchanged but for
 * some buckets) if the metric refused a bucket. */
static int
qcache_transplant(struct qcache *c, struct qcache_entry *e,
                  struct cacheval_open *o, size_t len)
{
    const struct state_ops *ops = state_ops_for(metric_type(o->metric));
    struct metric *m = e->open.metric;
    int64_t first_us, last_us;

    for (size_t i = 0; i < o->held_count; i++) {
        const struct cacheval_bucket *b = &o->held[i];
        const void *bucket = metric_bucket_at(o->metric, b->ring, b->start_s);
        const struct qcache_slot *s = qcache_slot(e, b->ring, b->start_s);

        if (s->kind != QCACHE_SLOT_HELD || s->start != b->start_s)
            e->version[b->ring]++;
        if (metric_set_bucket(m, b->ring, b->start_s, ops->clone(bucket)) != 0)
            return -1;
    }
    metric_time_range(o->metric, &first_us, &last_us);
    metric_set_all(m, ops->clone(metric_all(o->metric)), first_us, last_us);
    for (int r = 0; r < RING_COUNT; r++)
        for (size_t i = 0; i < QCACHE_SLOTS; i++)
            if (e->slots[r][i].kind == QCACHE_SLOT_HELD)
                e->slots[r][i].kind = QCACHE_SLOT_STALE;
    e->open.metric = o->metric;          /* released with the old lists */
    cacheval_open_release(&e->open);
    e->open = *o;
    e->open.metric = m;
    qcache_mark_held(c, e);
    qcache_account(c, e, (int64_t)len - e->open_bytes);
    e->open_bytes = (int64_t)len;
    return 0;
}

int
qcache_open(struct qcache *c, struct qcache_entry *e, const uint8_t *value,
            size_t len, char *err, size_t errlen)
{
    struct codec_cache_header h;
    struct cacheval_open o;
    struct buf_reader in;

    buf_reader_init(&in, value, len);
    if (codec_cache_header_decode(&in, &h, err, errlen) != 0)
        return -1;
    if (e->state != 0 && !codec_cache_header_may_replace(&e->open.header, &h))
        return e->state;                 /* that one, or a newer one */
    if (cacheval_decode_open(value, len, &o, err, errlen) != 0)
        return -1;
    qcache_count(&c->stats.opens, 1);
    if (o.metric == NULL || e->state != QCACHE_LIVE
        || e->open.header.generation != o.header.generation
        || e->open.header.type != o.header.type
        || qcache_transplant(c, e, &o, len) != 0)
        return qcache_take(c, e, &o, len);
    return QCACHE_LIVE;
}

/* 1 if the bucket of slot S at START may be used as it is: held by the
 * open value, or a closed one vouched for by the ring's closed mark. */
static int
qcache_vouched(const struct qcache_entry *e, enum ring ring,
               const struct qcache_slot *s, int64_t start)
{
    if (s->start != start)
        return 0;
    if (s->kind == QCACHE_SLOT_HELD)
        return 1;
    return s->kind == QCACHE_SLOT_CLOSED && s->confirmed
           && e->open.has_marks && s->mark == e->open.marks.closed_seq[ring];
}

/* 1 if E's metric holds no bucket of the window of WINDOW at NOW_US on
 * RING but the WANTED[N] ones and those the open value holds. */
static int
qcache_consistent(struct qcache_entry *e, enum window window,
                  int64_t now_us, enum ring ring, const int64_t *wanted,
                  size_t n)
{
    const struct window_layout *w = window_layout(window);
    int64_t width = window_ring_layout(ring)->width_s;
    int64_t start = window_oldest_bucket(window, now_us);
    uint8_t listed[QCACHE_SLOTS] = {0};

    for (size_t i = 0; i < n; i++)
        listed[qcache_pos(ring, wanted[i])] = 1;
    for (int i = 0; i < w->buckets; i++, start += width) {
        struct qcache_slot *s = qcache_slot(e, ring, start);

        if (s->start == start && s->kind != QCACHE_SLOT_EMPTY
            && s->kind != QCACHE_SLOT_HELD && !listed[qcache_pos(ring, start)])
            return 0;
    }
    return 1;
}

size_t
qcache_missing(struct qcache *c, struct qcache_entry *e, enum window window,
               int64_t now_us, enum ring *ring, uint64_t *generation,
               int64_t *starts, size_t max)
{
    int64_t wanted[QCACHE_WANTED_MAX];
    size_t n = cacheval_wanted(&e->open, window, now_us, ring, wanted,
                               QCACHE_WANTED_MAX);
    size_t k = 0;
    uint64_t kept = 0;

    e->round++;
    *generation = e->open.header.generation;
    if (!qcache_consistent(e, window, now_us, *ring, wanted, n)) {
        qcache_entry_reset(c, e);
        return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++) {
        if (qcache_vouched(e, *ring, qcache_slot(e, *ring, wanted[i]),
                           wanted[i]))
            kept++;
        else if (k < max)
            starts[k++] = wanted[i];
    }
    qcache_count(&c->stats.closed_kept, kept);
    return k;
}

int
qcache_closed(struct qcache *c, struct qcache_entry *e, const uint8_t *value,
              size_t len, char *err, size_t errlen)
{
    struct codec_cache_header h;
    struct buf_reader in;
    struct qcache_slot *s;
    enum ring ring;
    int64_t start;

    buf_reader_init(&in, value, len);
    if (cacheval_closed_begin(&in, &h, &ring, &start, err, errlen) != 0)
        return -1;
    qcache_count(&c->stats.closed_read, 1);
    if (e->state != QCACHE_LIVE || h.generation != e->open.header.generation
        || h.type != e->open.header.type)
        return 0;
    s = qcache_slot(e, ring, start);
    if (s->start == start && s->kind == QCACHE_SLOT_HELD
        && h.sequence < e->open.header.sequence)
        return 0;                        /* the open value's is newer */
    if (s->start != start || s->kind == QCACHE_SLOT_EMPTY
        || s->seq != h.sequence) {
        void *state = cacheval_closed_state(&in, (enum event_type)h.type, err,
                                            errlen);

        if (state == NULL)
            return -1;
        qcache_count(&c->stats.closed_decoded, 1);
        e->version[ring]++;
        qcache_account(c, e, (int64_t)len - (int64_t)s->bytes);
        s->bytes = (uint32_t)len;
        if (metric_set_bucket(e->open.metric, ring, start, state) != 0)
            return 0;
    }
    s->start = start;
    s->seq = h.sequence;
    s->kind = QCACHE_SLOT_CLOSED;
    s->round = e->round;
    s->confirmed = (uint8_t)cacheval_ring_settled(&e->open, ring);
    s->mark = e->open.marks.closed_seq[ring];
    return 1;
}

int
qcache_complete(const struct qcache_entry *e, enum window window,
                int64_t now_us)
{
    int64_t wanted[QCACHE_WANTED_MAX];
    enum ring ring;
    size_t n = cacheval_wanted(&e->open, window, now_us, &ring, wanted,
                               QCACHE_WANTED_MAX);

    for (size_t i = 0; i < n; i++) {
        const struct qcache_slot *s =
            &e->slots[ring][qcache_pos(ring, wanted[i])];

        if (!qcache_vouched(e, ring, s, wanted[i])
            && !(s->start == wanted[i] && s->kind == QCACHE_SLOT_CLOSED
                 && s->round == e->round))
            return 0;
    }
    return 1;
}

const struct metric *
qcache_metric(const struct qcache_entry *e)
{
    return e->state == QCACHE_LIVE ? e->open.metric : NULL;
}

void *
qcache_window_state(struct qcache_entry *e, enum window window,
                    int64_t now_us)
{
    const struct window_layout *w = window_layout(window);
    const struct state_ops *ops = state_ops_for(metric_type(e->open.metric));
    const struct state_config config = {0};   /* as metric_create(NULL) */
    struct qcache_prefix *p = &e->prefix[window];
    int64_t width = window_ring_layout(w->ring)->width_s;
    int64_t oldest = window_oldest_bucket(window, now_us), start = oldest;
    void *state;
    int i = 0;

    for (; i < w->buckets; i++, start += width) {
        const struct qcache_slot *s = qcache_slot(e, w->ring, start);

        if (s->kind == QCACHE_SLOT_HELD && s->start == start)
            break;
    }
    if (p->state == NULL || p->oldest != oldest || p->split != start
        || p->version != e->version[w->ring]) {
        if (p->state != NULL)
            ops->destroy(p->state);
        p->state = ops->create(&config);
        p->oldest = oldest;
        p->split = start;
        p->version = e->version[w->ring];
        for (int64_t s = oldest; s < start; s += width) {
            const void *bucket = metric_bucket_at(e->open.metric, w->ring, s);

            if (bucket != NULL)
                ops->merge(p->state, bucket);
        }
    }
    /* The rest in order, as metric_window_state merges them. */
    state = ops->clone(p->state);
    for (; i < w->buckets; i++, start += width) {
        const void *bucket = metric_bucket_at(e->open.metric, w->ring, start);

        if (bucket != NULL)
            ops->merge(state, bucket);
    }
    return state;
}
