/*
 * move: slot moves at an aggregator; see move.h and schema/resharding.md.
 */
#include "move.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "hash.h"
#include "log.h"
#include "metric.h"
#include "xalloc.h"

/* A handoff message is closed past these, well under the codec's limits. */
#define MOVE_CHUNK_BYTES (4u * 1024u * 1024u)
#define MOVE_CHUNK_ENTRIES 65536u
#define MOVE_ORIGIN_MAX 32
#define MOVE_KEY_TAG "handoff"

struct move {
    struct slotmap *map;
    uint32_t self;
    uint64_t awaiting[SLOTMAP_SLOTS];   /* map version it waits under */
    uint64_t received[SLOTMAP_SLOTS];   /* newest handoff's map version */
    struct move_parked *parked, **parked_tail;
    size_t parked_count;
    struct move_stats stats;
};

struct move *
move_create(struct slotmap *map, uint32_t self)
{
    struct move *m = xcalloc(1, sizeof(*m));

    m->map = map;
    m->self = self;
    m->parked_tail = &m->parked;
    return m;
}

void
move_parked_free(struct move_parked *p)
{
    if (p == NULL)
        return;
    free(p->data);
    free(p);
}

void
move_destroy(struct move *m)
{
    if (m == NULL)
        return;
    while (m->parked != NULL) {
        struct move_parked *p = m->parked;

        m->parked = p->next;
        move_parked_free(p);
    }
    slotmap_destroy(m->map);
    free(m);
}

const struct slotmap *
move_map(const struct move *m)
{
    return m->map;
}

uint32_t
move_owner(const struct move *m, uint16_t slot)
{
    return slotmap_owner(m->map, slot);
}

int
move_install(struct move *m, struct slotmap *next, uint8_t *leaving)
{
    uint32_t in = 0, out = 0;

    if (next->version <= m->map->version) {
        m->stats.stale_maps++;
        slotmap_destroy(next);
        return 0;
    }
    for (uint32_t s = 0; s < SLOTMAP_SLOTS; s++) {
        uint32_t before = slotmap_owner(m->map, (uint16_t)s);
        uint32_t after = slotmap_owner(next, (uint16_t)s);

        leaving[s] = before == m->self && after != m->self;
        out += leaving[s];
        if (after == m->self && before != m->self) {
            in++;
            /* A handoff made under this map may have come first. */
            if (m->received[s] < next->version)
                m->awaiting[s] = next->version;
        }
    }
    m->stats.from_version = m->map->version;
    m->stats.to_version = next->version;
    m->stats.slots_in = in;
    m->stats.slots_out = out;
    slotmap_destroy(m->map);
    m->map = next;
    return 1;
}

/* ---------------------------------------------------------------------- */
/* Handoffs                                                                */
/* ---------------------------------------------------------------------- */

struct move_keys {
    const uint8_t *leaving;
    struct codec_dedup_key *keys;
    uint16_t *slots;
    size_t count, cap;
};

static void
move_collect_key(void *ctx, const uint8_t *key, int64_t created_us)
{
    struct move_keys *k = ctx;
    uint16_t slot = slotmap_slot((const char *)key, CODEC_KEY_SIZE);

    if (!k->leaving[slot])
        return;
    if (k->count == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->keys = xrealloc(k->keys, k->cap * sizeof(*k->keys));
        k->slots = xrealloc(k->slots, k->cap * sizeof(*k->slots));
    }
    memcpy(k->keys[k->count].key, key, CODEC_KEY_SIZE);
    k->keys[k->count].created_us = created_us;
    k->slots[k->count] = slot;
    k->count++;
}

/* One HANDOFF message in the making, to TARGET. */
struct move_chunk {
    struct move *m;
    struct forward *fwd;
    uint32_t target;
    uint32_t index;             /* chunks made for TARGET */
    int64_t now_us;
    uint8_t key[CODEC_KEY_SIZE];   /* of the open message's sub-batch */
    struct buf_writer out;
    struct codec_encoder enc;
    size_t entries;
    int open;
};

static void
move_chunk_open(struct move_chunk *c)
{
    struct codec_subbatch sb;
    char origin[MOVE_ORIGIN_MAX];
    uint8_t seed[sizeof(MOVE_KEY_TAG) + 3 * sizeof(uint64_t)];
    uint64_t parts[3] = {c->m->self, c->m->map->version,
                         (uint64_t)c->target << 32 | c->index};
    size_t n = sizeof(MOVE_KEY_TAG);

    memcpy(seed, MOVE_KEY_TAG, sizeof(MOVE_KEY_TAG));
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < 8; i++)
            seed[n++] = (uint8_t)(parts[p] >> (8 * i));
    memset(&sb, 0, sizeof(sb));
    hash_128_bytes(hash_128(seed, n), sb.dedup_key);
    memcpy(c->key, sb.dedup_key, CODEC_KEY_SIZE);
    sb.flags = CODEC_SB_HANDOFF | CODEC_SB_FORWARDED;
    snprintf(origin, sizeof(origin), "agg-%u", c->m->self);
    sb.origin = origin;
    sb.origin_len = strlen(origin);
    sb.map_version = c->m->map->version;
    sb.created_us = c->now_us;
    buf_writer_create(&c->out, 4096);
    codec_message_begin(&c->enc, &c->out);
    if (codec_subbatch_begin(&c->enc, &sb) != 0)
        abort();                /* every field above is in range */
    c->entries = 0;
    c->open = 1;
}

static void
move_chunk_close(struct move_chunk *c)
{
    uint8_t *data;
    size_t len;

    if (!c->open)
        return;
    c->open = 0;
    if (codec_subbatch_end(&c->enc) != 0 || codec_message_end(&c->enc) != 0) {
        log_error("handoff to instance %u: %s", c->target, c->enc.err);
        buf_writer_destroy(&c->out);
        return;
    }
    data = buf_writer_release(&c->out, &len);
    forward_add(c->fwd, c->target, c->key, data, len);
    c->m->stats.handoffs_sent++;
    c->index++;
}

/* Starts a new message when the open one is full. */
static void
move_chunk_room(struct move_chunk *c)
{
    if (c->open && (c->out.len >= MOVE_CHUNK_BYTES
                    || c->entries >= MOVE_CHUNK_ENTRIES))
        move_chunk_close(c);
    if (!c->open)
        move_chunk_open(c);
}

static void
move_chunk_metric(struct move_chunk *c, const struct store_taken *t)
{
    int rc;

    move_chunk_room(c);
    if (t->metric != NULL) {
        struct buf_writer blob;

        buf_writer_create(&blob, 1024);
        metric_encode(t->metric, &blob);
        rc = codec_put_metric_state(&c->enc, t->slot,
                                    metric_type(t->metric), t->generation,
                                    t->name, t->name_len, blob.data,
                                    blob.len);
        buf_writer_destroy(&blob);
        c->m->stats.metrics_sent += rc == 0;
    } else {
        /* A deleted metric: its generation moves as a tombstone. */
        rc = codec_put_tombstone(&c->enc, t->slot, CODEC_TYPE_ANY,
                                 t->generation - 1, t->name, t->name_len,
                                 t->deleted_us);
    }
    if (rc != 0)
        log_error("handoff of %s to instance %u: %s", t->name, c->target,
                  c->enc.err);
    c->entries++;
}

static int
move_taken_compare(const void *a, const void *b)
{
    const struct store_taken *x = a, *y = b;

    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int
move_key_compare(const void *a, const void *b)
{
    return memcmp(((const struct codec_dedup_key *)a)->key,
                  ((const struct codec_dedup_key *)b)->key, CODEC_KEY_SIZE);
}

void
move_handoff(struct move *m, struct store *store,
             const struct dedup *batches, struct forward *fwd,
             const uint8_t *leaving, int64_t now_us)
{
    struct store_taken *taken;
    size_t n = store_take_slots(store, leaving, &taken);
    struct move_keys keys = {leaving, NULL, NULL, 0, 0};
    struct codec_dedup_key *slot_keys;

    if (n > 1)
        qsort(taken, n, sizeof(*taken), move_taken_compare);
    dedup_each(batches, move_collect_key, &keys);
    slot_keys = xmalloc((keys.count + 1) * sizeof(*slot_keys));
    for (uint32_t target = 0; target < m->map->instances; target++) {
        struct move_chunk c;
        size_t t = 0;

        memset(&c, 0, sizeof(c));
        c.m = m;
        c.fwd = fwd;
        c.target = target;
        c.now_us = now_us;
        for (uint32_t s = 0; s < SLOTMAP_SLOTS; s++) {
            size_t k = 0;

            if (!leaving[s] || slotmap_owner(m->map, (uint16_t)s) != target)
                continue;
            while (t < n && taken[t].slot < s)
                t++;
            for (; t < n && taken[t].slot == s; t++)
                if (taken[t].metric != NULL || taken[t].generation > 0)
                    move_chunk_metric(&c, &taken[t]);
            for (size_t i = 0; i < keys.count; i++)
                if (keys.slots[i] == s)
                    slot_keys[k++] = keys.keys[i];
            if (k > 1)
                qsort(slot_keys, k, sizeof(*slot_keys), move_key_compare);
            /* Always sent, even empty: it tells the new owner the slot's
             * batch keys are all there. */
            move_chunk_room(&c);
            if (codec_put_dedup_keys(&c.enc, (uint16_t)s, slot_keys, k) != 0)
                log_error("handoff keys of slot %u: %s", s, c.enc.err);
            c.entries++;
        }
        move_chunk_close(&c);
    }
    free(slot_keys);
    free(keys.keys);
    free(keys.slots);
    store_taken_free(taken, n);
}

/* ---------------------------------------------------------------------- */
/* Waiting slots and parked batches                                        */
/* ---------------------------------------------------------------------- */

int
move_awaiting(const struct move *m, uint16_t slot)
{
    return m->awaiting[slot] != 0;
}

void
move_received(struct move *m, uint16_t slot, uint64_t version)
{
    if (version > m->received[slot])
        m->received[slot] = version;
    if (m->awaiting[slot] != 0 && version >= m->awaiting[slot])
        m->awaiting[slot] = 0;
}

void
move_count_received(struct move *m, uint64_t handoffs, uint64_t metrics)
{
    m->stats.handoffs_received += handoffs;
    m->stats.metrics_received += metrics;
}

void
move_park(struct move *m, uint16_t slot, const uint8_t *data, size_t len)
{
    struct move_parked *p = xcalloc(1, sizeof(*p));

    p->slot = slot;
    p->data = xmalloc(len);
    memcpy(p->data, data, len);
    p->len = len;
    *m->parked_tail = p;
    m->parked_tail = &p->next;
    m->parked_count++;
}

struct move_parked *
move_release(struct move *m)
{
    struct move_parked **p;

    for (p = &m->parked; *p != NULL; p = &(*p)->next) {
        struct move_parked *found = *p;

        if (m->awaiting[found->slot] != 0)
            continue;
        *p = found->next;
        if (m->parked_tail == &found->next)
            m->parked_tail = p;
        found->next = NULL;
        m->parked_count--;
        return found;
    }
    return NULL;
}

size_t
move_awaiting_count(const struct move *m)
{
    size_t n = 0;

    for (uint32_t s = 0; s < SLOTMAP_SLOTS; s++)
        n += m->awaiting[s] != 0;
    return n;
}

size_t
move_parked_count(const struct move *m)
{
    return m->parked_count;
}

void
move_stats(const struct move *m, struct move_stats *out)
{
    *out = m->stats;
}

/* ---------------------------------------------------------------------- */
/* Snapshot                                                                */
/* ---------------------------------------------------------------------- */

/* Slot and version pairs of TABLE that are not 0. */
static void
move_encode_slots(const uint64_t *table, struct buf_writer *out)
{
    size_t n = 0;

    for (uint32_t s = 0; s < SLOTMAP_SLOTS; s++)
        n += table[s] != 0;
    buf_put_varint(out, n);
    for (uint32_t s = 0; s < SLOTMAP_SLOTS; s++) {
        if (table[s] == 0)
            continue;
        buf_put_u16(out, (uint16_t)s);
        buf_put_varint(out, table[s]);
    }
}

static int
move_decode_slots(uint64_t *table, struct buf_reader *in)
{
    uint64_t n;

    if (buf_get_varint(in, &n) != 0 || n > SLOTMAP_SLOTS)
        return -1;
    for (uint64_t i = 0; i < n; i++) {
        uint16_t slot;
        uint64_t v;

        if (buf_get_u16(in, &slot) != 0 || slot >= SLOTMAP_SLOTS
            || buf_get_varint(in, &v) != 0)
            return -1;
        table[slot] = v;
    }
    return 0;
}

void
move_encode(const struct move *m, struct buf_writer *out)
{
    struct buf_writer text;

    buf_writer_create(&text, 1024);
    slotmap_format(m->map, &text);
    buf_put_string(out, text.data, text.len);
    buf_writer_destroy(&text);
    move_encode_slots(m->awaiting, out);
    move_encode_slots(m->received, out);
    buf_put_varint(out, m->parked_count);
    for (const struct move_parked *p = m->parked; p != NULL; p = p->next) {
        buf_put_u16(out, p->slot);
        buf_put_string(out, p->data, p->len);
    }
    buf_put_varint(out, m->stats.from_version);
    buf_put_varint(out, m->stats.to_version);
    buf_put_varint(out, m->stats.slots_out);
    buf_put_varint(out, m->stats.slots_in);
}

int
move_decode(struct move *m, struct buf_reader *in, char *err, size_t errlen)
{
    const uint8_t *text;
    size_t len;
    uint64_t parked, v[4];
    struct slotmap *map;
    char why[SLOTMAP_ERR_MAX];

    if (buf_get_string(in, &text, &len, SLOTMAP_TEXT_MAX) != 0) {
        snprintf(err, errlen, "snapshot: slot map truncated");
        return -1;
    }
    map = slotmap_parse((const char *)text, len, why, sizeof(why));
    if (map == NULL) {
        snprintf(err, errlen, "snapshot: slot map: %s", why);
        return -1;
    }
    if (map->version > m->map->version) {
        slotmap_destroy(m->map);
        m->map = map;
    } else {
        slotmap_destroy(map);
    }
    if (move_decode_slots(m->awaiting, in) != 0
        || move_decode_slots(m->received, in) != 0
        || buf_get_varint(in, &parked) != 0) {
        snprintf(err, errlen, "snapshot: bad waiting slots");
        return -1;
    }
    for (uint64_t i = 0; i < parked; i++) {
        uint16_t slot;
        const uint8_t *data;

        if (buf_get_u16(in, &slot) != 0 || slot >= SLOTMAP_SLOTS
            || buf_get_string(in, &data, &len, CODEC_MESSAGE_MAX) != 0) {
            snprintf(err, errlen, "snapshot: bad parked batch %llu",
                     (unsigned long long)i);
            return -1;
        }
        move_park(m, slot, data, len);
    }
    for (int i = 0; i < 4; i++) {
        if (buf_get_varint(in, &v[i]) != 0) {
            snprintf(err, errlen, "snapshot: bad move counters");
            return -1;
        }
    }
    m->stats.from_version = v[0];
    m->stats.to_version = v[1];
    m->stats.slots_out = (uint32_t)v[2];
    m->stats.slots_in = (uint32_t)v[3];
    return 0;
}
