/*
 * move: an aggregator's side of resharding (schema/resharding.md).
 *
 *   MAP entry in the instance queue (logged like any message)
 *     --move_install--> the new map; LEAVING: slots this instance gives
 *                       up; incoming slots wait for their old owner's
 *                       handoff
 *     --move_handoff--> the leaving slots' metrics and client batch keys,
 *                       as HANDOFF sub-batches to their new owners
 *                       (forward.c: sent until confirmed)
 *   HANDOFF at the new owner: metrics merged, batch keys added, then
 *     --move_received--> the slot stops waiting; client batches parked
 *                        for it meanwhile (move_park) are released
 *
 * The state (map, waiting slots, parked batches) is part of the snapshot,
 * and everything else follows from the log, so a crash at any step
 * resumes where it was. Not thread-safe: the main thread owns it.
 */
#ifndef TALLY_MOVE_H
#define TALLY_MOVE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "dedup.h"
#include "forward.h"
#include "slotmap.h"
#include "store.h"

#define MOVE_ERR_MAX 160

struct move_stats {
    uint64_t from_version;       /* the last map change: from, to */
    uint64_t to_version;
    uint32_t slots_out;          /* slots it gave up, took over then */
    uint32_t slots_in;
    uint64_t handoffs_sent;      /* HANDOFF messages made, since start */
    uint64_t metrics_sent;
    uint64_t handoffs_received;
    uint64_t metrics_received;
    uint64_t stale_maps;         /* MAP entries not newer than the map */
};

/* A client batch parked until its slot's batch keys arrive. */
struct move_parked {
    struct move_parked *next;
    uint16_t slot;               /* of its batch key */
    uint8_t *data;               /* owned: a message of one sub-batch */
    size_t len;
};

struct move;

/* MAP (taken) is the map to start from; SELF the instance number, which
 * may lie outside it (a new instance owns nothing until a map gives it
 * slots). */
struct move *move_create(struct slotmap *map, uint32_t self);
void move_destroy(struct move *m);

const struct slotmap *move_map(const struct move *m);
/* The owner of SLOT under the current map. */
uint32_t move_owner(const struct move *m, uint16_t slot);

/* Makes NEXT (taken) the map if its version is newer; returns 1, with
 * LEAVING[slot] set (SLOTMAP_SLOTS bytes) for each slot this instance
 * gives up. Slots it takes over wait for their handoff. Returns 0 (NEXT
 * freed) for a map that is not newer. */
int move_install(struct move *m, struct slotmap *next, uint8_t *leaving);

/* Takes the metrics of the LEAVING slots out of STORE and their client
 * batch keys out of BATCHES' view, and queues them on FWD as HANDOFF
 * messages to their owners under the current map. Deterministic for the
 * same store and keys, so a replay makes the same messages (same keys). */
void move_handoff(struct move *m, struct store *store,
                  const struct dedup *batches, struct forward *fwd,
                  const uint8_t *leaving, int64_t now_us);

/* 1 while SLOT waits for its old owner's batch keys. */
int move_awaiting(const struct move *m, uint16_t slot);
/* The map version of the last handoff SLOT received (0: none). */
uint64_t move_received_version(const struct move *m, uint16_t slot);
/* The batch keys of SLOT arrived with a handoff made under VERSION. */
void move_received(struct move *m, uint16_t slot, uint64_t version);
/* Counts a metric merged from a handoff, and a handoff sub-batch. */
void move_count_received(struct move *m, uint64_t handoffs,
                         uint64_t metrics);
/* Parks a message of one client-batch sub-batch (DATA copied) whose batch
 * key is in SLOT. */
void move_park(struct move *m, uint16_t slot, const uint8_t *data,
               size_t len);
/* The first parked batch whose slot no longer waits (taken by the
 * caller, free with move_parked_free), or NULL. */
struct move_parked *move_release(struct move *m);
void move_parked_free(struct move_parked *p);

size_t move_awaiting_count(const struct move *m);
size_t move_parked_count(const struct move *m);
void move_stats(const struct move *m, struct move_stats *out);

/* Snapshot: the map, the waiting slots, the parked batches and the last
 * change. move_decode replaces the map only with a newer one. */
void move_encode(const struct move *m, struct buf_writer *out);
int move_decode(struct move *m, struct buf_reader *in, char *err,
                size_t errlen);

#endif
