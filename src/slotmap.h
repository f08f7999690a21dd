/*
 * slotmap: the slot function and the versioned map from slots to the
 * numbered aggregator instances.
 *
 *   name --hash_fnv1a64--> h --mod SLOTMAP_SLOTS--> slot --map--> instance
 *
 * A map has a version (>= 1, grows by one per change), an instance count M
 * (1..SLOTMAP_INSTANCES_MAX) and an owner for every slot. The default map
 * gives contiguous ranges; slotmap_rebalance derives the next version for a
 * new M moving as few slots as balance allows. The text form (rendered by
 * the deploy on every node) is documented in schema/slot-map.md.
 */
#ifndef TALLY_SLOTMAP_H
#define TALLY_SLOTMAP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SLOTMAP_SLOTS 4096
#define SLOTMAP_INSTANCES_MAX 1024
#define SLOTMAP_FORMAT_VERSION 1
#define SLOTMAP_MAGIC "tally-slotmap"
/* Largest slot map text slotmap_parse and slotmap_load accept. */
#define SLOTMAP_TEXT_MAX (1024 * 1024)
#define SLOTMAP_ERR_MAX 160

struct slotmap {
    uint64_t version;                 /* >= 1 */
    uint32_t instances;               /* M, 1..SLOTMAP_INSTANCES_MAX */
    uint16_t owner[SLOTMAP_SLOTS];    /* each < instances */
};

/* hash_fnv1a64(NAME) % SLOTMAP_SLOTS. NAME (LEN bytes) is borrowed. */
uint16_t slotmap_slot(const char *name, size_t len);

/* Returns a new map owned by the caller (free with slotmap_destroy): slot s
 * belongs to floor(s * M / SLOTMAP_SLOTS). NULL if M or VERSION is out of
 * range. */
struct slotmap *slotmap_create_default(uint32_t instances, uint64_t version);

void slotmap_destroy(struct slotmap *map);

/* Owner of SLOT, which must be < SLOTMAP_SLOTS. MAP is borrowed. */
uint16_t slotmap_owner(const struct slotmap *map, uint16_t slot);

/* Slots MAP gives to INSTANCE. */
size_t slotmap_slots_owned(const struct slotmap *map, uint32_t instance);

/*
 * Returns a new map (owned by the caller) with version OLD->version + 1 and
 * NEW_M instances in which every instance owns floor or ceil of
 * SLOTMAP_SLOTS / NEW_M slots. Only the slots of instances >= NEW_M and the
 * excess of instances above their target move (an instance gives up its
 * highest slots); the moved slots, in ascending order, fill the instances
 * below their target in ascending instance order. The ceil targets go to the
 * instances that own the most slots (ties: lower instance first), which
 * keeps movement minimal: going from M to M+1 on a balanced map moves at
 * most ceil(SLOTMAP_SLOTS / (M+1)) slots. OLD is borrowed. NULL if NEW_M is
 * out of range, the version would overflow, or OLD is malformed (an owner
 * >= OLD->instances).
 */
struct slotmap *slotmap_rebalance(const struct slotmap *old, uint32_t new_m);

/* Number of slots whose owner differs between A and B (both borrowed). */
size_t slotmap_moved(const struct slotmap *a, const struct slotmap *b);

/* 1 if A and B have the same version, instance count and owners. */
int slotmap_equal(const struct slotmap *a, const struct slotmap *b);

/*
 * Parses the text form (LEN bytes at TEXT, borrowed; no NUL needed).
 * Returns a new map owned by the caller, or NULL with a reason naming the
 * line in ERR, e.g. "line 7: slot 12 assigned twice",
 * "slot 4095 not assigned".
 */
struct slotmap *slotmap_parse(const char *text, size_t len, char *err,
                              size_t errlen);

/* Appends the canonical text of MAP (consecutive slots of one owner merged
 * into ranges) to OUT; slotmap_parse gives back an equal map. */
void slotmap_format(const struct slotmap *map, struct buf_writer *out);

/* Reads and parses the file at PATH (at most SLOTMAP_TEXT_MAX bytes).
 * Returns a new map owned by the caller, or NULL with a reason in ERR. */
struct slotmap *slotmap_load(const char *path, char *err, size_t errlen);

#endif
