/*
 * test_codec: the bus codec and the cache value header.
 *
 *   - CRC-32C against its check value and a bit-by-bit reference;
 *   - messages with every entry kind and sub-batch flag round trip field by
 *     field, re-encode to the same bytes, and match the worked example of
 *     schema/bus-batch.md byte for byte;
 *   - encoder and decoder limits, each with its exact reason;
 *   - every truncation of several messages fails (with and without the
 *     header patched to fit), and thousands of random byte flips with the
 *     CRC fixed up either fail or decode to something that re-encodes to
 *     an equal message;
 *   - the cache header round trip, its exact bytes and errors, and the
 *     forward-only rule.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "codec.h"
#include "crc32c.h"
#include "slotmap.h"
#include "testrand.h"

#define ERRLEN 256
#define FLIP_ROUNDS 4000
#define CRC_RANDOM_ROUNDS 200

/* ---- helpers -------------------------------------------------------- */

static uint32_t
crc32c_bitwise(const uint8_t *p, size_t len)
{
    uint32_t crc = 0xffffffffu;

    for (size_t i = 0; i < len; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc & 1) ? (crc >> 1) ^ CRC32C_POLY_REFLECTED : crc >> 1;
    }
    return ~crc;
}

static void
fill_key(uint8_t *key, uint8_t first)
{
    for (int i = 0; i < CODEC_KEY_SIZE; i++)
        key[i] = (uint8_t)(first + i);
}

static struct codec_subbatch
make_subbatch(uint8_t key_first, uint8_t flags, const char *origin,
              uint64_t map_version, uint8_t hops, int64_t created_us)
{
    struct codec_subbatch sb;

    memset(&sb, 0, sizeof(sb));
    fill_key(sb.dedup_key, key_first);
    sb.flags = flags;
    if (flags & CODEC_SB_HAS_BATCH_KEY)
        fill_key(sb.batch_key, (uint8_t)(key_first + 0x80));
    sb.origin = origin;
    sb.origin_len = strlen(origin);
    sb.map_version = map_version;
    sb.hop_count = hops;
    sb.created_us = created_us;
    return sb;
}

static struct event
make_event(enum event_type type, const char *name, double value,
           const char *str, int64_t time_us, const char *source)
{
    struct event ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    ev.name = name;
    ev.name_len = strlen(name);
    ev.value = value;
    ev.str = str;
    ev.str_len = str != NULL ? strlen(str) : 0;
    ev.time_us = time_us;
    ev.source = source;
    ev.source_len = strlen(source);
    return ev;
}

static const uint8_t partial_state[] = { 1, 1, 0x10, 0x20, 0x30 };
static const uint8_t metric_blob[] = { 9, 8, 7, 6, 5, 4, 3, 2, 1 };

/* Message A: three sub-batches, every kind and every flag. */
static void
build_message_a(struct buf_writer *w)
{
    struct codec_encoder enc;
    struct codec_subbatch sb;
    struct event ev;
    struct codec_dedup_key keys[3];

    codec_message_begin(&enc, w);
    sb = make_subbatch(0x00, 0, "fe-1", 7, 0, 1764000000000000LL);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    ev = make_event(EVENT_COUNTER, "api.hits", 2.5, NULL, 1764000000250000LL,
                    "web-1");
    assert_int_equal(codec_put_event(&enc, 17, 3, &ev), 0);
    ev = make_event(EVENT_UNIQUE, "users/daily", 0, "alice@example", -5,
                    "");
    assert_int_equal(codec_put_event(&enc, 4095, 0, &ev), 0);
    ev = make_event(EVENT_GAUGE, "x-y_z.0", -1e100, NULL, 0, "host:9");
    assert_int_equal(codec_put_event(&enc, 0, UINT64_MAX, &ev), 0);
    assert_int_equal(codec_subbatch_end(&enc), 0);

    sb = make_subbatch(0x40, CODEC_SB_HAS_BATCH_KEY | CODEC_SB_ENVELOPE,
                       "fe-2", 8, 1, -1);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_put_partial(&enc, 100, EVENT_PERCENTILE, 2,
                                       "api.latency", 11, 1764000000,
                                       1764000000250000LL, 1764000009999999LL,
                                       42,
                                       partial_state, sizeof(partial_state)),
                     0);
    assert_int_equal(codec_put_tombstone(&enc, 200, CODEC_TYPE_ANY, 5,
                                         "old.metric", 10, 1763999999000000),
                     0);
    assert_int_equal(codec_subbatch_end(&enc), 0);

    sb = make_subbatch(0x90, CODEC_SB_FORWARDED | CODEC_SB_FROM_INGEST,
                       "agg-3", UINT64_MAX, CODEC_HOP_MAX, INT64_MIN);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_put_metric_state(&enc, 3000, EVENT_RECENT, 9,
                                            "web/checkout:p99", 16,
                                            metric_blob, sizeof(metric_blob)),
                     0);
    for (int i = 0; i < 3; i++) {
        fill_key(keys[i].key, (uint8_t)(0xc0 + i));
        keys[i].created_us = (int64_t)i * 1000 - 1000;
    }
    assert_int_equal(codec_put_dedup_keys(&enc, 3000, keys, 3), 0);
    assert_int_equal(codec_subbatch_end(&enc), 0);
    assert_int_equal(codec_message_end(&enc), 0);
}

/* Message B: one sub-batch, one event. */
static void
build_message_b(struct buf_writer *w)
{
    struct codec_encoder enc;
    struct codec_subbatch sb = make_subbatch(0x11, 0, "f", 1, 0, 0);
    struct event ev = make_event(EVENT_PERCENTILE, "a", 12.5, NULL, 1, "");

    codec_message_begin(&enc, w);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_put_event(&enc, 5, 1, &ev), 0);
    assert_int_equal(codec_subbatch_end(&enc), 0);
    assert_int_equal(codec_message_end(&enc), 0);
}

/* Message C: two sub-batches of partials and tombstones. */
static void
build_message_c(struct buf_writer *w)
{
    struct codec_encoder enc;
    struct codec_subbatch sb;

    codec_message_begin(&enc, w);
    for (int s = 0; s < 2; s++) {
        sb = make_subbatch((uint8_t)(s * 16), CODEC_SB_HAS_BATCH_KEY,
                           "agg-12", 2, (uint8_t)s, 1000 * s);
        assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
        for (int i = 0; i < 4; i++) {
            assert_int_equal(codec_put_partial(&enc, (uint16_t)(i * 1000),
                                               EVENT_COUNTER, (uint64_t)i,
                                               "c.n", 3, -10 * i,
                                               -10000000LL * i,
                                               -10000000LL * i + i, 1 + i,
                                               partial_state, 3 + i % 2),
                             0);
            assert_int_equal(codec_put_tombstone(&enc, (uint16_t)i,
                                                 EVENT_GAUGE, 1, "t", 1, i),
                             0);
        }
        assert_int_equal(codec_subbatch_end(&enc), 0);
    }
    assert_int_equal(codec_message_end(&enc), 0);
}

static int
bytes_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* 1 if two decoded messages hold the same values. */
static int
messages_equal(const struct codec_message *a, const struct codec_message *b)
{
    if (a->subbatch_count != b->subbatch_count
        || a->entry_count != b->entry_count)
        return 0;
    for (size_t s = 0; s < a->subbatch_count; s++) {
        const struct codec_subbatch *x = &a->subbatches[s];
        const struct codec_subbatch *y = &b->subbatches[s];

        if (memcmp(x->dedup_key, y->dedup_key, CODEC_KEY_SIZE) != 0
            || x->flags != y->flags
            || memcmp(x->batch_key, y->batch_key, CODEC_KEY_SIZE) != 0
            || !bytes_equal(x->origin, x->origin_len, y->origin, y->origin_len)
            || x->map_version != y->map_version
            || x->hop_count != y->hop_count || x->created_us != y->created_us
            || x->entry_count != y->entry_count)
            return 0;
        for (size_t i = 0; i < x->entry_count; i++) {
            const struct codec_entry *e = &x->entries[i];
            const struct codec_entry *f = &y->entries[i];

            if (e->kind != f->kind || e->slot != f->slot)
                return 0;
            if (e->kind == CODEC_ENTRY_DEDUP_KEYS) {
                if (e->u.dedup.count != f->u.dedup.count
                    || memcmp(e->u.dedup.keys, f->u.dedup.keys,
                              e->u.dedup.count * sizeof(*e->u.dedup.keys)))
                    return 0;
                continue;
            }
            if (e->type != f->type || e->generation != f->generation
                || !bytes_equal(e->name, e->name_len, f->name, f->name_len))
                return 0;
            switch (e->kind) {
            case CODEC_ENTRY_EVENT:
                if (e->u.event.time_us != f->u.event.time_us
                    || memcmp(&e->u.event.value, &f->u.event.value,
                              sizeof(double)) != 0
                    || !bytes_equal(e->u.event.str, e->u.event.str_len,
                                    f->u.event.str, f->u.event.str_len)
                    || !bytes_equal(e->u.event.source, e->u.event.source_len,
                                    f->u.event.source, f->u.event.source_len))
                    return 0;
                break;
            case CODEC_ENTRY_PARTIAL:
                if (e->u.partial.bucket_start_s != f->u.partial.bucket_start_s
                    || e->u.partial.first_us != f->u.partial.first_us
                    || e->u.partial.last_us != f->u.partial.last_us
                    || e->u.partial.event_count != f->u.partial.event_count
                    || !bytes_equal(e->u.partial.state, e->u.partial.state_len,
                                    f->u.partial.state,
                                    f->u.partial.state_len))
                    return 0;
                break;
            case CODEC_ENTRY_TOMBSTONE:
                if (e->u.tombstone.time_us != f->u.tombstone.time_us)
                    return 0;
                break;
            case CODEC_ENTRY_METRIC_STATE:
                if (!bytes_equal(e->u.metric_state.metric,
                                 e->u.metric_state.metric_len,
                                 f->u.metric_state.metric,
                                 f->u.metric_state.metric_len))
                    return 0;
                break;
            default:
                return 0;
            }
        }
    }
    return 1;
}

/* Re-encodes a decoded message into OUT (sub-batch headers and entries as
 * decoded). */
static void
reencode(const struct codec_message *m, struct buf_writer *out)
{
    struct codec_encoder enc;

    codec_message_begin(&enc, out);
    for (size_t s = 0; s < m->subbatch_count; s++) {
        assert_int_equal(codec_subbatch_begin(&enc, &m->subbatches[s]), 0);
        for (size_t i = 0; i < m->subbatches[s].entry_count; i++)
            assert_int_equal(codec_put_entry(&enc,
                                             &m->subbatches[s].entries[i]), 0);
        assert_int_equal(codec_subbatch_end(&enc), 0);
    }
    assert_int_equal(codec_message_end(&enc), 0);
}

/* Patches body length and CRC of a message buffer to fit its length. */
static void
fix_header(uint8_t *p, size_t len)
{
    uint32_t body_len = (uint32_t)(len - CODEC_HEADER_SIZE);
    uint32_t crc = crc32c(0, p + CODEC_HEADER_SIZE, body_len);

    for (int i = 0; i < 4; i++) {
        p[8 + i] = (uint8_t)(body_len >> (8 * i));
        p[12 + i] = (uint8_t)(crc >> (8 * i));
    }
}

/* Wraps BODY in a valid header. */
static void
wrap_body(const struct buf_writer *body, struct buf_writer *out)
{
    buf_put_bytes(out, CODEC_MAGIC, CODEC_MAGIC_LEN);
    buf_put_u8(out, CODEC_VERSION);
    buf_put_u8(out, 0);
    buf_put_u16(out, 0);
    buf_put_u32(out, (uint32_t)body->len);
    buf_put_u32(out, crc32c(0, body->data, body->len));
    buf_put_bytes(out, body->data, body->len);
}

/* Decodes DATA expecting failure, and returns the reason (static). */
static const char *
decode_error(const void *data, size_t len)
{
    static char err[ERRLEN];
    struct codec_message m;

    memset(err, 0, sizeof(err));
    assert_int_equal(codec_decode(data, len, &m, err, sizeof(err)), -1);
    assert_null(m.subbatches);
    assert_null(m.entries);
    return err;
}

/* Raw building blocks for hand-made (possibly invalid) bodies. */
static void
raw_subbatch(struct buf_writer *w, uint8_t flags, uint64_t map_version,
             uint8_t hops, uint64_t reserved, uint64_t entries)
{
    uint8_t key[CODEC_KEY_SIZE];

    fill_key(key, 0x20);
    buf_put_bytes(w, key, sizeof(key));
    buf_put_u8(w, flags);
    if (flags & CODEC_SB_HAS_BATCH_KEY)
        buf_put_bytes(w, key, sizeof(key));
    buf_put_string(w, "fe-1", 4);
    buf_put_varint(w, map_version);
    buf_put_u8(w, hops);
    buf_put_svarint(w, 77);
    buf_put_varint(w, reserved);
    buf_put_varint(w, entries);
}

static void
raw_entry(struct buf_writer *w, uint8_t kind, const struct buf_writer *payload)
{
    buf_put_u8(w, kind);
    buf_put_varint(w, payload->len);
    buf_put_bytes(w, payload->data, payload->len);
}

static void
raw_tombstone(struct buf_writer *w, uint16_t slot, uint8_t type,
              const char *name)
{
    struct buf_writer p;

    buf_writer_create(&p, 0);
    buf_put_u16(&p, slot);
    buf_put_u8(&p, type);
    buf_put_varint(&p, 1);
    buf_put_string(&p, name, strlen(name));
    buf_put_svarint(&p, 5);
    raw_entry(w, CODEC_ENTRY_TOMBSTONE, &p);
    buf_writer_destroy(&p);
}

/* Wraps BODY in a valid header, decodes it expecting failure, and returns
 * the reason (static). */
static const char *
raw_decode_error(const struct buf_writer *body)
{
    struct buf_writer msg;
    static char err[ERRLEN];

    buf_writer_create(&msg, 0);
    wrap_body(body, &msg);
    snprintf(err, sizeof(err), "%s", decode_error(msg.data, msg.len));
    buf_writer_destroy(&msg);
    return err;
}

/* ---- CRC ------------------------------------------------------------ */

static void
test_crc32c_vector(void **unused)
{
    struct testrand r;
    uint8_t buf[300];

    (void)unused;
    assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c(0, NULL, 0), 0);
    assert_int_equal(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
    /* RFC 3720 B.4: 32 bytes of zeros. */
    memset(buf, 0, 32);
    assert_int_equal(crc32c(0, buf, 32), 0x8A9136AAu);
    testrand_seed(&r, 1);
    for (int round = 0; round < CRC_RANDOM_ROUNDS; round++) {
        size_t n = (size_t)testrand_below(&r, sizeof(buf) + 1);

        size_t at = (size_t)testrand_below(&r, n + 1);

        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)testrand_next(&r);
        assert_int_equal(crc32c(0, buf, n), crc32c_bitwise(buf, n));
        assert_int_equal(crc32c_portable(0, buf, n), crc32c_bitwise(buf, n));
        /* Continued from a split at any byte, so unaligned words too. */
        assert_int_equal(crc32c(crc32c(0, buf, at), buf + at, n - at),
                         crc32c_bitwise(buf, n));
    }
    assert_int_equal(crc32c_portable(0, "123456789", 9), 0xE3069283u);
}

/* ---- round trips ---------------------------------------------------- */

static void
test_round_trip_every_kind(void **unused)
{
    struct buf_writer w;
    struct codec_message m;
    char err[ERRLEN];
    const struct codec_subbatch *sb;
    const struct codec_entry *e;
    uint8_t key[CODEC_KEY_SIZE];

    (void)unused;
    buf_writer_create(&w, 0);
    build_message_a(&w);
    assert_int_equal(codec_decode(w.data, w.len, &m, err, sizeof(err)), 0);
    assert_int_equal(m.version, 1);
    assert_int_equal(m.subbatch_count, 3);
    assert_int_equal(m.entry_count, 7);

    sb = &m.subbatches[0];
    fill_key(key, 0x00);
    assert_memory_equal(sb->dedup_key, key, CODEC_KEY_SIZE);
    assert_int_equal(sb->flags, 0);
    assert_int_equal(sb->origin_len, 4);
    assert_memory_equal(sb->origin, "fe-1", 4);
    assert_true(sb->origin >= (const char *)w.data
                && sb->origin < (const char *)w.data + w.len);
    assert_true(sb->map_version == 7);
    assert_int_equal(sb->hop_count, 0);
    assert_true(sb->created_us == 1764000000000000LL);
    assert_int_equal(sb->entry_count, 3);
    assert_ptr_equal(sb->entries, m.entries);

    e = &sb->entries[0];
    assert_int_equal(e->kind, CODEC_ENTRY_EVENT);
    assert_int_equal(e->slot, 17);
    assert_int_equal(e->type, EVENT_COUNTER);
    assert_true(e->generation == 3);
    assert_int_equal(e->u.event.type, EVENT_COUNTER);
    assert_int_equal(e->u.event.name_len, 8);
    assert_memory_equal(e->u.event.name, "api.hits", 8);
    assert_ptr_equal(e->u.event.name, e->name);
    assert_true(e->u.event.name >= (const char *)w.data
                && e->u.event.name < (const char *)w.data + w.len);
    assert_true(e->u.event.value == 2.5);
    assert_null(e->u.event.str);
    assert_true(e->u.event.time_us == 1764000000250000LL);
    assert_int_equal(e->u.event.source_len, 5);
    assert_memory_equal(e->u.event.source, "web-1", 5);

    e = &sb->entries[1];
    assert_int_equal(e->kind, CODEC_ENTRY_EVENT);
    assert_int_equal(e->slot, 4095);
    assert_int_equal(e->u.event.type, EVENT_UNIQUE);
    assert_true(e->generation == 0);
    assert_int_equal(e->u.event.str_len, 13);
    assert_memory_equal(e->u.event.str, "alice@example", 13);
    assert_true(e->u.event.value == 0);
    assert_true(e->u.event.time_us == -5);
    assert_int_equal(e->u.event.source_len, 0);
    assert_string_equal(e->u.event.source, "");

    e = &sb->entries[2];
    assert_int_equal(e->u.event.type, EVENT_GAUGE);
    assert_int_equal(e->slot, 0);
    assert_true(e->generation == UINT64_MAX);
    assert_true(e->u.event.value == -1e100);
    assert_memory_equal(e->u.event.name, "x-y_z.0", 7);
    assert_memory_equal(e->u.event.source, "host:9", 6);

    sb = &m.subbatches[1];
    fill_key(key, 0x40);
    assert_memory_equal(sb->dedup_key, key, CODEC_KEY_SIZE);
    assert_int_equal(sb->flags, CODEC_SB_HAS_BATCH_KEY | CODEC_SB_ENVELOPE);
    fill_key(key, 0xc0);
    assert_memory_equal(sb->batch_key, key, CODEC_KEY_SIZE);
    assert_memory_equal(sb->origin, "fe-2", 4);
    assert_true(sb->map_version == 8);
    assert_int_equal(sb->hop_count, 1);
    assert_true(sb->created_us == -1);
    assert_int_equal(sb->entry_count, 2);
    assert_ptr_equal(sb->entries, m.entries + 3);

    e = &sb->entries[0];
    assert_int_equal(e->kind, CODEC_ENTRY_PARTIAL);
    assert_int_equal(e->slot, 100);
    assert_int_equal(e->type, EVENT_PERCENTILE);
    assert_true(e->generation == 2);
    assert_memory_equal(e->name, "api.latency", 11);
    assert_true(e->u.partial.bucket_start_s == 1764000000);
    assert_true(e->u.partial.first_us == 1764000000250000LL);
    assert_true(e->u.partial.last_us == 1764000009999999LL);
    assert_true(e->u.partial.event_count == 42);
    assert_int_equal(e->u.partial.state_len, sizeof(partial_state));
    assert_memory_equal(e->u.partial.state, partial_state,
                        sizeof(partial_state));

    e = &sb->entries[1];
    assert_int_equal(e->kind, CODEC_ENTRY_TOMBSTONE);
    assert_int_equal(e->slot, 200);
    assert_int_equal(e->type, CODEC_TYPE_ANY);
    assert_true(e->generation == 5);
    assert_int_equal(e->name_len, 10);
    assert_memory_equal(e->name, "old.metric", 10);
    assert_true(e->u.tombstone.time_us == 1763999999000000LL);

    sb = &m.subbatches[2];
    assert_int_equal(sb->flags, CODEC_SB_FORWARDED | CODEC_SB_FROM_INGEST);
    memset(key, 0, sizeof(key));
    assert_memory_equal(sb->batch_key, key, CODEC_KEY_SIZE);
    assert_memory_equal(sb->origin, "agg-3", 5);
    assert_true(sb->map_version == UINT64_MAX);
    assert_int_equal(sb->hop_count, CODEC_HOP_MAX);
    assert_true(sb->created_us == INT64_MIN);
    assert_int_equal(sb->entry_count, 2);

    e = &sb->entries[0];
    assert_int_equal(e->kind, CODEC_ENTRY_METRIC_STATE);
    assert_int_equal(e->slot, 3000);
    assert_int_equal(e->type, EVENT_RECENT);
    assert_true(e->generation == 9);
    assert_memory_equal(e->name, "web/checkout:p99", 16);
    assert_int_equal(e->u.metric_state.metric_len, sizeof(metric_blob));
    assert_memory_equal(e->u.metric_state.metric, metric_blob,
                        sizeof(metric_blob));

    e = &sb->entries[1];
    assert_int_equal(e->kind, CODEC_ENTRY_DEDUP_KEYS);
    assert_int_equal(e->slot, 3000);
    assert_int_equal(e->u.dedup.count, 3);
    for (int i = 0; i < 3; i++) {
        fill_key(key, (uint8_t)(0xc0 + i));
        assert_memory_equal(e->u.dedup.keys[i].key, key, CODEC_KEY_SIZE);
        assert_true(e->u.dedup.keys[i].created_us == i * 1000 - 1000);
    }

    codec_message_destroy(&m);
    assert_null(m.entries);
    assert_int_equal(m.subbatch_count, 0);
    codec_message_destroy(&m);          /* harmless twice */
    buf_writer_destroy(&w);
}

/* Decoding and re-encoding gives the same bytes, also after a prefix. */
static void
test_reencode_same_bytes(void **unused)
{
    void (*build[])(struct buf_writer *) = { build_message_a, build_message_b,
                                             build_message_c };

    (void)unused;
    for (size_t b = 0; b < sizeof(build) / sizeof(build[0]); b++) {
        struct buf_writer w, again;
        struct codec_message m;
        char err[ERRLEN];

        buf_writer_create(&w, 0);
        buf_writer_create(&again, 0);
        buf_put_bytes(&again, "prefix", 6);   /* encoder appends */
        build[b](&w);
        assert_int_equal(codec_decode(w.data, w.len, &m, err, sizeof(err)),
                         0);
        reencode(&m, &again);
        assert_int_equal(again.len, w.len + 6);
        assert_memory_equal(again.data, "prefix", 6);
        assert_memory_equal(again.data + 6, w.data, w.len);
        codec_message_destroy(&m);
        buf_writer_destroy(&again);
        buf_writer_destroy(&w);
    }
}

/* The worked example of schema/bus-batch.md, byte for byte. */
static void
test_worked_example(void **unused)
{
    static const char expected[] =
        "544c5942" "01" "00" "0000" "5f000000" "014f7774"   /* header */
        "01"                                                /* sub-batches */
        "000102030405060708090a0b0c0d0e0f"                  /* dedup key */
        "00" "04" "66652d31" "03" "00"           /* flags origin map hops */
        "80809296a896a206" "00" "02"          /* created reserved entries */
        "01" "23" "ad0e" "01" "01" "08" "6170692e68697473"    /* EVENT */
        "a0c2b096a896a206" "000000000000f03f" "05" "7765622d31"
        "03" "15" "ad0e" "00" "02" "08" "6170692e68697473"    /* TOMBSTONE */
        "80809296a896a206";
    struct buf_writer w;
    struct codec_encoder enc;
    struct codec_subbatch sb = make_subbatch(0x00, 0, "fe-1", 3, 0,
                                             1764000000000000LL);
    struct event ev = make_event(EVENT_COUNTER, "api.hits", 1.0, NULL,
                                 1764000000250000LL, "web-1");
    char hex[2 * sizeof(expected)];
    uint16_t slot = slotmap_slot("api.hits", 8);

    (void)unused;
    assert_int_equal(slot, 3757);
    buf_writer_create(&w, 0);
    codec_message_begin(&enc, &w);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_put_event(&enc, slot, 1, &ev), 0);
    assert_int_equal(codec_put_tombstone(&enc, slot, CODEC_TYPE_ANY, 2,
                                         "api.hits", 8, 1764000000000000LL),
                     0);
    assert_int_equal(codec_subbatch_end(&enc), 0);
    assert_int_equal(codec_message_end(&enc), 0);
    assert_int_equal(codec_message_size(&enc), w.len);
    for (size_t i = 0; i < w.len && 2 * i + 2 < sizeof(hex); i++)
        snprintf(hex + 2 * i, 3, "%02x", w.data[i]);
    assert_string_equal(hex, expected);
    buf_writer_destroy(&w);
}

/* ---- limits --------------------------------------------------------- */

static void
test_encoder_rejects_bad_fields(void **unused)
{
    struct buf_writer w;
    struct codec_encoder enc;
    struct codec_subbatch sb;
    struct event ev;
    struct codec_message m;
    char err[ERRLEN], name[EVENT_NAME_MAX + 2], big[EVENT_STRING_MAX + 2];
    struct codec_dedup_key key;
    size_t len_before;

    (void)unused;
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    memset(big, 's', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memset(&key, 0, sizeof(key));
    buf_writer_create(&w, 0);
    codec_message_begin(&enc, &w);

    ev = make_event(EVENT_COUNTER, "a", 1, NULL, 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "no open sub-batch");

    sb = make_subbatch(0, 0, "fe-1", 1, CODEC_HOP_MAX + 1, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), -1);
    assert_string_equal(enc.err, "hop count 5 exceeds 4");
    sb = make_subbatch(0, 0x20, "fe-1", 1, 0, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), -1);
    assert_string_equal(enc.err, "unknown flags 0x20");
    sb = make_subbatch(0, CODEC_SB_ENVELOPE, "fe-1", 1, 0, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), -1);
    assert_string_equal(enc.err, "envelope flag without a batch key");
    sb = make_subbatch(0, 0, "fe-1", 0, 0, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), -1);
    assert_string_equal(enc.err, "map version 0");
    sb = make_subbatch(0, 0, "", 1, 0, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), -1);
    assert_string_equal(enc.err, "origin length 0 out of range 1..64");
    sb = make_subbatch(0, 0, name + EVENT_NAME_MAX + 1 - 65, 1, 0, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), -1);
    assert_string_equal(enc.err, "origin length 65 out of range 1..64");
    sb = make_subbatch(0, 0, "fe 1", 1, 0, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), -1);
    assert_string_equal(enc.err, "bad origin character 0x20");
    assert_int_equal(codec_message_size(&enc), CODEC_HEADER_SIZE);

    sb = make_subbatch(0, 0, name + EVENT_NAME_MAX + 1 - 64, 1, 0, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), -1);
    assert_string_equal(enc.err, "a sub-batch is already open");
    len_before = w.len;

    ev = make_event(EVENT_COUNTER, name, 1, NULL, 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "name length 201 out of range 1..200");
    ev = make_event(EVENT_COUNTER, "", 1, NULL, 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "name length 0 out of range 1..200");
    ev = make_event(EVENT_COUNTER, "a b", 1, NULL, 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "bad name character 0x20");
    ev = make_event(EVENT_COUNTER, "a", 1, NULL, 0, "");
    assert_int_equal(codec_put_event(&enc, SLOTMAP_SLOTS, 1, &ev), -1);
    assert_string_equal(enc.err, "slot 4096 out of range");
    ev.type = (enum event_type)6;
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "type 6 out of range");
    ev = make_event(EVENT_COUNTER, "a", NAN, NULL, 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "value not finite");
    ev = make_event(EVENT_COUNTER, "a", -INFINITY, NULL, 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "value not finite");
    ev = make_event(EVENT_COUNTER, "a", 2e100, NULL, 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "value 2e+100 out of range");
    ev = make_event(EVENT_UNIQUE, "a", 0, big, 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "string length 1025 out of range 1..1024");
    ev = make_event(EVENT_UNIQUE, "a", 0, "", 0, "");
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "string length 0 out of range 1..1024");
    ev = make_event(EVENT_COUNTER, "a", 1, NULL, 0, name);
    assert_int_equal(codec_put_event(&enc, 1, 1, &ev), -1);
    assert_string_equal(enc.err, "source length 201 out of range 0..200");
    assert_int_equal(codec_put_partial(&enc, 1, EVENT_COUNTER, 1, "a", 1, 15,
                                       15000000, 15000000, 1, "s", 1), -1);
    assert_string_equal(enc.err, "bucket start 15 not a multiple of 10");
    assert_int_equal(codec_put_partial(&enc, 1, EVENT_COUNTER, 1, "a", 1, -20,
                                       -20000000, -20000000, 0, "s", 1), -1);
    assert_string_equal(enc.err, "event count 0");
    assert_int_equal(codec_put_partial(&enc, 1, EVENT_COUNTER, 1, "a", 1, 20,
                                       19999999, 20000000, 1, "s", 1), -1);
    assert_string_equal(enc.err, "event times outside the granule");
    assert_int_equal(codec_put_partial(&enc, 1, EVENT_COUNTER, 1, "a", 1, 20,
                                       20000000, 30000000, 1, "s", 1), -1);
    assert_string_equal(enc.err, "event times outside the granule");
    assert_int_equal(codec_put_partial(&enc, 1, EVENT_COUNTER, 1, "a", 1, 20,
                                       25000000, 21000000, 1, "s", 1), -1);
    assert_string_equal(enc.err, "event times outside the granule");
    assert_int_equal(codec_put_partial(&enc, 1, EVENT_COUNTER, 1, "a", 1,
                                       INT64_MAX / 10 * 10, 0, 0, 1, "s", 1),
                     -1);
    assert_string_equal(enc.err, "bucket start out of range");
    assert_int_equal(codec_put_partial(&enc, 1, EVENT_COUNTER, 1, "a", 1, -20,
                                       -20000000, -20000000, 1, "s", 0), -1);
    assert_string_equal(enc.err, "state length 0 out of range 1..1048576");
    assert_int_equal(codec_put_partial(&enc, 1, EVENT_COUNTER, 1, "a", 1, -20,
                                       -20000000, -20000000, 1, "s",
                                       CODEC_STATE_MAX + 1), -1);
    assert_string_equal(enc.err,
                        "state length 1048577 out of range 1..1048576");
    assert_int_equal(codec_put_tombstone(&enc, 1, 6, 1, "a", 1, 0), -1);
    assert_string_equal(enc.err, "type 6 out of range");
    assert_int_equal(codec_put_metric_state(&enc, 1, CODEC_TYPE_ANY, 1, "a",
                                            1, "m", 1), -1);
    assert_string_equal(enc.err, "type 0 out of range");
    assert_int_equal(codec_put_metric_state(&enc, 1, EVENT_GAUGE, 1, "a", 1,
                                            "m", CODEC_METRIC_MAX + 1), -1);
    assert_string_equal(enc.err,
                        "metric length 16777217 out of range 1..16777216");
    assert_int_equal(codec_put_dedup_keys(&enc, 1, &key,
                                          CODEC_DEDUP_KEYS_MAX + 1), -1);
    assert_string_equal(enc.err, "key count 1048577 out of range 0..1048576");
    assert_int_equal(codec_put_map(&enc, "x", 0), -1);
    assert_string_equal(enc.err, "map length 0 out of range 1..1048576");
    assert_int_equal(codec_put_dedup_keys(&enc, 9999, &key, 1), -1);
    assert_string_equal(enc.err, "slot 9999 out of range");
    /* Nothing was written by the failures. */
    assert_int_equal(w.len, len_before);
    assert_int_equal(codec_message_end(&enc), -1);
    assert_string_equal(enc.err, "a sub-batch is still open");
    assert_int_equal(w.len, 0);

    /* An empty sub-batch is removed; a message needs one sub-batch. */
    codec_message_begin(&enc, &w);
    sb = make_subbatch(0, 0, "fe-1", 1, 0, 0);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_subbatch_end(&enc), -1);
    assert_string_equal(enc.err, "empty sub-batch removed");
    assert_int_equal(codec_subbatch_end(&enc), -1);
    assert_string_equal(enc.err, "no open sub-batch");
    assert_int_equal(w.len, CODEC_HEADER_SIZE);
    assert_int_equal(codec_message_end(&enc), -1);
    assert_string_equal(enc.err, "message has no sub-batch");
    assert_int_equal(w.len, 0);

    /* After a rejected entry the message goes on and decodes. */
    codec_message_begin(&enc, &w);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_put_tombstone(&enc, 1, 9, 1, "a", 1, 0), -1);
    assert_int_equal(codec_put_tombstone(&enc, 1, 1, 1, "a", 1, 0), 0);
    assert_int_equal(codec_subbatch_end(&enc), 0);
    assert_int_equal(codec_message_end(&enc), 0);
    assert_int_equal(codec_decode(w.data, w.len, &m, err, sizeof(err)), 0);
    assert_int_equal(m.entry_count, 1);
    codec_message_destroy(&m);
    buf_writer_destroy(&w);
}

/* The encoder stops at CODEC_ENTRY_MAX entries; the decoder takes exactly
 * that many. */
/* A slot move's pieces: a HANDOFF sub-batch with a metric state and an
 * empty DEDUP_KEYS entry (the slot had no batch keys), and a MAP entry. */
static void
test_handoff_and_map(void **unused)
{
    static const char map_text[] = "tally-slotmap 1\nversion 2\n"
                                   "instances 1\n0-4095 0\n";
    struct buf_writer w;
    struct codec_encoder enc;
    struct codec_subbatch sb = make_subbatch(0x31, CODEC_SB_HANDOFF |
                                             CODEC_SB_FORWARDED, "agg-0", 2,
                                             1, 5);
    struct codec_message msg;
    char err[CODEC_ERR_MAX];

    (void)unused;
    buf_writer_create(&w, 256);
    codec_message_begin(&enc, &w);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_put_metric_state(&enc, 7, EVENT_COUNTER, 3, "m",
                                            1, "blob", 4), 0);
    assert_int_equal(codec_put_dedup_keys(&enc, 7, NULL, 0), 0);
    assert_int_equal(codec_subbatch_end(&enc), 0);
    sb = make_subbatch(0x32, 0, "fe-1", 2, 0, 6);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_put_map(&enc, map_text, strlen(map_text)), 0);
    assert_int_equal(codec_subbatch_end(&enc), 0);
    assert_int_equal(codec_message_end(&enc), 0);
    assert_int_equal(codec_decode(w.data, w.len, &msg, err, sizeof(err)), 0);
    assert_int_equal(msg.subbatch_count, 2);
    assert_int_equal(msg.subbatches[0].flags,
                     CODEC_SB_HANDOFF | CODEC_SB_FORWARDED);
    assert_int_equal(msg.subbatches[0].entry_count, 2);
    assert_int_equal(msg.subbatches[0].entries[0].kind,
                     CODEC_ENTRY_METRIC_STATE);
    assert_int_equal(msg.subbatches[0].entries[1].kind,
                     CODEC_ENTRY_DEDUP_KEYS);
    assert_int_equal(msg.subbatches[0].entries[1].slot, 7);
    assert_int_equal(msg.subbatches[0].entries[1].u.dedup.count, 0);
    assert_int_equal(msg.subbatches[1].entries[0].kind, CODEC_ENTRY_MAP);
    assert_int_equal(msg.subbatches[1].entries[0].u.map.len,
                     strlen(map_text));
    assert_memory_equal(msg.subbatches[1].entries[0].u.map.text, map_text,
                        strlen(map_text));
    codec_message_destroy(&msg);
    buf_writer_destroy(&w);
}

static void
test_entry_limit(void **unused)
{
    struct buf_writer w;
    struct codec_encoder enc;
    struct codec_subbatch sb = make_subbatch(0, 0, "fe-1", 1, 0, 0);
    struct codec_message m;
    char err[ERRLEN];

    (void)unused;
    buf_writer_create(&w, 16u * 1024u * 1024u);
    codec_message_begin(&enc, &w);
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    for (uint32_t i = 0; i < CODEC_ENTRY_MAX; i++)
        assert_int_equal(codec_put_tombstone(&enc, (uint16_t)(i % 4096), 1,
                                             1, "m", 1, i), 0);
    assert_int_equal(codec_put_tombstone(&enc, 0, 1, 1, "m", 1, 0), -1);
    assert_string_equal(enc.err, "sub-batch already holds 1048576 entries");
    assert_int_equal(codec_subbatch_end(&enc), 0);
    sb.dedup_key[0] = 1;
    assert_int_equal(codec_subbatch_begin(&enc, &sb), 0);
    assert_int_equal(codec_put_tombstone(&enc, 0, 1, 1, "m", 1, 0), -1);
    assert_string_equal(enc.err, "message already holds 1048576 entries");
    assert_int_equal(codec_subbatch_end(&enc), -1);
    assert_int_equal(codec_message_end(&enc), 0);
    assert_int_equal(codec_decode(w.data, w.len, &m, err, sizeof(err)), 0);
    assert_int_equal(m.entry_count, CODEC_ENTRY_MAX);
    assert_true(m.entries[CODEC_ENTRY_MAX - 1].u.tombstone.time_us
                == CODEC_ENTRY_MAX - 1);
    codec_message_destroy(&m);
    buf_writer_destroy(&w);
}

static void
test_decoder_limits(void **unused)
{
    struct buf_writer body, p;
    char name[EVENT_NAME_MAX + 1];

    (void)unused;
    memset(name, 'a', sizeof(name));
    buf_writer_create(&body, 0);
    buf_writer_create(&p, 0);

    /* Hop count above the maximum. */
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, CODEC_HOP_MAX + 1, 0, 1);
    raw_tombstone(&body, 1, 1, "m");
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch 0: hop count 5 exceeds 4");

    /* Too many entries for the format, and for the bytes. */
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, CODEC_ENTRY_MAX + 1);
    raw_tombstone(&body, 1, 1, "m");
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch 0: entry count 1048577 out of range "
                        "1..1048576");
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1000);
    raw_tombstone(&body, 1, 1, "m");
    raw_tombstone(&body, 2, 1, "m");
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch 0: entry count 1000 exceeds what 18 bytes "
                        "can hold");
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 0);
    buf_put_bytes(&body, "0123456789", 10);
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch 0: entry count 0 out of range 1..1048576");

    /* Sub-batch counts. */
    buf_writer_reset(&body);
    buf_put_varint(&body, 0);
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch count 0 out of range 1..65536");
    buf_writer_reset(&body);
    buf_put_varint(&body, CODEC_SUBBATCH_MAX + 1);
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch count 65537 out of range 1..65536");
    buf_writer_reset(&body);
    buf_put_varint(&body, 2);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    raw_tombstone(&body, 1, 1, "m");
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch count 2 exceeds what 37 bytes can hold");
    buf_writer_reset(&body);
    assert_string_equal(raw_decode_error(&body),
                        "truncated or malformed sub-batch count");

    /* Oversized name and unique string, and an oversized source. */
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_u8(&p, 1);
    buf_put_varint(&p, 1);
    buf_put_string(&p, name, sizeof(name));
    buf_put_svarint(&p, 0);
    raw_entry(&body, CODEC_ENTRY_TOMBSTONE, &p);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: name length 201 out of range "
                        "1..200");
    buf_writer_reset(&body);
    buf_writer_reset(&p);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_u8(&p, EVENT_UNIQUE);
    buf_put_varint(&p, 1);
    buf_put_string(&p, "u", 1);
    buf_put_svarint(&p, 0);
    buf_put_varint(&p, EVENT_STRING_MAX + 1);
    for (int i = 0; i <= EVENT_STRING_MAX; i++)
        buf_put_u8(&p, 'x');
    buf_put_string(&p, "", 0);
    raw_entry(&body, CODEC_ENTRY_EVENT, &p);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: string length 1025 out of "
                        "range 1..1024");
    buf_writer_reset(&body);
    buf_writer_reset(&p);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_u8(&p, EVENT_COUNTER);
    buf_put_varint(&p, 1);
    buf_put_string(&p, "u", 1);
    buf_put_svarint(&p, 0);
    buf_put_double(&p, 1);
    buf_put_string(&p, name, sizeof(name));
    raw_entry(&body, CODEC_ENTRY_EVENT, &p);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: source length 201 out of "
                        "range 0..200");

    /* A dedup key count larger than the payload could hold. */
    buf_writer_reset(&body);
    buf_writer_reset(&p);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_varint(&p, 3);
    for (int i = 0; i < 2 * CODEC_KEY_SIZE + 2; i++)
        buf_put_u8(&p, 0);
    raw_entry(&body, CODEC_ENTRY_DEDUP_KEYS, &p);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: key count 3 exceeds what 34 "
                        "bytes can hold");

    buf_writer_destroy(&p);
    buf_writer_destroy(&body);
}

/* ---- corruption ----------------------------------------------------- */

static void
test_every_truncation_fails(void **unused)
{
    void (*build[])(struct buf_writer *) = { build_message_a, build_message_b,
                                             build_message_c };

    (void)unused;
    for (size_t b = 0; b < sizeof(build) / sizeof(build[0]); b++) {
        struct buf_writer w;

        buf_writer_create(&w, 0);
        build[b](&w);
        for (size_t n = 0; n < w.len; n++) {
            uint8_t *copy = malloc(n > 0 ? n : 1);
            char err[ERRLEN];
            struct codec_message m;

            memcpy(copy, w.data, n);
            assert_int_equal(codec_decode(copy, n, &m, err, sizeof(err)), -1);
            /* With length and CRC patched, the structure itself must
             * notice the missing bytes. */
            if (n >= CODEC_HEADER_SIZE) {
                fix_header(copy, n);
                assert_int_equal(codec_decode(copy, n, &m, err, sizeof(err)),
                                 -1);
                assert_null(strstr(err, "CRC"));
            }
            free(copy);
        }
        buf_writer_destroy(&w);
    }
}

static void
test_random_flips(void **unused)
{
    void (*build[])(struct buf_writer *) = { build_message_a, build_message_b,
                                             build_message_c };
    struct testrand r;
    size_t ok = 0, failed = 0;

    (void)unused;
    testrand_seed(&r, 42);
    for (size_t b = 0; b < sizeof(build) / sizeof(build[0]); b++) {
        struct buf_writer w;
        uint8_t *copy;

        buf_writer_create(&w, 0);
        build[b](&w);
        copy = malloc(w.len);
        for (int round = 0; round < testrand_scale(FLIP_ROUNDS); round++) {
            size_t flips = 1 + (size_t)testrand_below(&r, 3);
            struct codec_message m, m2;
            char err[ERRLEN];

            memcpy(copy, w.data, w.len);
            for (size_t f = 0; f < flips; f++) {
                size_t at = CODEC_HEADER_SIZE
                            + (size_t)testrand_below(&r, w.len
                                                     - CODEC_HEADER_SIZE);

                copy[at] ^= (uint8_t)(1 + testrand_below(&r, 255));
            }
            if (memcmp(copy, w.data, w.len) != 0) {
                /* A changed body with the old CRC is always caught. */
                assert_int_equal(codec_decode(copy, w.len, &m, err,
                                              sizeof(err)), -1);
                assert_string_equal(err, "bad CRC");
            }
            fix_header(copy, w.len);
            if (codec_decode(copy, w.len, &m, err, sizeof(err)) != 0) {
                assert_true(strlen(err) > 0);
                failed++;
                continue;
            }
            /* Still valid: it must re-encode to a message that decodes to
             * the same values. */
            {
                struct buf_writer again;

                buf_writer_create(&again, 0);
                reencode(&m, &again);
                assert_int_equal(codec_decode(again.data, again.len, &m2,
                                              err, sizeof(err)), 0);
                assert_true(messages_equal(&m, &m2));
                codec_message_destroy(&m2);
                buf_writer_destroy(&again);
            }
            codec_message_destroy(&m);
            ok++;
        }
        free(copy);
        buf_writer_destroy(&w);
    }
    /* Both outcomes happen, so both paths were exercised. */
    assert_true(ok > 100);
    assert_true(failed > 1000);
    print_message("random flips: %zu still valid, %zu rejected\n", ok, failed);
}

static void
test_specific_errors(void **unused)
{
    struct buf_writer w, body, p;
    uint8_t *copy;
    uint8_t *huge;

    (void)unused;
    buf_writer_create(&w, 0);
    build_message_b(&w);
    copy = malloc(w.len + 1);

    assert_string_equal(decode_error(w.data, 10), "truncated header");
    memcpy(copy, w.data, w.len);
    copy[0] = 'X';
    assert_string_equal(decode_error(copy, w.len), "bad magic");
    memcpy(copy, w.data, w.len);
    copy[4] = 2;
    assert_string_equal(decode_error(copy, w.len), "unsupported version 2");
    memcpy(copy, w.data, w.len);
    copy[5] = 1;
    assert_string_equal(decode_error(copy, w.len),
                        "header flags 0x01 must be 0");
    memcpy(copy, w.data, w.len);
    copy[7] = 1;
    assert_string_equal(decode_error(copy, w.len),
                        "header reserved 0x0100 must be 0");
    memcpy(copy, w.data, w.len);
    copy[w.len] = 0;
    {
        char expect[ERRLEN];

        snprintf(expect, sizeof(expect), "body length %zu does not match the "
                 "%zu bytes after the header", w.len - CODEC_HEADER_SIZE,
                 w.len + 1 - CODEC_HEADER_SIZE);
        assert_string_equal(decode_error(copy, w.len + 1), expect);
    }
    memcpy(copy, w.data, w.len);
    copy[12] ^= 1;
    assert_string_equal(decode_error(copy, w.len), "bad CRC");
    memcpy(copy, w.data, w.len);
    copy[w.len] = 0;
    fix_header(copy, w.len + 1);
    assert_string_equal(decode_error(copy, w.len + 1),
                        "1 trailing bytes after the last sub-batch");
    free(copy);

    huge = calloc(1, (size_t)CODEC_MESSAGE_MAX + 1);
    memcpy(huge, w.data, CODEC_HEADER_SIZE);
    assert_string_equal(decode_error(huge, (size_t)CODEC_MESSAGE_MAX + 1),
                        "message of 67108865 bytes exceeds 67108864");
    free(huge);
    buf_writer_destroy(&w);

    /* Entry 3 of 4 with a slot out of range. */
    buf_writer_create(&body, 0);
    buf_writer_create(&p, 0);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 4);
    for (int i = 0; i < 3; i++)
        raw_tombstone(&body, (uint16_t)i, 1, "m");
    raw_tombstone(&body, 5000, 1, "m");
    assert_string_equal(raw_decode_error(&body),
                        "entry 3 of sub-batch 0: slot 5000 out of range");

    /* Unknown kind in the second sub-batch. */
    buf_writer_reset(&body);
    buf_put_varint(&body, 2);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    raw_tombstone(&body, 1, 1, "m");
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_bytes(&p, "0123456789", 10);
    raw_entry(&body, 9, &p);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 1: unknown kind 9");

    /* Sub-batch header fields. */
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0x20, 1, 0, 0, 1);
    raw_tombstone(&body, 1, 1, "m");
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch 0: unknown flags 0x20");
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, CODEC_SB_ENVELOPE, 1, 0, 0, 1);
    raw_tombstone(&body, 1, 1, "m");
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch 0: envelope flag without a batch key");
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 1, 1);
    raw_tombstone(&body, 1, 1, "m");
    assert_string_equal(raw_decode_error(&body),
                        "sub-batch 0: reserved field 1 must be 0");
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 0, 0, 0, 1);
    raw_tombstone(&body, 1, 1, "m");
    assert_string_equal(raw_decode_error(&body), "sub-batch 0: map version 0");

    /* Entry payload problems. */
    buf_writer_reset(&body);
    buf_writer_reset(&p);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_u8(&p, 1);
    buf_put_varint(&p, 1);
    buf_put_string(&p, "m", 1);
    buf_put_svarint(&p, 5);
    buf_put_u16(&p, 0xffff);            /* two bytes too many */
    raw_entry(&body, CODEC_ENTRY_TOMBSTONE, &p);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: 2 trailing bytes in payload");

    buf_writer_reset(&body);
    buf_writer_reset(&p);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_u8(&p, EVENT_GAUGE);
    buf_put_varint(&p, 1);
    buf_put_string(&p, "m", 1);
    buf_put_svarint(&p, 5);
    buf_put_double(&p, NAN);
    buf_put_string(&p, "", 0);
    raw_entry(&body, CODEC_ENTRY_EVENT, &p);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: value not finite");

    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    raw_tombstone(&body, 1, 1, "a b");
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: bad name character 0x20");
    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    raw_tombstone(&body, 1, 6, "m");
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: type 6 out of range");

    buf_writer_reset(&body);
    buf_writer_reset(&p);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_u8(&p, EVENT_COUNTER);
    buf_put_varint(&p, 1);
    buf_put_string(&p, "m", 1);
    buf_put_svarint(&p, 15);
    buf_put_varint(&p, 1);
    buf_put_string(&p, "s", 1);
    raw_entry(&body, CODEC_ENTRY_PARTIAL, &p);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: bucket start 15 not a "
                        "multiple of 10");

    buf_writer_reset(&body);
    buf_writer_reset(&p);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u16(&p, 1);
    buf_put_u8(&p, 1);
    raw_entry(&body, CODEC_ENTRY_TOMBSTONE, &p);
    buf_put_bytes(&body, "0123456789", 10);   /* room for the count check */
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: truncated or malformed "
                        "generation");

    buf_writer_reset(&body);
    buf_put_varint(&body, 1);
    raw_subbatch(&body, 0, 1, 0, 0, 1);
    buf_put_u8(&body, CODEC_ENTRY_TOMBSTONE);
    buf_put_varint(&body, 50);
    buf_put_bytes(&body, "0123456789ab", 12);
    assert_string_equal(raw_decode_error(&body),
                        "entry 0 of sub-batch 0: payload length 50 exceeds 12 "
                        "remaining bytes");

    buf_writer_destroy(&p);
    buf_writer_destroy(&body);
}

/* ---- cache header --------------------------------------------------- */

static void
test_cache_header(void **unused)
{
    static const uint8_t expected[CODEC_CACHE_HEADER_SIZE] = {
        'T', 'C', 1, 2, 3, 0, 0, 0,
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
        0x2a, 0, 0, 0, 0, 0, 0, 0,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    };
    struct codec_cache_header h = { .version = 1,
                                    .kind = CODEC_CACHE_CLOSED_BUCKET,
                                    .type = EVENT_PERCENTILE,
                                    .generation = 0x0102030405060708ULL,
                                    .map_version = 42,
                                    .sequence = UINT64_MAX };
    struct codec_cache_header d;
    struct buf_writer w;
    struct buf_reader r;
    uint8_t bad[CODEC_CACHE_HEADER_SIZE + 1];
    char err[ERRLEN];

    (void)unused;
    buf_writer_create(&w, 0);
    assert_int_equal(codec_cache_header_encode(&h, &w), 0);
    buf_put_u8(&w, 0x99);               /* the value body follows */
    assert_int_equal(w.len, CODEC_CACHE_HEADER_SIZE + 1);
    assert_memory_equal(w.data, expected, sizeof(expected));
    buf_reader_init(&r, w.data, w.len);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), 0);
    assert_int_equal(r.pos, CODEC_CACHE_HEADER_SIZE);
    assert_int_equal(d.version, 1);
    assert_int_equal(d.kind, CODEC_CACHE_CLOSED_BUCKET);
    assert_int_equal(d.type, EVENT_PERCENTILE);
    assert_true(d.generation == 0x0102030405060708ULL);
    assert_true(d.map_version == 42);
    assert_true(d.sequence == UINT64_MAX);

    /* Version 0 means the newest; both versions read back; 3 is unknown. */
    h.version = 0;
    buf_writer_reset(&w);
    assert_int_equal(codec_cache_header_encode(&h, &w), 0);
    assert_int_equal(w.data[2], CODEC_CACHE_VERSION);
    assert_int_equal(CODEC_CACHE_VERSION, 2);
    buf_reader_init(&r, w.data, w.len);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), 0);
    assert_int_equal(d.version, 2);
    h.version = 3;
    buf_writer_reset(&w);
    assert_int_equal(codec_cache_header_encode(&h, &w), -1);
    assert_int_equal(w.len, 0);
    h.version = 1;

    /* Tombstones may carry type 0; other kinds may not. */
    h.kind = CODEC_CACHE_TOMBSTONE;
    h.type = CODEC_TYPE_ANY;
    buf_writer_reset(&w);
    assert_int_equal(codec_cache_header_encode(&h, &w), 0);
    h.kind = CODEC_CACHE_OPEN_BUCKETS;
    assert_int_equal(codec_cache_header_encode(&h, &w), -1);
    h.type = 6;
    assert_int_equal(codec_cache_header_encode(&h, &w), -1);
    h.type = 1;
    h.kind = 4;
    assert_int_equal(codec_cache_header_encode(&h, &w), -1);
    assert_int_equal(w.len, CODEC_CACHE_HEADER_SIZE);

    memcpy(bad, expected, sizeof(expected));
    buf_reader_init(&r, bad, CODEC_CACHE_HEADER_SIZE - 1);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "truncated cache header");
    bad[1] = 'X';
    buf_reader_init(&r, bad, CODEC_CACHE_HEADER_SIZE);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "bad cache magic");
    assert_int_equal(r.pos, 0);
    memcpy(bad, expected, sizeof(expected));
    bad[2] = 3;
    buf_reader_init(&r, bad, CODEC_CACHE_HEADER_SIZE);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "unsupported cache version 3");
    bad[2] = 0;
    buf_reader_init(&r, bad, CODEC_CACHE_HEADER_SIZE);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "unsupported cache version 0");
    memcpy(bad, expected, sizeof(expected));
    bad[3] = 0;
    buf_reader_init(&r, bad, CODEC_CACHE_HEADER_SIZE);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "cache kind 0 out of range");
    memcpy(bad, expected, sizeof(expected));
    bad[4] = 0;
    buf_reader_init(&r, bad, CODEC_CACHE_HEADER_SIZE);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "cache type 0 out of range");
    memcpy(bad, expected, sizeof(expected));
    bad[7] = 1;
    buf_reader_init(&r, bad, CODEC_CACHE_HEADER_SIZE);
    assert_int_equal(codec_cache_header_decode(&r, &d, err, sizeof(err)), -1);
    assert_string_equal(err, "cache reserved bytes must be 0");
    buf_writer_destroy(&w);
}

static void
test_cache_forward_only(void **unused)
{
    static const struct {
        uint64_t cur_gen, cur_seq, next_gen, next_seq;
        int may;
    } rows[] = {
        { 1, 5, 1, 6, 1 },    /* same generation, newer sequence */
        { 1, 5, 1, 5, 0 },    /* same write again */
        { 1, 5, 1, 4, 0 },    /* older sequence */
        { 1, 5, 2, 0, 1 },    /* newer generation, sequence restarts */
        { 2, 0, 1, 99, 0 },   /* older generation, whatever the sequence */
        { 0, 0, 0, 1, 1 },
        { UINT64_MAX, 1, UINT64_MAX, UINT64_MAX, 1 },
    };
    struct codec_cache_header cur = { .kind = 1, .type = 1 };
    struct codec_cache_header next = { .kind = 1, .type = 1 };

    (void)unused;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        cur.generation = rows[i].cur_gen;
        cur.sequence = rows[i].cur_seq;
        next.generation = rows[i].next_gen;
        next.sequence = rows[i].next_seq;
        /* Map versions take no part. */
        cur.map_version = 100;
        next.map_version = 1;
        assert_int_equal(codec_cache_header_may_replace(&cur, &next),
                         rows[i].may);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vector),
        cmocka_unit_test(test_round_trip_every_kind),
        cmocka_unit_test(test_reencode_same_bytes),
        cmocka_unit_test(test_worked_example),
        cmocka_unit_test(test_encoder_rejects_bad_fields),
        cmocka_unit_test(test_handoff_and_map),
        cmocka_unit_test(test_entry_limit),
        cmocka_unit_test(test_decoder_limits),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_random_flips),
        cmocka_unit_test(test_specific_errors),
        cmocka_unit_test(test_cache_header),
        cmocka_unit_test(test_cache_forward_only),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
