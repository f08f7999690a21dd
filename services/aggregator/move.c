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
        if (leaving[s])     /* its new owner waits for what this one has */
            m->awaiting[s] = 0;
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
    }
    memcpy(k->keys[k->count].key, key, CODEC_KEY_SIZE);
    k->keys[k->count].created_us = created_us;
    k->count++;
}

/* The HANDOFF message of SLOT to TARGET: the slot's live metrics (TAKEN,
 * N of them) and its batch keys (KEYS, K of them, possibly none), in one
 * sub-batch keyed by (this instance, map version, target, slot), so a
 * replay makes the same key and the new owner takes each slot once. */
static void
move_slot_handoff(struct move *m, struct forward *fwd, uint32_t target,
                  uint16_t slot, const struct store_taken *taken, size_t n,
                  const struct codec_dedup_key *keys, size_t k,
                  int64_t now_us)
{
    struct codec_subbatch sb;
    struct codec_encoder enc;
    struct buf_writer out, blob;
    char origin[MOVE_ORIGIN_MAX];
    uint8_t seed[sizeof(MOVE_KEY_TAG) + 3 * sizeof(uint64_t)];
    uint64_t parts[3] = {m->self, m->map->version,
                         (uint64_t)target << 32 | slot};
    size_t len = sizeof(MOVE_KEY_TAG), sent = 0;
    uint8_t *data;

    memcpy(seed, MOVE_KEY_TAG, sizeof(MOVE_KEY_TAG));
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < 8; i++)
            seed[len++] = (uint8_t)(parts[p] >> (8 * i));
    memset(&sb, 0, sizeof(sb));
    hash_128_bytes(hash_128(seed, len), sb.dedup_key);
    sb.flags = CODEC_SB_HANDOFF | CODEC_SB_FORWARDED;
    snprintf(origin, sizeof(origin), "agg-%u", m->self);
    sb.origin = origin;
    sb.origin_len = strlen(origin);
    sb.map_version = m->map->version;
    sb.created_us = now_us;
    buf_writer_create(&out, 4096);
    buf_writer_create(&blob, 1024);
    codec_message_begin(&enc, &out);
    if (codec_subbatch_begin(&enc, &sb) != 0)
        abort();                /* every field above is in range */
    for (size_t i = 0; i < n; i++) {
        buf_writer_reset(&blob);
        metric_encode(taken[i].metric, &blob);
        if (codec_put_metric_state(&enc, slot, metric_type(taken[i].metric),
                                   taken[i].generation, taken[i].name,
                                   taken[i].name_len, blob.data,
                                   blob.len) != 0)
            log_error("handoff of %s to instance %u: %s (lost)",
                      taken[i].name, target, enc.err);
        else
            sent++;
    }
    /* Last, and always, even empty: it tells the new owner the slot's
     * batch keys are all there. */
    if (codec_put_dedup_keys(&enc, slot, keys, k) != 0
        || codec_subbatch_end(&enc) != 0 || codec_message_end(&enc) != 0) {
        log_error("handoff of slot %u to instance %u: %s", slot, target,
                  enc.err);
        buf_writer_destroy(&out);
    } else {
        data = buf_writer_release(&out, &len);
        forward_add(fwd, target, sb.dedup_key, data, len);
        m->stats.handoffs_sent++;
        m->stats.metrics_sent += sent;
    }
    buf_writer_destroy(&blob);
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
    const struct codec_dedup_key *x = a, *y = b;
    uint16_t sx = slotmap_slot((const char *)x->key, CODEC_KEY_SIZE);
    uint16_t sy = slotmap_slot((const char *)y->key, CODEC_KEY_SIZE);

    if (sx != sy)
        return sx < sy ? -1 : 1;
    return memcmp(x->key, y->key, CODEC_KEY_SIZE);
}

void
move_handoff(struct move *m, struct store *store,
             const struct dedup *batches, struct forward *fwd,
             const uint8_t *leaving, int64_t now_us)
{
    struct store_taken *taken, *live;
    size_t n = store_take_slots(store, leaving, &taken), live_n = 0;
    struct move_keys keys = {leaving, NULL, 0, 0};
    size_t t = 0, k = 0;

    /* Deleted metrics stay behind: a generation is not a state to merge,
     * and a tombstone would delete what the new owner holds by now. */
    live = xmalloc((n + 1) * sizeof(*live));
    for (size_t i = 0; i < n; i++)
        if (taken[i].metric != NULL)
            live[live_n++] = taken[i];
    if (live_n > 1)
        qsort(live, live_n, sizeof(*live), move_taken_compare);
    dedup_each(batches, move_collect_key, &keys);
    if (keys.count > 1)
        qsort(keys.keys, keys.count, sizeof(*keys.keys), move_key_compare);
    for (uint32_t s = 0; s < SLOTMAP_SLOTS; s++) {
        size_t t0, k0;

        if (!leaving[s])
            continue;
        while (t < live_n && live[t].slot < s)
            t++;
        for (t0 = t; t < live_n && live[t].slot == s; t++)
            ;
        while (k < keys.count
               && slotmap_slot((const char *)keys.keys[k].key,
                               CODEC_KEY_SIZE) < s)
            k++;
        for (k0 = k; k < keys.count
                     && slotmap_slot((const char *)keys.keys[k].key,
                                     CODEC_KEY_SIZE) == s; k++)
            ;
        move_slot_handoff(m, fwd, slotmap_owner(m->map, (uint16_t)s),
                          (uint16_t)s, live + t0, t - t0, keys.keys + k0,
                          k - k0, now_us);
    }
    free(live);
    free(keys.keys);
    store_taken_free(taken, n);
}

/* ---------------------------------------------------------------------- */
/* Waiting slots and parked batches                                        */
/* ---------------------------------------------------------------------- */

uint64_t
move_received_version(const struct move *m, uint16_t slot)
{
    return m->received[slot];
}

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
