/*
 * codec: encoder and zero-copy decoder of bus messages, and the cache value
 * header. The layouts are in schema/bus-batch.md and schema/cache-value.md.
 *
 *   encode:  header placeholder | sub-batch ... | patch count, length, CRC
 *            Counts and entry payload lengths are LEB128 varints written in
 *            front of what they count once it is known (a memmove of the
 *            bytes after them), so the encoder streams into one buffer.
 *
 *   decode:  header checks -> CRC -> body reader
 *              -> per sub-batch: header fields, entry count
 *                   -> per entry: kind, payload length, then a reader
 *                      limited to the payload, which must be consumed
 *                      exactly
 *            Every count is capped by what the remaining bytes could hold
 *            (CODEC_*_MIN_SIZE), so a small input cannot make a large
 *            allocation.
 */
#include "codec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "errmsg.h"
#include "slotmap.h"
#include "xalloc.h"

/* Longest LEB128 varint (64 bits). */
#define CODEC_VARINT_MAX 10
/* Room the encoder keeps free for the two counts written at the end. */
#define CODEC_END_MARGIN (2 * CODEC_VARINT_MAX)

/* Header field offsets. */
#define CODEC_OFF_VERSION 4
#define CODEC_OFF_FLAGS 5
#define CODEC_OFF_RESERVED 6
#define CODEC_OFF_BODY_LEN 8
#define CODEC_OFF_CRC 12

/* Smallest encodings, used to cap counts by the bytes left:
 * a MAP payload of one byte is length 1 + 1 (an empty DEDUP_KEYS is slot
 * 2 + count 1), an entry adds kind 1 + payload length 1, a sub-batch adds
 * key 16 + flags 1 + origin 1+1 + map version 1 + hops 1 + created 1 +
 * reserved 1 + entry count 1, and a dedup key is 16 bytes + created 1. */
#define CODEC_PAYLOAD_MIN_SIZE 2
#define CODEC_ENTRY_MIN_SIZE (2 + CODEC_PAYLOAD_MIN_SIZE)
#define CODEC_SUBBATCH_MIN_SIZE (CODEC_KEY_SIZE + 8 + CODEC_ENTRY_MIN_SIZE)
#define CODEC_DEDUP_KEY_MIN_SIZE (CODEC_KEY_SIZE + 1)

#define CODEC_REASON_MAX 128

/* ---- shared helpers ------------------------------------------------- */

/* The event name rule of event.h ([A-Za-z0-9._:/-], 1..EVENT_NAME_MAX),
 * with a precise reason. Returns 0, or -1 with a reason. */
static int
codec_check_name(const char *name, size_t len, char *why, size_t whylen)
{
    if (len < 1 || len > EVENT_NAME_MAX) {
        errmsg_say(why, whylen, "name length %zu out of range 1..%d", len,
                  EVENT_NAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];

        if (!event_name_char_valid(c)) {
            errmsg_say(why, whylen, "bad name character 0x%02x", c);
            return -1;
        }
    }
    return 0;
}

/* Origins are 1..CODEC_ORIGIN_MAX bytes of printable ASCII without space,
 * so they can go into a log line as they are. */
static int
codec_check_origin(const char *origin, size_t len, char *why, size_t whylen)
{
    if (len < 1 || len > CODEC_ORIGIN_MAX) {
        errmsg_say(why, whylen, "origin length %zu out of range 1..%d", len,
                  CODEC_ORIGIN_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)origin[i];

        if (c < 0x21 || c > 0x7e) {
            errmsg_say(why, whylen, "bad origin character 0x%02x", c);
            return -1;
        }
    }
    return 0;
}

static int
codec_check_slot(uint64_t slot, char *why, size_t whylen)
{
    if (slot >= SLOTMAP_SLOTS) {
        errmsg_say(why, whylen, "slot %llu out of range",
                  (unsigned long long)slot);
        return -1;
    }
    return 0;
}

/* Event types 1..5; ALLOW_ANY also admits CODEC_TYPE_ANY. */
static int
codec_check_type(unsigned type, int allow_any, char *why, size_t whylen)
{
    if ((allow_any && type == CODEC_TYPE_ANY)
        || (type >= EVENT_TYPE_MIN && type <= EVENT_TYPE_MAX))
        return 0;
    errmsg_say(why, whylen, "type %u out of range", type);
    return -1;
}

static int
codec_check_value(double v, char *why, size_t whylen)
{
    if (!isfinite(v)) {
        errmsg_say(why, whylen, "value not finite");
        return -1;
    }
    if (fabs(v) > EVENT_VALUE_MAX) {
        errmsg_say(why, whylen, "value %g out of range", v);
        return -1;
    }
    return 0;
}

static int
codec_check_length(const char *what, size_t len, size_t min, size_t max,
                   char *why, size_t whylen)
{
    if (len < min || len > max) {
        errmsg_say(why, whylen, "%s length %zu out of range %zu..%zu", what,
                  len, min, max);
        return -1;
    }
    return 0;
}

/* ---- decoder helpers ------------------------------------------------ */

static int
codec_get_u8(struct buf_reader *r, const char *what, uint8_t *v, char *why,
             size_t whylen)
{
    if (buf_get_u8(r, v) != 0) {
        errmsg_say(why, whylen, "truncated %s", what);
        return -1;
    }
    return 0;
}

static int
codec_get_varint(struct buf_reader *r, const char *what, uint64_t *v,
                 char *why, size_t whylen)
{
    if (buf_get_varint(r, v) != 0) {
        errmsg_say(why, whylen, "truncated or malformed %s", what);
        return -1;
    }
    return 0;
}

static int
codec_get_svarint(struct buf_reader *r, const char *what, int64_t *v,
                  char *why, size_t whylen)
{
    if (buf_get_svarint(r, v) != 0) {
        errmsg_say(why, whylen, "truncated or malformed %s", what);
        return -1;
    }
    return 0;
}

static int
codec_get_bytes(struct buf_reader *r, const char *what, const uint8_t **p,
                size_t n, char *why, size_t whylen)
{
    if (buf_get_bytes(r, p, n) != 0) {
        errmsg_say(why, whylen, "truncated %s", what);
        return -1;
    }
    return 0;
}

/* A varint length in MIN..MAX, then that many bytes (borrowed). */
static int
codec_get_string(struct buf_reader *r, const char *what, size_t min,
                 size_t max, const uint8_t **p, size_t *n, char *why,
                 size_t whylen)
{
    uint64_t len;

    if (buf_get_varint(r, &len) != 0) {
        errmsg_say(why, whylen, "truncated or malformed %s length", what);
        return -1;
    }
    if (len < min || len > max) {
        errmsg_say(why, whylen, "%s length %llu out of range %zu..%zu", what,
                  (unsigned long long)len, min, max);
        return -1;
    }
    if (len > buf_remaining(r)) {
        errmsg_say(why, whylen, "truncated %s", what);
        return -1;
    }
    *n = (size_t)len;
    return codec_get_bytes(r, what, p, (size_t)len, why, whylen);
}

static int
codec_get_slot(struct buf_reader *r, uint16_t *slot, char *why, size_t whylen)
{
    if (buf_get_u16(r, slot) != 0) {
        errmsg_say(why, whylen, "truncated slot");
        return -1;
    }
    return codec_check_slot(*slot, why, whylen);
}

/* slot, type, generation and name: the prefix shared by every kind but
 * DEDUP_KEYS. */
static int
codec_get_metric_prefix(struct buf_reader *r, struct codec_entry *e,
                        int allow_any_type, char *why, size_t whylen)
{
    const uint8_t *name;

    if (codec_get_slot(r, &e->slot, why, whylen) != 0
        || codec_get_u8(r, "type", &e->type, why, whylen) != 0
        || codec_check_type(e->type, allow_any_type, why, whylen) != 0
        || codec_get_varint(r, "generation", &e->generation, why,
                            whylen) != 0
        || codec_get_string(r, "name", 1, EVENT_NAME_MAX, &name,
                            &e->name_len, why, whylen) != 0)
        return -1;
    e->name = (const char *)name;
    return codec_check_name(e->name, e->name_len, why, whylen);
}

static int
codec_decode_event(struct buf_reader *r, struct codec_entry *e, char *why,
                   size_t whylen)
{
    struct event *ev = &e->u.event;
    const uint8_t *p;

    if (codec_get_metric_prefix(r, e, 0, why, whylen) != 0
        || codec_get_svarint(r, "time", &ev->time_us, why, whylen) != 0)
        return -1;
    ev->type = (enum event_type)e->type;
    ev->name = e->name;
    ev->name_len = e->name_len;
    if (ev->type == EVENT_UNIQUE) {
        if (codec_get_string(r, "string", 1, EVENT_STRING_MAX, &p,
                             &ev->str_len, why, whylen) != 0)
            return -1;
        ev->str = (const char *)p;
        ev->value = 0;
        if (!event_string_valid(ev->str, ev->str_len)) {
            errmsg_say(why, whylen, "string is not valid UTF-8");
            return -1;
        }
    } else {
        if (buf_get_double(r, &ev->value) != 0) {
            errmsg_say(why, whylen, "truncated value");
            return -1;
        }
        if (codec_check_value(ev->value, why, whylen) != 0)
            return -1;
        ev->str = NULL;
        ev->str_len = 0;
    }
    if (codec_get_string(r, "source", 0, EVENT_SOURCE_MAX, &p,
                         &ev->source_len, why, whylen) != 0)
        return -1;
    ev->source = ev->source_len == 0 ? "" : (const char *)p;
    if (!event_source_valid(ev->source, ev->source_len)) {
        errmsg_say(why, whylen, "source is not UTF-8 without control "
                  "characters");
        return -1;
    }
    return 0;
}

static int
codec_decode_partial(struct buf_reader *r, struct codec_entry *e, char *why,
                     size_t whylen)
{
    uint64_t first, span;

    if (codec_get_metric_prefix(r, e, 0, why, whylen) != 0
        || codec_get_svarint(r, "bucket start", &e->u.partial.bucket_start_s,
                             why, whylen) != 0)
        return -1;
    if (e->u.partial.bucket_start_s % CODEC_BUCKET_GRANULE_S != 0) {
        errmsg_say(why, whylen, "bucket start %lld not a multiple of %d",
                  (long long)e->u.partial.bucket_start_s,
                  CODEC_BUCKET_GRANULE_S);
        return -1;
    }
    if (e->u.partial.bucket_start_s > INT64_MAX / CODEC_US_PER_S
                                      - CODEC_GRANULE_US
        || e->u.partial.bucket_start_s < INT64_MIN / CODEC_US_PER_S
                                         + CODEC_GRANULE_US) {
        errmsg_say(why, whylen, "bucket start out of range");
        return -1;
    }
    if (codec_get_varint(r, "first offset", &first, why, whylen) != 0
        || codec_get_varint(r, "time span", &span, why, whylen) != 0)
        return -1;
    if (first >= CODEC_GRANULE_US || span >= CODEC_GRANULE_US - first) {
        errmsg_say(why, whylen, "event times outside the granule");
        return -1;
    }
    e->u.partial.first_us = e->u.partial.bucket_start_s * CODEC_US_PER_S
                            + (int64_t)first;
    e->u.partial.last_us = e->u.partial.first_us + (int64_t)span;
    if (codec_get_varint(r, "event count", &e->u.partial.event_count, why,
                         whylen) != 0)
        return -1;
    if (e->u.partial.event_count == 0) {
        errmsg_say(why, whylen, "event count 0");
        return -1;
    }
    return codec_get_string(r, "state", 1, CODEC_STATE_MAX,
                            &e->u.partial.state, &e->u.partial.state_len,
                            why, whylen);
}

static int
codec_decode_tombstone(struct buf_reader *r, struct codec_entry *e, char *why,
                       size_t whylen)
{
    if (codec_get_metric_prefix(r, e, 1, why, whylen) != 0)
        return -1;
    return codec_get_svarint(r, "time", &e->u.tombstone.time_us, why, whylen);
}

static int
codec_decode_metric_state(struct buf_reader *r, struct codec_entry *e,
                          char *why, size_t whylen)
{
    if (codec_get_metric_prefix(r, e, 0, why, whylen) != 0)
        return -1;
    return codec_get_string(r, "metric", 1, CODEC_METRIC_MAX,
                            &e->u.metric_state.metric,
                            &e->u.metric_state.metric_len, why, whylen);
}

/* Allocates E->u.dedup.keys; on failure frees it again. */
static int
codec_decode_dedup_keys(struct buf_reader *r, struct codec_entry *e,
                        char *why, size_t whylen)
{
    uint64_t count;
    struct codec_dedup_key *keys;

    if (codec_get_slot(r, &e->slot, why, whylen) != 0
        || codec_get_varint(r, "key count", &count, why, whylen) != 0)
        return -1;
    if (count > CODEC_DEDUP_KEYS_MAX) {
        errmsg_say(why, whylen, "key count %llu out of range 0..%u",
                  (unsigned long long)count, CODEC_DEDUP_KEYS_MAX);
        return -1;
    }
    if (count > buf_remaining(r) / CODEC_DEDUP_KEY_MIN_SIZE) {
        errmsg_say(why, whylen, "key count %llu exceeds what %zu bytes can hold",
                  (unsigned long long)count, buf_remaining(r));
        return -1;
    }
    keys = xmalloc(((size_t)count + 1) * sizeof(*keys));
    for (size_t i = 0; i < (size_t)count; i++) {
        const uint8_t *k;

        if (buf_get_bytes(r, &k, CODEC_KEY_SIZE) != 0) {
            errmsg_say(why, whylen, "truncated key %zu", i);
            goto fail;
        }
        memcpy(keys[i].key, k, CODEC_KEY_SIZE);
        if (buf_get_svarint(r, &keys[i].created_us) != 0) {
            errmsg_say(why, whylen, "truncated or malformed created_us of key %zu",
                      i);
            goto fail;
        }
    }
    e->u.dedup.keys = keys;
    e->u.dedup.count = (size_t)count;
    return 0;

fail:
    free(keys);
    return -1;
}

/* One entry: kind, payload length, payload consumed exactly. */
static int
codec_decode_entry(struct buf_reader *r, struct codec_entry *e, char *why,
                   size_t whylen)
{
    uint8_t kind;
    uint64_t payload_len;
    const uint8_t *payload;
    struct buf_reader pr;
    int rc;

    if (codec_get_u8(r, "kind", &kind, why, whylen) != 0
        || codec_get_varint(r, "payload length", &payload_len, why,
                            whylen) != 0)
        return -1;
    if (kind < CODEC_ENTRY_EVENT || kind > CODEC_ENTRY_MAP) {
        errmsg_say(why, whylen, "unknown kind %u", kind);
        return -1;
    }
    if (payload_len > buf_remaining(r)) {
        errmsg_say(why, whylen, "payload length %llu exceeds %zu remaining "
                  "bytes", (unsigned long long)payload_len, buf_remaining(r));
        return -1;
    }
    (void)buf_get_bytes(r, &payload, (size_t)payload_len);
    buf_reader_init(&pr, payload, (size_t)payload_len);
    e->kind = (enum codec_entry_kind)kind;
    switch (e->kind) {
    case CODEC_ENTRY_EVENT:
        rc = codec_decode_event(&pr, e, why, whylen);
        break;
    case CODEC_ENTRY_PARTIAL:
        rc = codec_decode_partial(&pr, e, why, whylen);
        break;
    case CODEC_ENTRY_TOMBSTONE:
        rc = codec_decode_tombstone(&pr, e, why, whylen);
        break;
    case CODEC_ENTRY_METRIC_STATE:
        rc = codec_decode_metric_state(&pr, e, why, whylen);
        break;
    case CODEC_ENTRY_MAP:
        rc = codec_get_string(&pr, "map", 1, CODEC_MAP_MAX, &e->u.map.text,
                              &e->u.map.len, why, whylen);
        break;
    case CODEC_ENTRY_DEDUP_KEYS:
    default:
        rc = codec_decode_dedup_keys(&pr, e, why, whylen);
        break;
    }
    if (rc != 0)
        return -1;
    if (buf_remaining(&pr) != 0) {
        errmsg_say(why, whylen, "%zu trailing bytes in payload",
                  buf_remaining(&pr));
        if (e->kind == CODEC_ENTRY_DEDUP_KEYS) {
            free(e->u.dedup.keys);
            e->u.dedup.keys = NULL;
        }
        return -1;
    }
    return 0;
}

/* The header fields of one sub-batch and its entry count (checked against
 * CODEC_ENTRY_MAX and the bytes left). */
static int
codec_decode_subbatch_header(struct buf_reader *r, struct codec_subbatch *sb,
                             uint64_t *entry_count, char *why, size_t whylen)
{
    const uint8_t *p;
    uint64_t reserved;

    if (codec_get_bytes(r, "dedup key", &p, CODEC_KEY_SIZE, why, whylen) != 0)
        return -1;
    memcpy(sb->dedup_key, p, CODEC_KEY_SIZE);
    if (codec_get_u8(r, "flags", &sb->flags, why, whylen) != 0)
        return -1;
    if ((sb->flags & ~CODEC_SB_FLAGS_KNOWN) != 0) {
        errmsg_say(why, whylen, "unknown flags 0x%02x", sb->flags);
        return -1;
    }
    if ((sb->flags & CODEC_SB_ENVELOPE) != 0
        && (sb->flags & CODEC_SB_HAS_BATCH_KEY) == 0) {
        errmsg_say(why, whylen, "envelope flag without a batch key");
        return -1;
    }
    if ((sb->flags & CODEC_SB_HAS_BATCH_KEY) != 0) {
        if (codec_get_bytes(r, "batch key", &p, CODEC_KEY_SIZE, why,
                            whylen) != 0)
            return -1;
        memcpy(sb->batch_key, p, CODEC_KEY_SIZE);
    }
    if (codec_get_string(r, "origin", 1, CODEC_ORIGIN_MAX, &p,
                         &sb->origin_len, why, whylen) != 0)
        return -1;
    sb->origin = (const char *)p;
    if (codec_check_origin(sb->origin, sb->origin_len, why, whylen) != 0
        || codec_get_varint(r, "map version", &sb->map_version, why,
                            whylen) != 0)
        return -1;
    if (sb->map_version == 0) {
        errmsg_say(why, whylen, "map version 0");
        return -1;
    }
    if (codec_get_u8(r, "hop count", &sb->hop_count, why, whylen) != 0)
        return -1;
    if (sb->hop_count > CODEC_HOP_MAX) {
        errmsg_say(why, whylen, "hop count %u exceeds %d", sb->hop_count,
                  CODEC_HOP_MAX);
        return -1;
    }
    if (codec_get_svarint(r, "created_us", &sb->created_us, why, whylen) != 0
        || codec_get_varint(r, "reserved field", &reserved, why, whylen) != 0)
        return -1;
    if (reserved != 0) {
        errmsg_say(why, whylen, "reserved field %llu must be 0",
                  (unsigned long long)reserved);
        return -1;
    }
    if (codec_get_varint(r, "entry count", entry_count, why, whylen) != 0)
        return -1;
    if (*entry_count < 1 || *entry_count > CODEC_ENTRY_MAX) {
        errmsg_say(why, whylen, "entry count %llu out of range 1..%u",
                  (unsigned long long)*entry_count, CODEC_ENTRY_MAX);
        return -1;
    }
    if (*entry_count > buf_remaining(r) / CODEC_ENTRY_MIN_SIZE) {
        errmsg_say(why, whylen, "entry count %llu exceeds what %zu bytes can "
                  "hold", (unsigned long long)*entry_count, buf_remaining(r));
        return -1;
    }
    return 0;
}

/* Checks the 16-byte header of a message of LEN bytes at P. */
static int
codec_check_header(const uint8_t *p, size_t len, char *err, size_t errlen)
{
    struct buf_reader r;
    uint16_t reserved;
    uint32_t body_len, crc;

    if (len < CODEC_HEADER_SIZE) {
        errmsg_say(err, errlen, "truncated header");
        return -1;
    }
    if (memcmp(p, CODEC_MAGIC, CODEC_MAGIC_LEN) != 0) {
        errmsg_say(err, errlen, "bad magic");
        return -1;
    }
    if (p[CODEC_OFF_VERSION] != CODEC_VERSION) {
        errmsg_say(err, errlen, "unsupported version %u", p[CODEC_OFF_VERSION]);
        return -1;
    }
    if (p[CODEC_OFF_FLAGS] != 0) {
        errmsg_say(err, errlen, "header flags 0x%02x must be 0",
                  p[CODEC_OFF_FLAGS]);
        return -1;
    }
    buf_reader_init(&r, p + CODEC_OFF_RESERVED,
                    CODEC_HEADER_SIZE - CODEC_OFF_RESERVED);
    (void)buf_get_u16(&r, &reserved);
    (void)buf_get_u32(&r, &body_len);
    (void)buf_get_u32(&r, &crc);
    if (reserved != 0) {
        errmsg_say(err, errlen, "header reserved 0x%04x must be 0", reserved);
        return -1;
    }
    if (len > CODEC_MESSAGE_MAX) {
        errmsg_say(err, errlen, "message of %zu bytes exceeds %u", len,
                  CODEC_MESSAGE_MAX);
        return -1;
    }
    if (body_len != len - CODEC_HEADER_SIZE) {
        errmsg_say(err, errlen, "body length %u does not match the %zu bytes "
                  "after the header", body_len, len - CODEC_HEADER_SIZE);
        return -1;
    }
    if (crc32c(0, p + CODEC_HEADER_SIZE, body_len) != crc) {
        errmsg_say(err, errlen, "bad CRC");
        return -1;
    }
    return 0;
}

/* ---- decoder -------------------------------------------------------- */

int
codec_decode(const void *data, size_t len, struct codec_message *out,
             char *err, size_t errlen)
{
    const uint8_t *p = data;
    struct buf_reader r;
    uint64_t sb_count;
    size_t entry_cap = 0, entry_total = 0, off;
    char why[CODEC_REASON_MAX];

    memset(out, 0, sizeof(*out));
    if (codec_check_header(p, len, err, errlen) != 0)
        return -1;
    out->version = p[CODEC_OFF_VERSION];
    buf_reader_init(&r, p + CODEC_HEADER_SIZE, len - CODEC_HEADER_SIZE);
    if (buf_get_varint(&r, &sb_count) != 0) {
        errmsg_say(err, errlen, "truncated or malformed sub-batch count");
        goto fail;
    }
    if (sb_count < 1 || sb_count > CODEC_SUBBATCH_MAX) {
        errmsg_say(err, errlen, "sub-batch count %llu out of range 1..%d",
                  (unsigned long long)sb_count, CODEC_SUBBATCH_MAX);
        goto fail;
    }
    if (sb_count > buf_remaining(&r) / CODEC_SUBBATCH_MIN_SIZE) {
        errmsg_say(err, errlen, "sub-batch count %llu exceeds what %zu bytes "
                  "can hold", (unsigned long long)sb_count,
                  buf_remaining(&r));
        goto fail;
    }
    out->subbatches = xcalloc((size_t)sb_count, sizeof(*out->subbatches));
    out->subbatch_count = (size_t)sb_count;
    for (size_t s = 0; s < out->subbatch_count; s++) {
        struct codec_subbatch *sb = &out->subbatches[s];
        uint64_t n;

        if (codec_decode_subbatch_header(&r, sb, &n, why, sizeof(why)) != 0) {
            errmsg_say(err, errlen, "sub-batch %zu: %s", s, why);
            goto fail;
        }
        if (n > CODEC_MESSAGE_ENTRY_MAX - entry_total) {
            errmsg_say(err, errlen, "sub-batch %zu: message holds more than %u "
                      "entries", s, CODEC_MESSAGE_ENTRY_MAX);
            goto fail;
        }
        if (entry_total + n > entry_cap) {
            size_t cap = entry_cap * 2;

            if (cap < entry_total + n)
                cap = entry_total + (size_t)n;
            out->entries = xrealloc(out->entries,
                                    cap * sizeof(*out->entries));
            memset(out->entries + entry_cap, 0,
                   (cap - entry_cap) * sizeof(*out->entries));
            entry_cap = cap;
        }
        for (size_t i = 0; i < (size_t)n; i++) {
            if (codec_decode_entry(&r, &out->entries[entry_total + i], why,
                                   sizeof(why)) != 0) {
                errmsg_say(err, errlen, "entry %zu of sub-batch %zu: %s", i, s,
                          why);
                goto fail;
            }
        }
        sb->entry_count = (size_t)n;
        entry_total += (size_t)n;
    }
    if (buf_remaining(&r) != 0) {
        errmsg_say(err, errlen, "%zu trailing bytes after the last sub-batch",
                  buf_remaining(&r));
        goto fail;
    }
    out->entry_count = entry_total;
    off = 0;
    for (size_t s = 0; s < out->subbatch_count; s++) {
        out->subbatches[s].entries = out->entries + off;
        off += out->subbatches[s].entry_count;
    }
    return 0;

fail:
    out->entry_count = entry_cap;     /* zeroed beyond what was decoded */
    codec_message_destroy(out);
    return -1;
}

void
codec_message_destroy(struct codec_message *msg)
{
    for (size_t i = 0; i < msg->entry_count; i++) {
        if (msg->entries[i].kind == CODEC_ENTRY_DEDUP_KEYS)
            free(msg->entries[i].u.dedup.keys);
    }
    free(msg->entries);
    free(msg->subbatches);
    memset(msg, 0, sizeof(*msg));
}

/* ---- encoder -------------------------------------------------------- */

/* Writes V as a varint at OFFSET of W, moving the bytes after it up. */
static void
codec_insert_varint(struct buf_writer *w, size_t offset, uint64_t v)
{
    uint8_t tmp[CODEC_VARINT_MAX];
    size_t old = w->len, n;

    buf_put_varint(w, v);
    n = w->len - old;
    memcpy(tmp, w->data + old, n);
    memmove(w->data + offset + n, w->data + offset, old - offset);
    memcpy(w->data + offset, tmp, n);
}

size_t
codec_message_size(const struct codec_encoder *enc)
{
    return enc->out->len - enc->message_start;
}

void
codec_message_begin(struct codec_encoder *enc, struct buf_writer *out)
{
    memset(enc, 0, sizeof(*enc));
    enc->out = out;
    enc->message_start = out->len;
    buf_put_bytes(out, CODEC_MAGIC, CODEC_MAGIC_LEN);
    buf_put_u8(out, CODEC_VERSION);
    buf_put_u8(out, 0);           /* flags */
    buf_put_u16(out, 0);          /* reserved */
    buf_put_u32(out, 0);          /* body length, patched at the end */
    buf_put_u32(out, 0);          /* CRC, patched at the end */
}

/* 0 if the message so far (plus room for the counts) fits; else undoes
 * everything after ROLLBACK and fails. */
static int
codec_check_size(struct codec_encoder *enc, size_t rollback)
{
    if (codec_message_size(enc) + CODEC_END_MARGIN <= CODEC_MESSAGE_MAX)
        return 0;
    enc->out->len = rollback;
    errmsg_say(enc->err, sizeof(enc->err), "message would exceed %u bytes",
              CODEC_MESSAGE_MAX);
    return -1;
}

int
codec_subbatch_begin(struct codec_encoder *enc,
                     const struct codec_subbatch *sb)
{
    struct buf_writer *w = enc->out;
    size_t start = w->len;

    if (enc->in_subbatch) {
        errmsg_say(enc->err, sizeof(enc->err), "a sub-batch is already open");
        return -1;
    }
    if (enc->subbatch_count >= CODEC_SUBBATCH_MAX) {
        errmsg_say(enc->err, sizeof(enc->err), "message already holds %d "
                  "sub-batches", CODEC_SUBBATCH_MAX);
        return -1;
    }
    if ((sb->flags & ~CODEC_SB_FLAGS_KNOWN) != 0) {
        errmsg_say(enc->err, sizeof(enc->err), "unknown flags 0x%02x",
                  sb->flags);
        return -1;
    }
    if ((sb->flags & CODEC_SB_ENVELOPE) != 0
        && (sb->flags & CODEC_SB_HAS_BATCH_KEY) == 0) {
        errmsg_say(enc->err, sizeof(enc->err),
                  "envelope flag without a batch key");
        return -1;
    }
    if (codec_check_origin(sb->origin, sb->origin_len, enc->err,
                           sizeof(enc->err)) != 0)
        return -1;
    if (sb->map_version == 0) {
        errmsg_say(enc->err, sizeof(enc->err), "map version 0");
        return -1;
    }
    if (sb->hop_count > CODEC_HOP_MAX) {
        errmsg_say(enc->err, sizeof(enc->err), "hop count %u exceeds %d",
                  sb->hop_count, CODEC_HOP_MAX);
        return -1;
    }
    buf_put_bytes(w, sb->dedup_key, CODEC_KEY_SIZE);
    buf_put_u8(w, sb->flags);
    if ((sb->flags & CODEC_SB_HAS_BATCH_KEY) != 0)
        buf_put_bytes(w, sb->batch_key, CODEC_KEY_SIZE);
    buf_put_string(w, sb->origin, sb->origin_len);
    buf_put_varint(w, sb->map_version);
    buf_put_u8(w, sb->hop_count);
    buf_put_svarint(w, sb->created_us);
    buf_put_varint(w, 0);         /* reserved */
    if (codec_check_size(enc, start) != 0)
        return -1;
    enc->subbatch_start = start;
    enc->entries_start = w->len;
    enc->entry_count = 0;
    enc->in_subbatch = 1;
    return 0;
}

/* Checks that one more entry may go into the open sub-batch. */
static int
codec_entry_room(struct codec_encoder *enc)
{
    if (!enc->in_subbatch) {
        errmsg_say(enc->err, sizeof(enc->err), "no open sub-batch");
        return -1;
    }
    if (enc->entry_count >= CODEC_ENTRY_MAX) {
        errmsg_say(enc->err, sizeof(enc->err), "sub-batch already holds %u "
                  "entries", CODEC_ENTRY_MAX);
        return -1;
    }
    if (enc->message_entries + enc->entry_count >= CODEC_MESSAGE_ENTRY_MAX) {
        errmsg_say(enc->err, sizeof(enc->err), "message already holds %u "
                  "entries", CODEC_MESSAGE_ENTRY_MAX);
        return -1;
    }
    return 0;
}

/* Writes the kind byte and returns the payload offset. */
static size_t
codec_entry_open(struct codec_encoder *enc, enum codec_entry_kind kind)
{
    buf_put_u8(enc->out, (uint8_t)kind);
    return enc->out->len;
}

/* Inserts the payload length before the payload that began at PAYLOAD
 * (the kind byte is just before it) and counts the entry. */
static int
codec_entry_close(struct codec_encoder *enc, size_t payload)
{
    codec_insert_varint(enc->out, payload, enc->out->len - payload);
    if (codec_check_size(enc, payload - 1) != 0)
        return -1;
    enc->entry_count++;
    return 0;
}

static void
codec_put_metric_prefix(struct buf_writer *w, uint16_t slot, uint8_t type,
                        uint64_t generation, const char *name,
                        size_t name_len)
{
    buf_put_u16(w, slot);
    buf_put_u8(w, type);
    buf_put_varint(w, generation);
    buf_put_string(w, name, name_len);
}

static int
codec_check_metric_prefix(struct codec_encoder *enc, uint16_t slot,
                          unsigned type, int allow_any_type, const char *name,
                          size_t name_len)
{
    if (codec_entry_room(enc) != 0
        || codec_check_slot(slot, enc->err, sizeof(enc->err)) != 0
        || codec_check_type(type, allow_any_type, enc->err,
                            sizeof(enc->err)) != 0
        || codec_check_name(name, name_len, enc->err, sizeof(enc->err)) != 0)
        return -1;
    return 0;
}

int
codec_put_event(struct codec_encoder *enc, uint16_t slot, uint64_t generation,
                const struct event *ev)
{
    size_t payload;

    if (codec_check_metric_prefix(enc, slot, (unsigned)ev->type, 0, ev->name,
                                  ev->name_len) != 0)
        return -1;
    if (ev->type == EVENT_UNIQUE) {
        if (codec_check_length("string", ev->str_len, 1, EVENT_STRING_MAX,
                               enc->err, sizeof(enc->err)) != 0)
            return -1;
    } else if (codec_check_value(ev->value, enc->err, sizeof(enc->err)) != 0) {
        return -1;
    }
    if (codec_check_length("source", ev->source_len, 0, EVENT_SOURCE_MAX,
                           enc->err, sizeof(enc->err)) != 0)
        return -1;
    payload = codec_entry_open(enc, CODEC_ENTRY_EVENT);
    codec_put_metric_prefix(enc->out, slot, (uint8_t)ev->type, generation,
                            ev->name, ev->name_len);
    buf_put_svarint(enc->out, ev->time_us);
    if (ev->type == EVENT_UNIQUE)
        buf_put_string(enc->out, ev->str, ev->str_len);
    else
        buf_put_double(enc->out, ev->value);
    buf_put_string(enc->out, ev->source, ev->source_len);
    return codec_entry_close(enc, payload);
}

int
codec_put_partial(struct codec_encoder *enc, uint16_t slot,
                  enum event_type type, uint64_t generation, const char *name,
                  size_t name_len, int64_t bucket_start_s, int64_t first_us,
                  int64_t last_us, uint64_t event_count, const void *state,
                  size_t state_len)
{
    size_t payload;
    int64_t granule_us;

    if (codec_check_metric_prefix(enc, slot, (unsigned)type, 0, name,
                                  name_len) != 0)
        return -1;
    if (bucket_start_s % CODEC_BUCKET_GRANULE_S != 0) {
        errmsg_say(enc->err, sizeof(enc->err), "bucket start %lld not a "
                  "multiple of %d", (long long)bucket_start_s,
                  CODEC_BUCKET_GRANULE_S);
        return -1;
    }
    /* a bucket start this far out could not be a valid event time */
    if (bucket_start_s > INT64_MAX / CODEC_US_PER_S - CODEC_GRANULE_US
        || bucket_start_s < INT64_MIN / CODEC_US_PER_S + CODEC_GRANULE_US) {
        errmsg_say(enc->err, sizeof(enc->err), "bucket start out of range");
        return -1;
    }
    granule_us = bucket_start_s * CODEC_US_PER_S;
    if (first_us < granule_us || last_us < first_us
        || last_us >= granule_us + CODEC_GRANULE_US) {
        errmsg_say(enc->err, sizeof(enc->err),
                  "event times outside the granule");
        return -1;
    }
    if (event_count == 0) {
        errmsg_say(enc->err, sizeof(enc->err), "event count 0");
        return -1;
    }
    if (codec_check_length("state", state_len, 1, CODEC_STATE_MAX, enc->err,
                           sizeof(enc->err)) != 0)
        return -1;
    payload = codec_entry_open(enc, CODEC_ENTRY_PARTIAL);
    codec_put_metric_prefix(enc->out, slot, (uint8_t)type, generation, name,
                            name_len);
    buf_put_svarint(enc->out, bucket_start_s);
    buf_put_varint(enc->out, (uint64_t)(first_us - granule_us));
    buf_put_varint(enc->out, (uint64_t)(last_us - first_us));
    buf_put_varint(enc->out, event_count);
    buf_put_string(enc->out, state, state_len);
    return codec_entry_close(enc, payload);
}

int
codec_put_tombstone(struct codec_encoder *enc, uint16_t slot, uint8_t type,
                    uint64_t generation, const char *name, size_t name_len,
                    int64_t time_us)
{
    size_t payload;

    if (codec_check_metric_prefix(enc, slot, type, 1, name, name_len) != 0)
        return -1;
    payload = codec_entry_open(enc, CODEC_ENTRY_TOMBSTONE);
    codec_put_metric_prefix(enc->out, slot, type, generation, name, name_len);
    buf_put_svarint(enc->out, time_us);
    return codec_entry_close(enc, payload);
}

int
codec_put_metric_state(struct codec_encoder *enc, uint16_t slot,
                       enum event_type type, uint64_t generation,
                       const char *name, size_t name_len, const void *metric,
                       size_t metric_len)
{
    size_t payload;

    if (codec_check_metric_prefix(enc, slot, (unsigned)type, 0, name,
                                  name_len) != 0
        || codec_check_length("metric", metric_len, 1, CODEC_METRIC_MAX,
                              enc->err, sizeof(enc->err)) != 0)
        return -1;
    payload = codec_entry_open(enc, CODEC_ENTRY_METRIC_STATE);
    codec_put_metric_prefix(enc->out, slot, (uint8_t)type, generation, name,
                            name_len);
    buf_put_string(enc->out, metric, metric_len);
    return codec_entry_close(enc, payload);
}

int
codec_put_dedup_keys(struct codec_encoder *enc, uint16_t slot,
                     const struct codec_dedup_key *keys, size_t count)
{
    size_t payload;

    if (codec_entry_room(enc) != 0
        || codec_check_slot(slot, enc->err, sizeof(enc->err)) != 0)
        return -1;
    if (count > CODEC_DEDUP_KEYS_MAX) {
        errmsg_say(enc->err, sizeof(enc->err), "key count %zu out of range "
                  "0..%u", count, CODEC_DEDUP_KEYS_MAX);
        return -1;
    }
    payload = codec_entry_open(enc, CODEC_ENTRY_DEDUP_KEYS);
    buf_put_u16(enc->out, slot);
    buf_put_varint(enc->out, count);
    for (size_t i = 0; i < count; i++) {
        buf_put_bytes(enc->out, keys[i].key, CODEC_KEY_SIZE);
        buf_put_svarint(enc->out, keys[i].created_us);
    }
    return codec_entry_close(enc, payload);
}

int
codec_put_map(struct codec_encoder *enc, const void *text, size_t len)
{
    size_t payload;

    if (codec_entry_room(enc) != 0
        || codec_check_length("map", len, 1, CODEC_MAP_MAX, enc->err,
                              sizeof(enc->err)) != 0)
        return -1;
    payload = codec_entry_open(enc, CODEC_ENTRY_MAP);
    buf_put_string(enc->out, text, len);
    return codec_entry_close(enc, payload);
}

int
codec_put_entry(struct codec_encoder *enc, const struct codec_entry *e)
{
    switch (e->kind) {
    case CODEC_ENTRY_EVENT:
        return codec_put_event(enc, e->slot, e->generation, &e->u.event);
    case CODEC_ENTRY_PARTIAL:
        return codec_put_partial(enc, e->slot, (enum event_type)e->type,
                                 e->generation, e->name, e->name_len,
                                 e->u.partial.bucket_start_s,
                                 e->u.partial.first_us, e->u.partial.last_us,
                                 e->u.partial.event_count, e->u.partial.state,
                                 e->u.partial.state_len);
    case CODEC_ENTRY_TOMBSTONE:
        return codec_put_tombstone(enc, e->slot, e->type, e->generation,
                                   e->name, e->name_len,
                                   e->u.tombstone.time_us);
    case CODEC_ENTRY_METRIC_STATE:
        return codec_put_metric_state(enc, e->slot, (enum event_type)e->type,
                                      e->generation, e->name, e->name_len,
                                      e->u.metric_state.metric,
                                      e->u.metric_state.metric_len);
    case CODEC_ENTRY_DEDUP_KEYS:
        return codec_put_dedup_keys(enc, e->slot, e->u.dedup.keys,
                                    e->u.dedup.count);
    case CODEC_ENTRY_MAP:
        return codec_put_map(enc, e->u.map.text, e->u.map.len);
    }
    errmsg_say(enc->err, sizeof(enc->err), "unknown kind %d", (int)e->kind);
    return -1;
}

int
codec_subbatch_end(struct codec_encoder *enc)
{
    if (!enc->in_subbatch) {
        errmsg_say(enc->err, sizeof(enc->err), "no open sub-batch");
        return -1;
    }
    enc->in_subbatch = 0;
    if (enc->entry_count == 0) {
        enc->out->len = enc->subbatch_start;
        errmsg_say(enc->err, sizeof(enc->err), "empty sub-batch removed");
        return -1;
    }
    codec_insert_varint(enc->out, enc->entries_start, enc->entry_count);
    enc->message_entries += enc->entry_count;
    enc->entry_count = 0;
    enc->subbatch_count++;
    return 0;
}

int
codec_message_end(struct codec_encoder *enc)
{
    struct buf_writer *w = enc->out;
    size_t body = enc->message_start + CODEC_HEADER_SIZE;
    size_t body_len;

    if (enc->in_subbatch) {
        errmsg_say(enc->err, sizeof(enc->err), "a sub-batch is still open");
        goto fail;
    }
    if (enc->subbatch_count == 0) {
        errmsg_say(enc->err, sizeof(enc->err), "message has no sub-batch");
        goto fail;
    }
    codec_insert_varint(w, body, enc->subbatch_count);
    body_len = w->len - body;
    if (body_len > CODEC_MESSAGE_MAX - CODEC_HEADER_SIZE) {
        errmsg_say(enc->err, sizeof(enc->err), "message would exceed %u bytes",
                  CODEC_MESSAGE_MAX);
        goto fail;
    }
    buf_patch_u32(w, enc->message_start + CODEC_OFF_BODY_LEN,
                  (uint32_t)body_len);
    buf_patch_u32(w, enc->message_start + CODEC_OFF_CRC,
                  crc32c(0, w->data + body, body_len));
    return 0;

fail:
    w->len = enc->message_start;
    enc->in_subbatch = 0;
    enc->subbatch_count = 0;
    return -1;
}

/* ---- cache value header --------------------------------------------- */

/* Cache header field offsets. */
#define CODEC_CACHE_OFF_VERSION 2
#define CODEC_CACHE_OFF_KIND 3
#define CODEC_CACHE_OFF_TYPE 4
#define CODEC_CACHE_OFF_RESERVED 5
#define CODEC_CACHE_RESERVED_BYTES 3
#define CODEC_CACHE_OFF_GENERATION 8

static int
codec_cache_type_ok(uint8_t kind, uint8_t type)
{
    if (kind == CODEC_CACHE_TOMBSTONE && type == CODEC_TYPE_ANY)
        return 1;
    return type >= EVENT_TYPE_MIN && type <= EVENT_TYPE_MAX;
}

static int
codec_cache_kind_ok(uint8_t kind)
{
    return kind >= CODEC_CACHE_OPEN_BUCKETS && kind <= CODEC_CACHE_TOMBSTONE;
}

int
codec_cache_header_encode(const struct codec_cache_header *h,
                          struct buf_writer *out)
{
    static const uint8_t zero[CODEC_CACHE_RESERVED_BYTES];

    uint8_t version = h->version != 0 ? h->version : CODEC_CACHE_VERSION;

    if (version < CODEC_CACHE_VERSION_OLDEST || version > CODEC_CACHE_VERSION
        || !codec_cache_kind_ok(h->kind) || !codec_cache_type_ok(h->kind, h->type))
        return -1;
    buf_put_bytes(out, CODEC_CACHE_MAGIC, CODEC_CACHE_MAGIC_LEN);
    buf_put_u8(out, version);
    buf_put_u8(out, h->kind);
    buf_put_u8(out, h->type);
    buf_put_bytes(out, zero, sizeof(zero));
    buf_put_u64(out, h->generation);
    buf_put_u64(out, h->map_version);
    buf_put_u64(out, h->sequence);
    return 0;
}

int
codec_cache_header_decode(struct buf_reader *in, struct codec_cache_header *out,
                          char *err, size_t errlen)
{
    const uint8_t *p;
    struct buf_reader r;
    uint8_t version, kind, type;

    if (buf_get_bytes(in, &p, CODEC_CACHE_HEADER_SIZE) != 0) {
        errmsg_say(err, errlen, "truncated cache header");
        return -1;
    }
    if (memcmp(p, CODEC_CACHE_MAGIC, CODEC_CACHE_MAGIC_LEN) != 0) {
        errmsg_say(err, errlen, "bad cache magic");
        goto fail;
    }
    version = p[CODEC_CACHE_OFF_VERSION];
    kind = p[CODEC_CACHE_OFF_KIND];
    type = p[CODEC_CACHE_OFF_TYPE];
    if (version < CODEC_CACHE_VERSION_OLDEST || version > CODEC_CACHE_VERSION) {
        errmsg_say(err, errlen, "unsupported cache version %u", version);
        goto fail;
    }
    if (!codec_cache_kind_ok(kind)) {
        errmsg_say(err, errlen, "cache kind %u out of range", kind);
        goto fail;
    }
    if (!codec_cache_type_ok(kind, type)) {
        errmsg_say(err, errlen, "cache type %u out of range", type);
        goto fail;
    }
    for (size_t i = 0; i < CODEC_CACHE_RESERVED_BYTES; i++) {
        if (p[CODEC_CACHE_OFF_RESERVED + i] != 0) {
            errmsg_say(err, errlen, "cache reserved bytes must be 0");
            goto fail;
        }
    }
    out->version = version;
    out->kind = kind;
    out->type = type;
    buf_reader_init(&r, p + CODEC_CACHE_OFF_GENERATION,
                    CODEC_CACHE_HEADER_SIZE - CODEC_CACHE_OFF_GENERATION);
    (void)buf_get_u64(&r, &out->generation);
    (void)buf_get_u64(&r, &out->map_version);
    (void)buf_get_u64(&r, &out->sequence);
    return 0;

fail:
    in->pos -= CODEC_CACHE_HEADER_SIZE;
    return -1;
}

int
codec_cache_header_may_replace(const struct codec_cache_header *cur,
                               const struct codec_cache_header *next)
{
    if (next->generation != cur->generation)
        return next->generation > cur->generation;
    return next->sequence > cur->sequence;
}
