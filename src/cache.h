/*
 * cache: tally's use of memcached, through libmemcached. Key layout,
 * multi-get of one metric's values, and forward-only writes
 * (schema/cache-value.md). Values are opaque here apart from their 32-byte
 * header (codec_cache_header_*).
 *
 *   key of the open buckets   tly1:o:<h>
 *   key of a closed bucket    tly1:b:<h>:<generation>:<ring>:<start>
 *
 *   <h> = 32 lowercase hex digits of hash_128(name); generation in
 *   lowercase hex; ring 0..2 (enum ring); start in decimal seconds. Every
 *   key of a metric uses <h> as the libmemcached group key (`*_by_key`),
 *   so one metric's values sit on one server.
 *
 * Consistent hashing (ketama) over the server list, auto-eject off, short
 * timeouts. A struct cache is thread-safe: it holds a pool of connections
 * and each call borrows one.
 *
 * The *_many calls take the keys of many metrics at once: they group the
 * keys by the server that holds each metric and make one multi-get per
 * server (CACHE_MGET_KEYS_MAX keys at most), instead of a round trip per
 * key.
 */
#ifndef TALLY_CACHE_H
#define TALLY_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "window.h"

#define CACHE_KEY_MAX 128
#define CACHE_ERR_MAX 256
#define CACHE_POOL_MAX 16            /* connections per struct cache */
#define CACHE_TIMEOUT_MS_DEFAULT 250 /* connect, send and receive */
#define CACHE_TIMEOUT_MS_MAX 60000
#define CACHE_MGET_KEYS_MAX 1024     /* keys per multi-get request */

struct cache;

/* SERVERS is "host:port[,host:port...]" (borrowed); TIMEOUT_MS, in
 * 1..CACHE_TIMEOUT_MS_MAX, bounds each connect, send and receive. Returns
 * a new cache owned by the caller (cache_destroy), or NULL with a reason in
 * ERR for an unparsable list or a timeout out of range. Connecting is lazy:
 * an unreachable server shows up as -1 from the calls below, not here. */
struct cache *cache_create(const char *servers, int timeout_ms, char *err,
                           size_t errlen);
void cache_destroy(struct cache *c);

/* Write the key into OUT (at least CACHE_KEY_MAX bytes) and return its
 * length. NAME (NAME_LEN bytes) is borrowed. */
size_t cache_key_open(char *out, const char *name, size_t name_len);
size_t cache_key_bucket(char *out, const char *name, size_t name_len,
                        uint64_t generation, enum ring ring, int64_t start_s);

/* Called once per key found, with the index of the key in the request and
 * the value (borrowed for the duration of the call). A key asked twice is
 * reported at both of its indexes. */
typedef void (*cache_found_fn)(void *ctx, size_t index, const uint8_t *value,
                               size_t len);

/* Multi-gets the N keys KEYS[i] (KEY_LENS[i] bytes) of metric NAME in one
 * round trip and calls FOUND for each key present. Keys absent are simply
 * not reported. 0, or -1 with a reason in ERR when the server cannot be
 * reached or answers with an error (then some keys may have been
 * reported). */
int cache_mget(struct cache *c, const char *name, size_t name_len,
               const char *const *keys, const size_t *key_lens, size_t n,
               cache_found_fn found, void *ctx, char *err, size_t errlen);

/* cache_mget for keys of many metrics: KEYS[i] (KEY_LENS[i] bytes) is a key
 * of metric NAMES[i] (NAME_LENS[i] bytes); all borrowed. One multi-get per
 * server that holds any of them. FOUND gets the index of each key present,
 * as with cache_mget. 0, or -1 with the reason of the first failure in ERR
 * when a server cannot be reached or answers with an error: the keys of
 * the other servers are still reported. */
int cache_mget_many(struct cache *c, const char *const *names,
                    const size_t *name_lens, const char *const *keys,
                    const size_t *key_lens, size_t n, cache_found_fn found,
                    void *ctx, char *err, size_t errlen);

/* Forward-only write of VALUE (LEN bytes, starting with a valid cache
 * header; borrowed) under KEY of metric NAME: `gets`, then `add` when
 * nothing is stored, else codec_cache_header_may_replace and `cas`,
 * retried a few times when that races another writer (cache_put_many of
 * one write). A stored value whose header cannot be decoded is replaced.
 * Returns 1 when written, 0 when the stored value is as new or newer
 * (nothing written), -1 with a reason in ERR on a server error or an
 * invalid VALUE header. EXPIRE_S is the memcached expiry (0 = none). */
int cache_put(struct cache *c, const char *name, size_t name_len,
              const char *key, size_t key_len, const uint8_t *value,
              size_t len, uint32_t expire_s, char *err, size_t errlen);

/* One write of cache_put_many: the arguments of a cache_put (all borrowed)
 * and its outcome. */
struct cache_write {
    const char *name;
    size_t name_len;
    const char *key;
    size_t key_len;
    const uint8_t *value;
    size_t len;
    uint32_t expire_s;
    int status;                  /* out: as cache_put returns */
};

/* cache_put of each of the N writes W[i], with the same forward-only rule
 * and outcomes (W[i].status), in a few round trips per server whatever N:
 * a multi-get (`gets`) of the keys, then every `add` or `cas` the rule
 * allows sent without waiting for answers (noreply), then a multi-get
 * again, which shows which writes took; those that lost a race go again,
 * a few rounds at most. 0 when no write failed, else -1 with the reason of
 * the first failure in ERR. */
int cache_put_many(struct cache *c, struct cache_write *w, size_t n,
                   char *err, size_t errlen);

#endif
