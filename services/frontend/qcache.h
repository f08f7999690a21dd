/*
 * qcache: a frontend's cache of decoded metrics for metrics.query, so a
 * query reads and decodes only what changed since the last one.
 *
 *   query --> open value (memcached, every query) --qcache_open-->
 *             entry: `all`, the buckets the open value holds, and the
 *             closed buckets read before, each with the sequence of the
 *             value it came from
 *         --> qcache_missing: the closed buckets of the window that the
 *             entry cannot vouch for --> one multi-get --> qcache_closed
 *             (decodes a state only when its sequence is new)
 *         --> qcache_complete --> metric_render of qcache_metric
 *
 * A closed bucket read before is used without reading it again only while
 * the open value's closed marks (cacheval_marks) show that no closed value
 * of its ring has been written since it was read, and only if it was read
 * under an open value whose flush had stored every closed value it marks
 * (cacheval_ring_settled). Without marks (version 1 values) every closed
 * bucket of the window is read again, but still decoded only when new.
 *
 * Entries are keyed by name and hold one generation of a metric; a newer
 * generation or a tombstone resets them. At most MAX_METRICS entries and
 * about MAX_BYTES of values are kept, the least recently used going
 * first. Thread-safe: an entry is
 * locked from qcache_acquire to qcache_release, and everything in between
 * (including the caller's reads from memcached for it) runs under that
 * lock, so queries of one metric take turns while queries of others run.
 */
#ifndef TALLY_QCACHE_H
#define TALLY_QCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "metric.h"
#include "window.h"

/* What qcache_open installed. */
#define QCACHE_LIVE 1        /* a metric: see qcache_missing */
#define QCACHE_DELETED 2     /* a tombstone */

struct qcache;
struct qcache_entry;

/* Counters since qcache_create (for cluster.status and the tests). */
struct qcache_stats {
    uint64_t entries;        /* held now */
    uint64_t bytes;          /* encoded bytes of the values they hold */
    uint64_t evicted;        /* dropped to stay within MAX_METRICS */
    uint64_t opens;          /* open values decoded (new sequences) */
    uint64_t closed_read;    /* closed values handed to qcache_closed */
    uint64_t closed_decoded; /* ... whose state had to be decoded */
    uint64_t closed_kept;    /* window buckets used without a read */
};

/* A new cache of at most MAX_METRICS (>= 1) entries, owned by the
 * caller. Past MAX_BYTES (0: no limit) of values held -- the encoded
 * lengths of the open and closed values the entries' states came from, an
 * estimate of their memory -- the least recently used entries go too. */
struct qcache *qcache_create(size_t max_metrics, size_t max_bytes);
void qcache_destroy(struct qcache *c);

/* NAME's entry (LEN bytes, borrowed), made empty if there is none, locked
 * for the caller until qcache_release. */
struct qcache_entry *qcache_acquire(struct qcache *c, const char *name,
                                    size_t len);
void qcache_release(struct qcache *c, struct qcache_entry *e);
/* Drops NAME's entry, if any (a query that gave up on it). */
void qcache_forget(struct qcache *c, const char *name, size_t len);

/* Installs the open-buckets or tombstone value VALUE (LEN bytes, borrowed)
 * in E unless E already holds that one or a newer one (the forward-only
 * rule of schema/cache-value.md). Returns what E holds then, QCACHE_LIVE or
 * QCACHE_DELETED, or -1 with a reason in ERR when VALUE cannot be decoded
 * (E is left as it was). */
int qcache_open(struct qcache *c, struct qcache_entry *e,
                const uint8_t *value, size_t len, char *err, size_t errlen);

/* The starts of the closed buckets of RING (*RING) that a query of WINDOW
 * at NOW_US needs and E cannot vouch for, written to STARTS (room for MAX;
 * the keys carry *GENERATION). Starts a new round: qcache_complete then
 * accepts what qcache_closed brought in since. Returns how many, or
 * (size_t)-1 when E holds a bucket the open value does not list (E is then
 * emptied: answer without it). E must hold a live metric. */
size_t qcache_missing(struct qcache *c, struct qcache_entry *e,
                      enum window window, int64_t now_us, enum ring *ring,
                      uint64_t *generation, int64_t *starts, size_t max);

/* Puts the closed-bucket value VALUE (LEN bytes, borrowed) into E: its
 * state is decoded unless E holds that bucket at that sequence already.
 * 1 applied, 0 skipped (another generation or type, or a bucket the open
 * value holds a newer copy of), -1 malformed (reason in ERR). */
int qcache_closed(struct qcache *c, struct qcache_entry *e,
                  const uint8_t *value, size_t len, char *err,
                  size_t errlen);

/* 1 if every bucket a query of WINDOW at NOW_US needs is in E, vouched for
 * or read in this round; 0 if one is missing (a value was evicted: ask the
 * owner). */
int qcache_complete(const struct qcache_entry *e, enum window window,
                    int64_t now_us);

/* A new state (the caller's) equal to metric_window_state of E's metric
 * for WINDOW (not WINDOW_ALL) at NOW_US, made by the same merges in the
 * same order, but starting from E's kept merge of the window's buckets
 * before the first one the open value holds, which is made again only
 * when one of those changed or the window moved on. E must be live and
 * complete (qcache_complete). */
void *qcache_window_state(struct qcache_entry *e, enum window window,
                          int64_t now_us);

/* E's metric, to render while E is held; NULL unless E is live. */
const struct metric *qcache_metric(const struct qcache_entry *e);

void qcache_stats(struct qcache *c, struct qcache_stats *out);

#endif
