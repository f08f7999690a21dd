/*
 * publisher: a publishing connection and its I/O thread (the frontend's,
 * and an aggregator's for forwarding).
 * Requests hand it items; it packs the pending items of one instance into
 * one bus message (group commit), publishes persistent and mandatory in
 * confirm mode, and reports each item's fate once the broker answered.
 *
 *   MHD / inbox threads --publisher_submit--> queue --(eventfd)--> thread:
 *     group by instance -> codec message of many sub-batches -> publish
 *     basic.ack  (multiple) -> done(ok)
 *     basic.nack            -> done(fail, "overloaded")
 *     basic.return + ack    -> done(fail, "unroutable")
 *     connection lost -> the unconfirmed items are published again on the
 *                        next connection while their deadline (submit +
 *                        confirm timeout) lasts, else done(fail)
 *     broker unreachable -> done(fail) at once
 *
 * A returned or nacked message is a failure, never a success. Publishing
 * again is safe: each sub-batch keeps its key, and aggregators drop one
 * they already applied. Before publishing, the thread declares every
 * instance queue up to the instance count it was given. The queue is bounded
 * (PUBLISHER_QUEUE_BYTES_MAX): past it, submissions fail as overloaded.
 */
#ifndef TALLY_PUBLISHER_H
#define TALLY_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"

#define PUBLISHER_REASON_MAX 320

/* Called once per item, from the publisher thread. OK is 1 when the broker
 * confirmed it; else REASON says why not. */
typedef void (*publisher_done_fn)(void *ctx, int ok, const char *reason);

struct publisher_item;
struct publisher;

/* Starts the thread. CONFIG's strings are borrowed for the publisher's
 * life; NAME (copied) names the connection at the broker. Items may go
 * to instances 0..INSTANCES-1, whose queues it declares. */
struct publisher *publisher_create(const struct bus_config *config,
                                   uint32_t instances, int confirm_timeout_ms,
                                   const char *name);
/* Raises the instance count (a new slot map with more instances): their
 * queues are declared before the next publish. Never lowers it. */
void publisher_set_instances(struct publisher *p, uint32_t instances);
uint32_t publisher_instances(struct publisher *p);
/* Stops and joins the thread: every item queued or in flight fails with
 * "shutting down" (its callback runs before this returns), and later
 * submissions fail at once. */
void publisher_stop(struct publisher *p);
/* Stops (if not yet) and frees P. */
void publisher_destroy(struct publisher *p);
/* 1 when connected with the topology declared. */
int publisher_ready(struct publisher *p);
/* The last connection error into WHY ("" before any). */
void publisher_last_error(struct publisher *p, char *why, size_t whylen);
/* Items published again after a lost connection, since the start. */
uint64_t publisher_republished(struct publisher *p);

/* An item for INSTANCE's queue: a codec message of one sub-batch (DATA,
 * LEN bytes; ownership passes to the publisher). */
struct publisher_item *publisher_item_events(uint32_t instance, uint8_t *data,
                                             size_t len,
                                             publisher_done_fn done,
                                             void *ctx);
/* A raw message (BODY copied) to EXCHANGE with ROUTING_KEY and PROPS
 * (strings copied), published on its own. */
struct publisher_item *publisher_item_raw(const char *exchange,
                                          const char *routing_key,
                                          const void *body, size_t len,
                                          const struct bus_props *props,
                                          int mandatory,
                                          publisher_done_fn done, void *ctx);
/* Queues ITEM (ownership passes). Fails it at once with a reason when the
 * broker is unreachable. */
void publisher_submit(struct publisher *p, struct publisher_item *item);

#endif
