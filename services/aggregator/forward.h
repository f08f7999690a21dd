/*
 * forward: the entries of a client batch (an envelope, schema/dedup.md)
 * that the batch owner does not own itself, sent on to their owners and
 * kept until the broker confirms them.
 *
 *   agg_apply(envelope) --forward_add(instance, key, message)--> pending
 *   publisher thread: confirmed --> dropped from pending
 *                     failed    --> sent again by forward_poll (backoff)
 *   snapshot: forward_encode / forward_decode (pending ones survive)
 *
 * Each forward carries a sub-batch key derived from the batch key and the
 * target instance, so a forward sent twice (after a crash, or a retry) is
 * applied once by its target. Thread-safe.
 */
#ifndef TALLY_FORWARD_H
#define TALLY_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "publisher.h"

#define FORWARD_ERR_MAX 160
#define FORWARD_KEY_SIZE 16

struct forward;

/* PUB (borrowed) publishes the forwards. TAG classifies each forward's
 * message once, when it is added or loaded (forward_pending_tagged). */
struct forward *forward_create(struct publisher *pub,
                               int (*tag)(const uint8_t *data, size_t len));
/* Frees the pending forwards; stop PUB first. */
void forward_destroy(struct forward *f);

/* Takes ownership of DATA (LEN bytes, one bus message for INSTANCE whose
 * sub-batch key is KEY) and sends it until confirmed. */
void forward_add(struct forward *f, uint32_t instance,
                 const uint8_t key[FORWARD_KEY_SIZE], uint8_t *data,
                 size_t len);
/* While HOLD is 1 (a replay), forwards are kept but not sent, so one the
 * log later says was confirmed is never sent again; forward_poll sends
 * the rest once HOLD is back to 0. */
void forward_hold(struct forward *f, int hold);
/* Drops the pending forward KEY (the log says it was confirmed). */
void forward_remove(struct forward *f, const uint8_t key[FORWARD_KEY_SIZE]);
/* Moves the keys of forwards confirmed since the last call into KEYS (a
 * new array owned by the caller, FORWARD_KEY_SIZE bytes each); returns
 * how many. The aggregator logs them, so a replay does not send them
 * again. */
size_t forward_take_confirmed(struct forward *f, uint8_t **keys);
/* A notice to publish with confirms until confirmed: BODY (copied) to
 * EXCHANGE with ROUTING_KEY, CONTENT_TYPE and the x-tally-reason REASON
 * (NULL for none), persistent. Notices (rejections, announcements) live
 * in memory only: one is lost if the process dies before its confirm. */
void forward_add_notice(struct forward *f, const char *exchange,
                        const char *routing_key, const char *content_type,
                        const char *reason, const void *body, size_t len);
/* Sends again the forwards that failed, at most every retry interval. */
void forward_poll(struct forward *f);
size_t forward_pending(struct forward *f);
/* The pending forwards whose message TAG classified as TAG. */
size_t forward_pending_tagged(struct forward *f, int tag);
/* Snapshot: the pending forwards (instance varint, key 16 bytes, message
 * string); notices are not kept. */
void forward_encode(struct forward *f, struct buf_writer *out);
int forward_decode(struct forward *f, struct buf_reader *in, char *err,
                   size_t errlen);

#endif
