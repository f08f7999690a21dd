/*
 * dedup: the set of recently applied sub-batch keys of an aggregator, so a
 * bus message that is redelivered or republished is applied once.
 * Bounded by a time horizon: a key is kept while its creation time is
 * within HORIZON of now, then forgotten. Design: schema/dedup.md.
 *
 *   dedup_seen(key, created, now) -> 1 duplicate (skip) | 0 new (noted)
 *   dedup_expire(now)             forget keys created before now-horizon
 *   dedup_encode/decode           for snapshots
 *
 * Expiry is exact, whatever order creation times arrive in (a delayed or
 * a future-dated key holds no other key up): a key is kept while
 * now - created_us <= horizon, and forgotten by the first dedup_expire
 * with now - created_us > horizon. Between dedup_expire calls, old keys
 * may linger (and still answer 1); nothing else forgets a key.
 *
 * Memory: at most DEDUP_ENTRY_BYTES per key of the largest count the set
 * has held, plus a small fixed part; about half that right after a growth
 * step. Reported by dedup_memory. Memory is never given back on expiry
 * (the room is reused by later keys) until dedup_destroy.
 *
 * Encoding (canonical, so equal sets give equal bytes):
 *   varint count, then count x (16 key bytes, zigzag varint created_us),
 *   keys in strictly ascending byte order.
 *
 * Not thread-safe.
 */
#ifndef TALLY_DEDUP_H
#define TALLY_DEDUP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define DEDUP_KEY_SIZE 16
#define DEDUP_ERR_MAX 160
/* Upper bound on memory per key (dedup.c checks it at compile time). */
#define DEDUP_ENTRY_BYTES 68

struct dedup;

/* Keys are kept for HORIZON_US (> 0) after their creation time. The caller
 * owns the set and frees it with dedup_destroy (NULL is fine). */
struct dedup *dedup_create(int64_t horizon_us);
void dedup_destroy(struct dedup *d);

/* 1 if KEY is in the set (a duplicate); else adds it with CREATED_US and
 * returns 0. A key created before NOW_US - horizon is not added (it would
 * be forgotten at once) and returns 0; dedup_stale counts those. KEY is
 * copied. */
int dedup_seen(struct dedup *d, const uint8_t key[DEDUP_KEY_SIZE],
               int64_t created_us, int64_t now_us);
/* Forgets the keys created before NOW_US - horizon. */
void dedup_expire(struct dedup *d, int64_t now_us);

size_t dedup_count(const struct dedup *d);
/* Bytes of memory the set uses now (table and entries). */
size_t dedup_memory(const struct dedup *d);
/* Keys that arrived already older than the horizon. */
uint64_t dedup_stale(const struct dedup *d);

/* Calls EACH with every key and its creation time, in no set order. */
void dedup_each(const struct dedup *d,
                void (*each)(void *ctx, const uint8_t *key,
                             int64_t created_us),
                void *ctx);
/* Appends every key with its creation time (canonical: sorted by key). */
void dedup_encode(const struct dedup *d, struct buf_writer *out);
/* Reads what dedup_encode wrote into a new set with HORIZON_US, owned by
 * the caller; NULL with a reason in ERR on malformed input. Reads exactly
 * the encoding: bytes after it are left in IN. Keys are taken as they are
 * (none is expired or counted stale by decoding). */
struct dedup *dedup_decode(struct buf_reader *in, int64_t horizon_us,
                           char *err, size_t errlen);

#endif
