/*
 * dedup: a hash set of 16-byte keys with exact expiry by creation time.
 *
 *   entries[]  key and created_us, one per key; an entry's index is stable
 *              until the key expires
 *   table[]    open addressing (linear probing, backward-shift deletion)
 *              of entry indices; the slot comes from the key's bytes
 *   heap[]     [0, count): a min-heap of live entry indices by created_us,
 *              so expiry pops the oldest key whatever the arrival order;
 *              [count, capacity): the free entry indices
 *
 * All three grow together: the table doubles when count reaches capacity
 * (DEDUP_LOAD_NUM / DEDUP_LOAD_DEN of the table) and is rebuilt from the
 * heap; entries and heap keep their indices.
 */
#include "dedup.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "xalloc.h"

#define DEDUP_TABLE_MIN 16
/* Past 2^31 slots an entry index would no longer fit below DEDUP_EMPTY. */
#define DEDUP_TABLE_MAX ((size_t)1 << 31)
#define DEDUP_LOAD_NUM 7                 /* grow at 70% load */
#define DEDUP_LOAD_DEN 10
#define DEDUP_EMPTY UINT32_MAX           /* a free table slot */
#define DEDUP_NOT_FOUND SIZE_MAX
/* The shortest encoded key: 16 bytes and a one-byte created_us. */
#define DEDUP_ENCODED_KEY_MIN (DEDUP_KEY_SIZE + 1)

struct dedup_entry {
    uint8_t key[DEDUP_KEY_SIZE];
    int64_t created_us;
};

struct dedup {
    int64_t horizon_us;
    uint32_t *table;                /* table_size slots: index or EMPTY */
    size_t table_size;              /* a power of two */
    struct dedup_entry *entries;    /* capacity */
    uint32_t *heap;                 /* capacity; see the top comment */
    size_t capacity;
    size_t count;
    uint64_t stale;
};

/* Right after the table doubles, count > capacity / 2: per key, at most
 * two entries, two heap slots and 2 * DEN / NUM table slots. */
_Static_assert(DEDUP_ENTRY_BYTES * DEDUP_LOAD_NUM
                   >= 2 * DEDUP_LOAD_DEN * sizeof(uint32_t)
                          + 2 * DEDUP_LOAD_NUM * (sizeof(struct dedup_entry)
                                                  + sizeof(uint32_t)),
               "DEDUP_ENTRY_BYTES below the worst case");

static void dedup_say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
dedup_say(char *err, size_t errlen, const char *fmt, ...)
{
    char reason[DEDUP_ERR_MAX];
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "dedup: %s", reason);
}

/* ---- table ---------------------------------------------------------- */

/* Keys are random, but mix both halves anyway so a key that varies only in
 * its last bytes still spreads. */
static size_t
dedup_home(const struct dedup *d, const uint8_t *key)
{
    uint64_t a, b;

    memcpy(&a, key, sizeof(a));
    memcpy(&b, key + sizeof(a), sizeof(b));
    return (size_t)(hash_mix64(a ^ hash_mix64(b)) & (d->table_size - 1));
}

static void
dedup_table_put(struct dedup *d, uint32_t index)
{
    size_t mask = d->table_size - 1;
    size_t pos = dedup_home(d, d->entries[index].key);

    while (d->table[pos] != DEDUP_EMPTY)
        pos = (pos + 1) & mask;
    d->table[pos] = index;
}

/* The entry index of KEY, or DEDUP_NOT_FOUND. */
static size_t
dedup_find(const struct dedup *d, const uint8_t *key)
{
    size_t mask = d->table_size - 1;

    for (size_t pos = dedup_home(d, key); d->table[pos] != DEDUP_EMPTY;
         pos = (pos + 1) & mask) {
        if (memcmp(d->entries[d->table[pos]].key, key, DEDUP_KEY_SIZE) == 0)
            return d->table[pos];
    }
    return DEDUP_NOT_FOUND;
}

/* Takes entry INDEX (which must be in the table) out, shifting later
 * entries of the probe run back so no lookup needs a tombstone. */
static void
dedup_table_remove(struct dedup *d, uint32_t index)
{
    size_t mask = d->table_size - 1;
    size_t hole = dedup_home(d, d->entries[index].key);
    size_t next;

    while (d->table[hole] != index)
        hole = (hole + 1) & mask;
    for (next = (hole + 1) & mask; d->table[next] != DEDUP_EMPTY;
         next = (next + 1) & mask) {
        size_t home = dedup_home(d, d->entries[d->table[next]].key);

        /* It may fill the hole unless its home lies in (hole, next]. */
        if (((next - home) & mask) >= ((next - hole) & mask)) {
            d->table[hole] = d->table[next];
            hole = next;
        }
    }
    d->table[hole] = DEDUP_EMPTY;
}

/* Sizes everything for TABLE_SIZE slots and rebuilds the table. */
static void
dedup_resize(struct dedup *d, size_t table_size)
{
    size_t capacity = table_size * DEDUP_LOAD_NUM / DEDUP_LOAD_DEN;

    if (table_size > DEDUP_TABLE_MAX) {
        fputs("dedup: too many keys\n", stderr);
        abort();
    }
    d->entries = xrealloc(d->entries, capacity * sizeof(*d->entries));
    d->heap = xrealloc(d->heap, capacity * sizeof(*d->heap));
    for (size_t i = d->capacity; i < capacity; i++)
        d->heap[i] = (uint32_t)i;
    d->capacity = capacity;
    free(d->table);
    d->table = xmalloc(table_size * sizeof(*d->table));
    memset(d->table, 0xff, table_size * sizeof(*d->table));   /* EMPTY */
    d->table_size = table_size;
    for (size_t i = 0; i < d->count; i++)
        dedup_table_put(d, d->heap[i]);
}

/* ---- heap ----------------------------------------------------------- */

static int64_t
dedup_created(const struct dedup *d, uint32_t index)
{
    return d->entries[index].created_us;
}

static void
dedup_heap_push(struct dedup *d, uint32_t index)
{
    size_t pos = d->count++;

    while (pos > 0) {
        size_t parent = (pos - 1) / 2;

        if (dedup_created(d, d->heap[parent]) <= dedup_created(d, index))
            break;
        d->heap[pos] = d->heap[parent];
        pos = parent;
    }
    d->heap[pos] = index;
}

/* Removes the oldest entry from the heap and marks its index free. */
static void
dedup_heap_pop(struct dedup *d)
{
    uint32_t oldest = d->heap[0];
    uint32_t last = d->heap[--d->count];
    size_t pos = 0;

    for (;;) {
        size_t child = 2 * pos + 1;

        if (child >= d->count)
            break;
        if (child + 1 < d->count
            && dedup_created(d, d->heap[child + 1])
                   < dedup_created(d, d->heap[child]))
            child++;
        if (dedup_created(d, d->heap[child]) >= dedup_created(d, last))
            break;
        d->heap[pos] = d->heap[child];
        pos = child;
    }
    if (d->count > 0)
        d->heap[pos] = last;
    d->heap[d->count] = oldest;
}

/* ---- the set -------------------------------------------------------- */

static struct dedup *
dedup_create_sized(int64_t horizon_us, size_t keys)
{
    struct dedup *d = xcalloc(1, sizeof(*d));
    size_t table_size = DEDUP_TABLE_MIN;

    assert(horizon_us > 0);
    while (table_size <= DEDUP_TABLE_MAX
           && table_size * DEDUP_LOAD_NUM / DEDUP_LOAD_DEN < keys)
        table_size *= 2;
    d->horizon_us = horizon_us;
    dedup_resize(d, table_size);
    return d;
}

struct dedup *
dedup_create(int64_t horizon_us)
{
    return dedup_create_sized(horizon_us, 0);
}

void
dedup_destroy(struct dedup *d)
{
    if (d == NULL)
        return;
    free(d->table);
    free(d->entries);
    free(d->heap);
    free(d);
}

/* Whether a key created at CREATED_US is past the horizon at NOW_US, i.e.
 * CREATED_US < NOW_US - horizon, without overflowing. */
static int
dedup_is_old(const struct dedup *d, int64_t created_us, int64_t now_us)
{
    if (now_us < INT64_MIN + d->horizon_us)
        return 0;
    return created_us < now_us - d->horizon_us;
}

static void
dedup_add(struct dedup *d, const uint8_t *key, int64_t created_us)
{
    uint32_t index;

    if (d->count == d->capacity)
        dedup_resize(d, d->table_size * 2);
    index = d->heap[d->count];
    memcpy(d->entries[index].key, key, DEDUP_KEY_SIZE);
    d->entries[index].created_us = created_us;
    dedup_table_put(d, index);
    dedup_heap_push(d, index);
}

int
dedup_seen(struct dedup *d, const uint8_t key[DEDUP_KEY_SIZE],
           int64_t created_us, int64_t now_us)
{
    if (dedup_find(d, key) != DEDUP_NOT_FOUND)
        return 1;
    if (dedup_is_old(d, created_us, now_us))
        d->stale++;
    else
        dedup_add(d, key, created_us);
    return 0;
}

void
dedup_expire(struct dedup *d, int64_t now_us)
{
    while (d->count > 0
           && dedup_is_old(d, dedup_created(d, d->heap[0]), now_us)) {
        dedup_table_remove(d, d->heap[0]);
        dedup_heap_pop(d);
    }
}

size_t
dedup_count(const struct dedup *d)
{
    return d->count;
}

size_t
dedup_memory(const struct dedup *d)
{
    return sizeof(*d) + d->table_size * sizeof(*d->table)
           + d->capacity * (sizeof(*d->entries) + sizeof(*d->heap));
}

uint64_t
dedup_stale(const struct dedup *d)
{
    return d->stale;
}

/* ---- encoding ------------------------------------------------------- */

static int
dedup_entry_compare(const void *pa, const void *pb)
{
    const struct dedup_entry *a = pa, *b = pb;

    return memcmp(a->key, b->key, DEDUP_KEY_SIZE);
}

void
dedup_each(const struct dedup *d,
           void (*each)(void *ctx, const uint8_t *key, int64_t created_us),
           void *ctx)
{
    for (size_t i = 0; i < d->count; i++) {
        const struct dedup_entry *e = &d->entries[d->heap[i]];

        each(ctx, e->key, e->created_us);
    }
}

void
dedup_encode(const struct dedup *d, struct buf_writer *out)
{
    struct dedup_entry *sorted = xmalloc(d->count * sizeof(*sorted));

    for (size_t i = 0; i < d->count; i++)
        sorted[i] = d->entries[d->heap[i]];
    qsort(sorted, d->count, sizeof(*sorted), dedup_entry_compare);
    buf_put_varint(out, d->count);
    for (size_t i = 0; i < d->count; i++) {
        buf_put_bytes(out, sorted[i].key, DEDUP_KEY_SIZE);
        buf_put_svarint(out, sorted[i].created_us);
    }
    free(sorted);
}

struct dedup *
dedup_decode(struct buf_reader *in, int64_t horizon_us, char *err,
             size_t errlen)
{
    struct dedup *d = NULL;
    const uint8_t *key, *previous = NULL;
    uint64_t count;

    if (buf_get_varint(in, &count) != 0) {
        dedup_say(err, errlen, "truncated or malformed key count");
        goto fail;
    }
    if (count > buf_remaining(in) / DEDUP_ENCODED_KEY_MIN) {
        dedup_say(err, errlen, "key count %llu exceeds what %zu bytes can hold",
                  (unsigned long long)count, buf_remaining(in));
        goto fail;
    }
    d = dedup_create_sized(horizon_us, (size_t)count);
    for (size_t i = 0; i < (size_t)count; i++) {
        int64_t created_us;
        int order;

        if (buf_get_bytes(in, &key, DEDUP_KEY_SIZE) != 0) {
            dedup_say(err, errlen, "truncated key %zu", i);
            goto fail;
        }
        if (buf_get_svarint(in, &created_us) != 0) {
            dedup_say(err, errlen,
                      "truncated or malformed created_us of key %zu", i);
            goto fail;
        }
        order = previous == NULL ? 1 : memcmp(key, previous, DEDUP_KEY_SIZE);
        if (order == 0) {
            dedup_say(err, errlen, "key %zu repeats key %zu", i, i - 1);
            goto fail;
        }
        if (order < 0) {
            dedup_say(err, errlen, "key %zu sorts before key %zu", i, i - 1);
            goto fail;
        }
        dedup_add(d, key, created_us);
        previous = key;
    }
    return d;

fail:
    dedup_destroy(d);
    return NULL;
}
