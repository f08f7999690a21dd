/*
 * store: the metrics an aggregator instance owns, in memory, and what its
 * flusher writes to memcached. Thread-safe: the consumer applies messages
 * while the flusher collects changed buckets and the RPC responder reads.
 *
 *   consumer --store_apply(message)--> metrics (fold partial states,
 *                                      tombstones bump generations)
 *   flusher  --store_collect(now)----> values to write: the open-buckets
 *                                      value of each changed metric, a
 *                                      closed-bucket value for each bucket
 *                                      that closed or changed after closing
 *   responder --store_get / store_list / store_count
 *
 * Cache sequence numbers start at the wall clock in microseconds, and
 * never below SEQUENCE_FLOOR (the process's start time): a restarted
 * aggregator, whose replay recreates entries at their old event times or
 * loads the sequences of an older snapshot, still writes forward of
 * everything its previous life wrote (a few writes per second never catch
 * up with the clock).
 */
#ifndef TALLY_STORE_H
#define TALLY_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "buf.h"
#include "cache.h"
#include "codec.h"

struct metric;

#define STORE_REASON_MAX 160

struct store;

/* Counters kept by the store (read with store_stats). */
struct store_stats {
    uint64_t entries_applied;
    uint64_t events_applied;
    uint64_t type_conflicts;
    uint64_t stale_generation;
    uint64_t tombstones;
    uint64_t metrics_collected;
    uint64_t metrics;              /* live now (not deleted) */
    uint64_t quota_refused;        /* entries refused by --metrics-max */
};

/* One refused entry or applied tombstone, reported after store_apply. */
struct store_notice {
    int tombstone;                 /* 0: refused entry; 1: applied delete */
    char *name;                    /* owned, NUL-terminated */
    enum event_type type;          /* the entry's type */
    uint64_t generation;           /* tombstone: the new generation */
    uint64_t sequence;             /* tombstone: cache sequence to use */
    uint64_t event_count;
    char reason[STORE_REASON_MAX]; /* refused: why */
};

/* One value to write. */
struct store_write {
    char *name;                    /* owned */
    size_t name_len;
    char key[CACHE_KEY_MAX];
    size_t key_len;
    uint8_t *value;                /* owned */
    size_t len;
    uint32_t expire_s;
};

/* IDLE_EXPIRY_S: a metric without an event for that long is collected.
 * METRICS_MAX: a new metric beyond that many live ones is refused (0: no
 * quota). SEQUENCE_FLOOR: the wall clock (microseconds) at the process's
 * start. CACHE_FORMAT: the cache value version written, 1 or 2
 * (schema/cache-value.md). */
struct store *store_create(int64_t idle_expiry_s, uint64_t metrics_max,
                           int64_t sequence_floor, int cache_format);
void store_destroy(struct store *s);

/* Applies every entry of MSG at NOW_US, but for the sub-batches whose
 * SKIP flag is set and the entries (indexed as in MSG->entries) whose
 * SKIP_ENTRY flag is set (either may be NULL). Refused entries (type conflict,
 * deleted generation) and applied tombstones are returned in *NOTICES (a
 * new array owned by the caller: store_notices_free) with their count. */
size_t store_apply(struct store *s, const struct codec_message *msg,
                   const uint8_t *skip, const uint8_t *skip_entry,
                   int64_t now_us, struct store_notice **notices);
void store_notices_free(struct store_notice *n, size_t count);

/* The values the flusher must write at NOW_US (a new array owned by the
 * caller: store_writes_free), headers stamped with MAP_VERSION. Also
 * collects idle metrics. */
size_t store_collect(struct store *s, int64_t now_us, uint64_t map_version,
                     struct store_write **writes);
void store_writes_free(struct store_write *w, size_t count);

/* Appends metric_encode of NAME to OUT and returns 1, or returns 0 when it
 * does not exist (deleted or never seen; *GENERATION is still set). Marks
 * the metric for a full rewrite at the next flush (a reader missed it in
 * the cache). */
int store_get(struct store *s, const char *name, size_t name_len,
              struct buf_writer *out, uint64_t *generation);
/* {"metrics":[{"name","type","updated"}...],"more":bool}: names starting
 * with PREFIX and after AFTER, in byte order, at most LIMIT. New object
 * owned by the caller. */
json_object *store_list(struct store *s, const char *prefix,
                        const char *after, size_t limit);
/* A cache write for NAME failed: rewrite all its values (or its
 * tombstone) at the next flush. */
void store_repair(struct store *s, const char *name, size_t len);
size_t store_count(struct store *s);

/* Appends every entry (live metrics and remembered deletes) to OUT, for a
 * snapshot (schema/wal.md, "Snapshots"). */
void store_encode(struct store *s, struct buf_writer *out);
/* Loads what store_encode wrote into S, which must be empty. Every loaded
 * metric is marked for a full cache rewrite. 0, or -1 with a reason. */
int store_decode(struct store *s, struct buf_reader *in, char *err,
                 size_t errlen);
void store_stats(struct store *s, struct store_stats *out);

/* ---- slot moves (schema/resharding.md) ------------------------------ */

/* One metric taken out of the store for its new owner. */
struct store_taken {
    char *name;                    /* owned, NUL-terminated */
    size_t name_len;
    uint16_t slot;
    uint64_t generation;
    struct metric *metric;         /* owned; NULL for a deleted metric */
    int64_t deleted_us;
};

/* Removes every metric whose slot has LEAVING[slot] set and hands them
 * over in *OUT (a new array owned by the caller); returns how many. Their
 * cache values are no longer written by this instance. */
size_t store_take_slots(struct store *s, const uint8_t *leaving,
                        struct store_taken **out);
void store_taken_free(struct store_taken *t, size_t count);

/* Merges a metric shipped by its old owner (METRIC of GENERATION, taken)
 * into the store: a new entry, or merged with what this instance applied
 * since the move began. A newer generation replaces, an older one is
 * dropped (a delete came in between). Every bucket is rewritten at the
 * next flush. A moved state of another type than the one here is
 * dropped: 0, or -1 with the reason. */
int store_merge_metric(struct store *s, const char *name, size_t name_len,
                       uint64_t generation, struct metric *metric,
                       int64_t now_us, char *reason, size_t len);

#endif
