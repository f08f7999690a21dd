/*
 * codec: the bus codec of tally (messages on exchange tally.events) and the
 * header of every cache value. Pure encode/decode over bytes; no AMQP, no
 * I/O. The byte layouts are the public contract in schema/bus-batch.md and
 * schema/cache-value.md.
 *
 *   encode (frontend, aggregator forwarding, slot move):
 *
 *     codec_message_begin                 16-byte header placeholder
 *       codec_subbatch_begin              dedup key, flags, origin, ...
 *         codec_put_event / _partial / _tombstone / _metric_state /
 *         codec_put_dedup_keys / codec_put_entry      (1..CODEC_ENTRY_MAX)
 *       codec_subbatch_end                entry count written
 *       ... more sub-batches (group commit) ...
 *     codec_message_end                   sub-batch count, body length, CRC
 *
 *   decode (aggregator consumer):
 *
 *     bytes --codec_decode--> struct codec_message
 *                               subbatches[] --> entries[] (strings and
 *                               blobs point into the input bytes)
 *
 * A message is a header (magic "TLYB", version, flags, reserved, body
 * length, CRC-32C of the body) and a body of sub-batches. A sub-batch is
 * one client request's entries for one instance with its own 128-bit dedup
 * key; group commit packs many sub-batches into one message.
 */
#ifndef TALLY_CODEC_H
#define TALLY_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "event.h"

/* ---- bus message ---------------------------------------------------- */

#define CODEC_MAGIC "TLYB"
#define CODEC_MAGIC_LEN 4
#define CODEC_VERSION 1
#define CODEC_HEADER_SIZE 16
#define CODEC_MESSAGE_MAX (64u * 1024u * 1024u)   /* header included */
#define CODEC_SUBBATCH_MAX 65536                  /* per message */
#define CODEC_ENTRY_MAX (1u << 20)                /* per sub-batch */
#define CODEC_MESSAGE_ENTRY_MAX (1u << 20)        /* per message, in all */
#define CODEC_KEY_SIZE 16                         /* dedup and batch keys */
#define CODEC_ORIGIN_MAX 64
#define CODEC_HOP_MAX 4
#define CODEC_STATE_MAX (1u << 20)                /* PARTIAL state bytes */
#define CODEC_METRIC_MAX (16u * 1024u * 1024u)    /* METRIC_STATE bytes */
#define CODEC_DEDUP_KEYS_MAX (1u << 20)           /* per DEDUP_KEYS entry */
#define CODEC_MAP_MAX (1u << 20)                  /* MAP text bytes */
#define CODEC_BUCKET_GRANULE_S 10                 /* PARTIAL bucket_start */
#define CODEC_US_PER_S 1000000LL
#define CODEC_GRANULE_US (CODEC_BUCKET_GRANULE_S * CODEC_US_PER_S)
#define CODEC_ERR_MAX 160                         /* encoder reason buffer */

/* Sub-batch flags. Any other bit set is an error in version 1. */
#define CODEC_SB_HAS_BATCH_KEY 0x01u  /* client batch key present */
#define CODEC_SB_FORWARDED 0x02u      /* forwarded by a non-owner */
#define CODEC_SB_FROM_INGEST 0x04u    /* dedup key from AMQP message_id */
#define CODEC_SB_ENVELOPE 0x08u       /* batch-routing envelope; needs
                                         CODEC_SB_HAS_BATCH_KEY */
#define CODEC_SB_HANDOFF 0x10u        /* a slot move's states and keys
                                         (schema/resharding.md) */
#define CODEC_SB_FLAGS_KNOWN 0x1fu

enum codec_entry_kind {
    CODEC_ENTRY_EVENT = 1,
    CODEC_ENTRY_PARTIAL = 2,
    CODEC_ENTRY_TOMBSTONE = 3,
    CODEC_ENTRY_METRIC_STATE = 4,
    CODEC_ENTRY_DEDUP_KEYS = 5,
    CODEC_ENTRY_MAP = 6,
};

/* Tombstone type meaning "whatever type the metric has". */
#define CODEC_TYPE_ANY 0

struct codec_dedup_key {
    uint8_t key[CODEC_KEY_SIZE];
    int64_t created_us;
};

/*
 * One entry. SLOT is set for every kind. TYPE, GENERATION and NAME are set
 * for every kind but DEDUP_KEYS. Then the union member named after KIND.
 * Pointers into a decoded message borrow the input bytes (see codec_decode).
 */
struct codec_entry {
    enum codec_entry_kind kind;
    uint16_t slot;                 /* < SLOTMAP_SLOTS */
    uint8_t type;                  /* enum event_type; TOMBSTONE may be 0 */
    uint64_t generation;
    const char *name;              /* not NUL-terminated */
    size_t name_len;
    union {
        /* EVENT: type, name, value or str, time_us, source. ev.type and
         * ev.name equal the fields above. Decoded: str is NULL for every
         * type but unique, value is 0 for unique. */
        struct event event;
        struct {
            int64_t bucket_start_s;   /* multiple of 10 */
            int64_t first_us;         /* earliest folded event time */
            int64_t last_us;          /* latest; both inside the granule */
            uint64_t event_count;     /* >= 1 */
            const uint8_t *state;     /* opaque, 1..CODEC_STATE_MAX */
            size_t state_len;
        } partial;
        struct {
            int64_t time_us;
        } tombstone;
        struct {
            const uint8_t *metric;    /* opaque, 1..CODEC_METRIC_MAX */
            size_t metric_len;
        } metric_state;
        struct {
            /* Decoded: an array owned by the message (freed by
             * codec_message_destroy). Encoding: borrowed. */
            struct codec_dedup_key *keys;
            size_t count;             /* 0..CODEC_DEDUP_KEYS_MAX */
        } dedup;
        struct {
            const uint8_t *text;      /* a slot map, schema/slot-map.md */
            size_t len;               /* 1..CODEC_MAP_MAX */
        } map;
    } u;
};

struct codec_subbatch {
    uint8_t dedup_key[CODEC_KEY_SIZE];
    uint8_t flags;                     /* CODEC_SB_* */
    uint8_t batch_key[CODEC_KEY_SIZE]; /* zero unless HAS_BATCH_KEY */
    const char *origin;                /* 1..CODEC_ORIGIN_MAX printable
                                          ASCII, no space; not NUL-ended */
    size_t origin_len;
    uint64_t map_version;              /* >= 1 */
    uint8_t hop_count;                 /* 0..CODEC_HOP_MAX */
    int64_t created_us;
    /* Decoded only (ignored by codec_subbatch_begin): entries[0..count),
     * pointing into codec_message.entries. */
    struct codec_entry *entries;
    size_t entry_count;
};

struct codec_message {
    uint8_t version;
    struct codec_subbatch *subbatches;   /* owned */
    size_t subbatch_count;
    struct codec_entry *entries;         /* owned; all sub-batches' */
    size_t entry_count;                  /* in all */
};

/*
 * Decodes one message of LEN bytes at DATA into OUT. Every field is
 * checked: magic, version, header flags and reserved bytes, body length,
 * CRC-32C, every count and length, flags, slots (< SLOTMAP_SLOTS), types,
 * event names ([A-Za-z0-9._:/-], 1..200 bytes; checked here), doubles
 * (finite, |v| <= EVENT_VALUE_MAX), hop count, reserved fields, and that
 * each entry's payload and the whole body are consumed exactly. The
 * decoder does not check UTF-8 of unique strings and sources nor event
 * times against a clock: event_validate does that.
 *
 * Zero-copy: every name, origin, string, state and metric blob in OUT
 * points into DATA, which the caller must keep alive and unchanged while
 * OUT is used. OUT's arrays are owned by OUT; free them with
 * codec_message_destroy. Allocation is bounded by a small multiple of LEN.
 *
 * Returns 0, or -1 with OUT zeroed (nothing to destroy, though destroying
 * it is harmless) and a precise reason in ERR (always NUL-terminated when
 * ERRLEN > 0), e.g. "truncated header", "bad CRC",
 * "entry 3 of sub-batch 0: slot 5000 out of range".
 */
int codec_decode(const void *data, size_t len, struct codec_message *out,
                 char *err, size_t errlen);

/* Frees the arrays of MSG (not the input bytes) and zeroes it. */
void codec_message_destroy(struct codec_message *msg);

/*
 * The encoder. It appends one message to OUT (borrowed; it must outlive the
 * encoder). Every call validates its arguments with the decoder's rules
 * first; on failure it returns -1, writes the reason into ENC->err and
 * leaves the message as it was before the call, so the caller may skip
 * that entry and go on. Strings and blobs are copied into OUT.
 */
struct codec_encoder {
    struct buf_writer *out;
    size_t message_start;      /* offset of the header in OUT */
    size_t subbatch_start;     /* offset of the open sub-batch */
    size_t entries_start;      /* offset of its first entry */
    size_t subbatch_count;
    size_t entry_count;        /* in the open sub-batch */
    size_t message_entries;    /* in all closed sub-batches */
    int in_subbatch;
    char err[CODEC_ERR_MAX];
};

/* Starts a message at the end of OUT (whatever OUT already holds is kept
 * before it). */
void codec_message_begin(struct codec_encoder *enc, struct buf_writer *out);

/* Opens a sub-batch with SB's header fields (SB->entries and
 * SB->entry_count are ignored; SB->origin is copied). 0 or -1: a
 * sub-batch already open, too many sub-batches, unknown flags, ENVELOPE
 * without HAS_BATCH_KEY, bad origin, map version 0, hop count too high. */
int codec_subbatch_begin(struct codec_encoder *enc,
                         const struct codec_subbatch *sb);

/* Each appends one entry to the open sub-batch; 0 or -1 (no open
 * sub-batch, a field out of range, entry limits, or the message would
 * exceed CODEC_MESSAGE_MAX). */
/* EV is borrowed: type, name, value or str, time_us, source. */
int codec_put_event(struct codec_encoder *enc, uint16_t slot,
                    uint64_t generation, const struct event *ev);
int codec_put_partial(struct codec_encoder *enc, uint16_t slot,
                      enum event_type type, uint64_t generation,
                      const char *name, size_t name_len,
                      int64_t bucket_start_s, int64_t first_us,
                      int64_t last_us, uint64_t event_count,
                      const void *state, size_t state_len);
/* TYPE may be CODEC_TYPE_ANY. */
int codec_put_tombstone(struct codec_encoder *enc, uint16_t slot,
                        uint8_t type, uint64_t generation, const char *name,
                        size_t name_len, int64_t time_us);
int codec_put_metric_state(struct codec_encoder *enc, uint16_t slot,
                           enum event_type type, uint64_t generation,
                           const char *name, size_t name_len,
                           const void *metric, size_t metric_len);
/* KEYS (COUNT of them, 0 for none) are borrowed. */
int codec_put_dedup_keys(struct codec_encoder *enc, uint16_t slot,
                         const struct codec_dedup_key *keys, size_t count);
/* TEXT (LEN bytes) is a slot map's text; opaque to the codec. */
int codec_put_map(struct codec_encoder *enc, const void *text, size_t len);
/* Re-encodes a decoded (or hand-built) entry E of any kind, e.g. to
 * forward it; dispatches to the calls above. */
int codec_put_entry(struct codec_encoder *enc, const struct codec_entry *e);

/* Closes the open sub-batch. -1 (and the sub-batch is removed from the
 * message) if it holds no entry or none is open. */
int codec_subbatch_end(struct codec_encoder *enc);

/* Finishes the message: writes the sub-batch count, body length and CRC.
 * 0, with the whole message at OUT->data + ENC->message_start; or -1 (no
 * sub-batch, one still open, or too large) with OUT truncated back to
 * where the message began; start again with codec_message_begin. */
int codec_message_end(struct codec_encoder *enc);

/* Bytes of the message written so far (header included). */
size_t codec_message_size(const struct codec_encoder *enc);

/* ---- cache value header --------------------------------------------- */

#define CODEC_CACHE_MAGIC "TC"
#define CODEC_CACHE_MAGIC_LEN 2
#define CODEC_CACHE_VERSION 2          /* the newest, written by default */
#define CODEC_CACHE_VERSION_OLDEST 1   /* the oldest still read */
#define CODEC_CACHE_HEADER_SIZE 32

enum codec_cache_kind {
    CODEC_CACHE_OPEN_BUCKETS = 1,   /* the open bucket of every window */
    CODEC_CACHE_CLOSED_BUCKET = 2,  /* one closed bucket */
    CODEC_CACHE_TOMBSTONE = 3,      /* the metric was deleted */
};

struct codec_cache_header {
    uint8_t version;          /* decode sets it; encode writes it, and
                                 CODEC_CACHE_VERSION when it is 0 */
    uint8_t kind;             /* enum codec_cache_kind */
    uint8_t type;             /* enum event_type; 0 allowed for TOMBSTONE */
    uint64_t generation;
    uint64_t map_version;
    uint64_t sequence;
};

/* Appends the 32-byte header for H to OUT. 0, or -1 (OUT untouched) if
 * H's version, kind or type is out of range. */
int codec_cache_header_encode(const struct codec_cache_header *h,
                              struct buf_writer *out);

/* Reads a 32-byte header from IN (borrowed; advanced past the header on
 * success). 0, or -1 with a reason in ERR. */
int codec_cache_header_decode(struct buf_reader *in,
                              struct codec_cache_header *out, char *err,
                              size_t errlen);

/* The forward-only rule: 1 if a value with header NEXT may replace one with
 * header CUR (NEXT's generation is greater, or equal with a greater
 * sequence), else 0. Map versions do not take part. */
int codec_cache_header_may_replace(const struct codec_cache_header *cur,
                                   const struct codec_cache_header *next);

#endif
