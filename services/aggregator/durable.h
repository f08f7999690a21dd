/*
 * durable: an aggregator's state on its local disk: the write-ahead log
 * of applied bus messages (src/wal.c), the snapshot that lets the log be
 * trimmed, and the sub-batch dedup set they both carry (src/dedup.c).
 * Formats: schema/wal.md; design: schema/dedup.md.
 *
 *   start:   snapshot (store + dedup set + log position) --> store
 *            log records after that position --> replay: apply again
 *   run:     durable_log(message) x N, durable_sync (one fsync), then the
 *            caller applies and acks each message
 *   now and then: durable_snapshot: rotate the log, write the snapshot
 *            (temp file, fsync, rename, fsync dir), trim old segments
 *
 * Log records: kind u8 1 = a bus message: applied_us svarint (the
 * aggregator's clock when it applied it, so a replay folds exactly as the
 * first run did), then the bus message bytes (schema/bus-batch.md);
 * kind 2 = a forward confirmed: its 16-byte sub-batch key.
 */
#ifndef TALLY_DURABLE_H
#define TALLY_DURABLE_H

#include <stddef.h>
#include <stdint.h>

#include "dedup.h"
#include "forward.h"
#include "move.h"
#include "store.h"
#include "wal.h"

#define DURABLE_ERR_MAX 320

/* Applies one bus message at APPLIED_US: DATA (LEN bytes) is the message.
 * REPLAYING is 1 during startup (no bus yet). */
typedef void (*durable_apply_fn)(void *ctx, const uint8_t *data, size_t len,
                                 int64_t applied_us, int replaying);

struct durable_stats {
    uint64_t replayed_records;    /* at the last start */
    uint64_t replayed_bytes;
    uint64_t truncated_bytes;     /* torn tail cut off at the last start */
    int64_t replay_us;            /* how long the last start's replay took */
    int64_t snapshot_us;          /* wall time of the last snapshot, or 0 */
    uint64_t snapshots;           /* written since start */
    uint64_t wal_bytes;
};

struct durable;

/* Opens DIR (created if missing): loads the snapshot into STORE (empty),
 * FORWARD (empty) and MOVE (both borrowed for the durable's life) and the
 * two key sets,
 * then replays the log through APPLY. NO_FSYNC is the unsafe test mode.
 * Returns a new durable owned by the caller, or NULL with a reason (e.g. a
 * corrupt log or snapshot). *DEDUP (sub-batch keys) and *BATCHES (client
 * batch keys) receive the sets, owned by the durable, before the replay
 * starts. */
struct durable *durable_open(const char *dir, struct store *store,
                             struct forward *forward, struct move *move,
                             int64_t dedup_horizon_us, int no_fsync,
                             durable_apply_fn apply, void *ctx,
                             struct dedup **dedup, struct dedup **batches,
                             char *err, size_t errlen);
void durable_close(struct durable *d);

/* Appends the record of one message; 0 or -1 (nothing of it is logged). */
int durable_log(struct durable *d, const void *message, size_t len,
                int64_t applied_us, char *err, size_t errlen);
/* Appends a record saying the forward KEY was confirmed: a replay drops
 * it from the pending forwards instead of sending it again. */
int durable_log_forward_done(struct durable *d,
                             const uint8_t key[FORWARD_KEY_SIZE], char *err,
                             size_t errlen);
/* Makes every logged record durable; 0 or -1. */
int durable_sync(struct durable *d, char *err, size_t errlen);
/* Writes a snapshot of STORE, the key sets and the pending forwards, then
 * trims the log. */
int durable_snapshot(struct durable *d, struct store *store, char *err,
                     size_t errlen);
/* Bytes logged since the last snapshot. */
uint64_t durable_log_since_snapshot(const struct durable *d);
void durable_stats(const struct durable *d, struct durable_stats *out);

#endif
