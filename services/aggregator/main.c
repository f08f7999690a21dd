/*
 * tally-aggregator --instance i: owns the slots the map gives instance i.
 *
 *   main thread (one AMQP connection)
 *     tally.agg.<i>  group of deliveries --> write-ahead log, one fsync
 *                      --> agg_apply each: sub-batch keys (dedup.c) drop
 *                      redeliveries; envelopes: batch key checked, own
 *                      entries applied, the rest forwarded (forward.c)
 *                      --> store_apply --> ack
 *                      refused entries --> tally.rejected (reason header)
 *                      tombstones --> cache tombstone --> tally.control
 *     tally.rpc.<i>  get / list / status --> reply_to (also while the
 *                    log replays at start)
 *     control queue  (announcements; nothing to do yet)
 *   forwarder        a confirm-mode publisher: forwards and notices
 *   flusher thread   every flush interval: store_collect --> cache_put
 *   HTTP             /healthz, /readyz
 *
 * Durable: a delivery is acked only once its record is in the fsynced
 * write-ahead log (durable.c); a restart loads the snapshot and replays
 * the log after it.
 */
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "cache.h"
#include "cacheval.h"
#include "codec.h"
#include "config.h"
#include "daemon.h"
#include "dedup.h"
#include "durable.h"
#include "forward.h"
#include "hash.h"
#include "http.h"
#include "publisher.h"
#include "log.h"
#include "slotmap.h"
#include "store.h"
#include "xalloc.h"

#define AGG_POLL_MS 100
#define AGG_GROUP_MAX 256                        /* deliveries per sync */
#define AGG_GROUP_BYTES (16u * 1024u * 1024u)
#define AGG_SNAPSHOT_LOG_BYTES (64ull * 1024 * 1024)
#define AGG_US_PER_S 1000000LL
#define AGG_LOG_RETRY_MS 1000
#define AGG_REPLAY_POLL_US 50000       /* answer RPCs this often */
#define AGG_REPLAY_DELAY_ENV "TALLY_TEST_REPLAY_DELAY_MS"
#define AGG_UNSAFE_NO_FSYNC_ENV "TALLY_UNSAFE_NO_FSYNC"
#define AGG_RPC_LIMIT_MAX 1000
#define AGG_TAG_MAX 64

struct agg_options {
    struct daemon_options common;
    long instance;
    long http_port;
    long flush_interval_ms;
    long prefetch;
    long idle_expiry_s;
    long metrics_max;
    char *data_dir;
    long snapshot_interval_s;
    long dedup_horizon_s;
};

static const struct config_option agg_table[] = {
    DAEMON_OPTIONS(struct agg_options, common),
    {"instance", CONFIG_INT, offsetof(struct agg_options, instance), "-1", -1,
     SLOTMAP_INSTANCES_MAX - 1, "this aggregator's instance number (required)"},
    {"http-port", CONFIG_INT, offsetof(struct agg_options, http_port), "0", 0,
     65535, "port of /healthz and /readyz (0 = off)"},
    {"flush-interval-ms", CONFIG_INT,
     offsetof(struct agg_options, flush_interval_ms), "250", 10, 60000,
     "how often changed buckets go to memcached"},
    {"prefetch", CONFIG_INT, offsetof(struct agg_options, prefetch), "64", 1,
     65535, "unacked deliveries in flight"},
    {"idle-expiry-s", CONFIG_INT, offsetof(struct agg_options, idle_expiry_s),
     "604800", 1, 31536000, "collect a metric idle this long (seconds)"},
    {"metrics-max", CONFIG_INT, offsetof(struct agg_options, metrics_max),
     "1000000", 0, 1000000000, "quota: most live metrics on this instance "
     "(0 = none); events of a new metric beyond it go to tally.rejected"},
    {"data-dir", CONFIG_STRING, offsetof(struct agg_options, data_dir),
     "aggregator-data", 0, 0,
     "write-ahead log and snapshots (the source of truth of its slots)"},
    {"snapshot-interval-s", CONFIG_INT,
     offsetof(struct agg_options, snapshot_interval_s), "60", 1, 86400,
     "write a snapshot and trim the log this often (seconds)"},
    {"dedup-horizon-s", CONFIG_INT,
     offsetof(struct agg_options, dedup_horizon_s), "600", 10, 86400,
     "how long sub-batch keys are remembered (seconds)"},
};
#define AGG_TABLE_SIZE (sizeof(agg_table) / sizeof(agg_table[0]))

struct aggregator {
    struct agg_options opts;
    struct slotmap *map;
    struct store *store;
    struct cache *cache;
    struct bus_config bus_config;
    struct bus *bus;
    char agg_queue[BUS_NAME_MAX];
    char rpc_queue[BUS_NAME_MAX];
    char control_queue[BUS_NAME_MAX];
    struct durable *durable;
    struct dedup *dedup;           /* owned by durable */
    uint64_t dedup_skipped;        /* sub-batches applied before */
    struct dedup *batches;         /* client batch keys; owned by durable */
    uint64_t batches_skipped;      /* client batches applied before */
    uint64_t forwarded;            /* forward sub-batches made */
    struct publisher *forwarder;
    struct forward *forward;
    int64_t started_us;            /* wall clock at start */
    uint64_t log_errors;
    int64_t last_snapshot_us;      /* monotonic */
    int no_fsync;
    volatile int replaying;
    int events_consumed;           /* the instance queue is consumed */
    long replay_delay_ms;          /* test hook: TALLY_TEST_REPLAY_DELAY_MS */
    int64_t replay_polled_us;      /* monotonic */
    volatile int log_failing;      /* the last group could not be logged */
    char log_failure[DURABLE_ERR_MAX];
    volatile int ready;
    pthread_mutex_t flush_lock;
    int64_t last_flush_us;
    uint64_t flush_errors;
    uint64_t bad_messages;
};

/* ---------------------------------------------------------------------- */
/* Flusher                                                                 */
/* ---------------------------------------------------------------------- */

static void
agg_flush(struct aggregator *a)
{
    struct store_write *w;
    int64_t now = daemon_now_us();
    size_t n = store_collect(a->store, now, a->map->version, &w);
    uint64_t errors = 0;
    char err[CACHE_ERR_MAX];

    for (size_t i = 0; i < n; i++) {
        if (cache_put(a->cache, w[i].name, w[i].name_len, w[i].key,
                      w[i].key_len, w[i].value, w[i].len, w[i].expire_s, err,
                      sizeof(err)) >= 0)
            continue;
        store_repair(a->store, w[i].name, w[i].name_len);
        if (errors++ == 0)
            log_warn("flush: %s (retried at the next flush)", err);
    }
    store_writes_free(w, n);
    pthread_mutex_lock(&a->flush_lock);
    a->last_flush_us = now;
    a->flush_errors += errors;
    pthread_mutex_unlock(&a->flush_lock);
}

static void *
agg_flusher(void *arg)
{
    struct aggregator *a = arg;

    while (!daemon_stopping) {
        daemon_sleep_ms(a->opts.flush_interval_ms);
        agg_flush(a);
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Deliveries                                                              */
/* ---------------------------------------------------------------------- */

/* Publishes BODY to tally.rejected with REASON, with confirms and
 * retries (forward.c). */
static void
agg_reject(struct aggregator *a, const void *body, size_t len,
           const char *content_type, const char *reason)
{
    forward_add_notice(a->forward, "", BUS_QUEUE_REJECTED, content_type,
                       reason, body, len);
}

static void
agg_notice(struct aggregator *a, const struct store_notice *n)
{
    json_object *o = json_object_new_object();
    const char *text;
    char err[BUS_ERR_MAX];

    json_object_object_add(o, "name", json_object_new_string(n->name));
    if (!n->tombstone) {
        json_object_object_add(o, "type", json_object_new_string(
            event_type_name(n->type) ? event_type_name(n->type) : "any"));
        json_object_object_add(o, "events",
                               json_object_new_int64((int64_t)n->event_count));
        json_object_object_add(o, "reason", json_object_new_string(n->reason));
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        log_info("rejected %s: %s", n->name, n->reason);
        agg_reject(a, text, strlen(text), "application/json", n->reason);
        json_object_put(o);
        return;
    }
    {
        struct codec_cache_header h = {0};
        struct buf_writer out;
        char key[CACHE_KEY_MAX];
        size_t key_len = cache_key_open(key, n->name, strlen(n->name));

        h.generation = n->generation;
        h.map_version = a->map->version;
        h.sequence = n->sequence;
        buf_writer_create(&out, CODEC_CACHE_HEADER_SIZE);
        cacheval_encode_tombstone(&h, &out);
        if (cache_put(a->cache, n->name, strlen(n->name), key, key_len,
                      out.data, out.len, 0, err, sizeof(err)) < 0) {
            log_warn("tombstone of %s: %s (retried at the next flush)",
                     n->name, err);
            store_repair(a->store, n->name, strlen(n->name));
        }
        buf_writer_destroy(&out);
    }
    json_object_object_add(o, "op", json_object_new_string("deleted"));
    json_object_object_add(o, "generation",
                           json_object_new_int64((int64_t)n->generation));
    text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    forward_add_notice(a->forward, BUS_EXCHANGE_CONTROL, "",
                       "application/json", NULL, text, strlen(text));
    log_info("deleted %s (generation %" PRIu64 ")", n->name, n->generation);
    json_object_put(o);
}

/* The envelope SB of a client batch (schema/dedup.md): its entries for
 * slots this instance does not own are marked in SKIP_ENTRY and sent on,
 * one sub-batch per owner, with a key derived from the batch key and the
 * owner, so a forward sent twice is applied once. */
static void
agg_forward(struct aggregator *a, const struct codec_message *msg,
            const struct codec_subbatch *sb, uint8_t *skip_entry)
{
    uint32_t self = (uint32_t)a->opts.instance;

    for (uint32_t target = 0; target < a->map->instances; target++) {
        struct codec_subbatch fwd;
        struct codec_encoder enc;
        struct buf_writer out;
        struct hash128 h;
        uint8_t seed[CODEC_KEY_SIZE + sizeof(uint32_t)];
        size_t put = 0, len;
        char origin[AGG_TAG_MAX];

        if (target == self)
            continue;
        memset(&fwd, 0, sizeof(fwd));
        memcpy(seed, sb->batch_key, CODEC_KEY_SIZE);
        for (size_t i = 0; i < sizeof(uint32_t); i++)
            seed[CODEC_KEY_SIZE + i] = (uint8_t)(target >> (8 * i));
        h = hash_128(seed, sizeof(seed));
        hash_128_bytes(h, fwd.dedup_key);
        fwd.flags = CODEC_SB_FORWARDED | CODEC_SB_HAS_BATCH_KEY;
        memcpy(fwd.batch_key, sb->batch_key, CODEC_KEY_SIZE);
        snprintf(origin, sizeof(origin), "agg-%u", self);
        fwd.origin = origin;
        fwd.origin_len = strlen(origin);
        fwd.map_version = a->map->version;
        fwd.hop_count = (uint8_t)(sb->hop_count + 1);
        fwd.created_us = sb->created_us;
        buf_writer_create(&out, 1024);
        codec_message_begin(&enc, &out);
        if (fwd.hop_count > CODEC_HOP_MAX
            || codec_subbatch_begin(&enc, &fwd) != 0) {
            buf_writer_destroy(&out);
            log_error("cannot forward a batch: %s", fwd.hop_count
                      > CODEC_HOP_MAX ? "hop limit reached" : enc.err);
            return;
        }
        for (size_t i = 0; i < sb->entry_count; i++) {
            const struct codec_entry *e = &sb->entries[i];

            if (e->kind == CODEC_ENTRY_DEDUP_KEYS
                || slotmap_owner(a->map, e->slot) != target)
                continue;
            if (codec_put_entry(&enc, e) == 0) {
                skip_entry[e - msg->entries] = 1;
                put++;
            } else {
                log_error("cannot forward an entry (applied here): %s",
                          enc.err);
            }
        }
        if (put == 0 || codec_subbatch_end(&enc) != 0
            || codec_message_end(&enc) != 0) {
            if (put > 0) {          /* not sent: apply them here instead */
                log_error("cannot forward a batch (applied here): %s",
                          enc.err);
                for (size_t i = 0; i < sb->entry_count; i++)
                    if (slotmap_owner(a->map, sb->entries[i].slot) == target)
                        skip_entry[&sb->entries[i] - msg->entries] = 0;
            }
            buf_writer_destroy(&out);
            continue;
        }
        {
            uint8_t *data = buf_writer_release(&out, &len);

            forward_add(a->forward, target, fwd.dedup_key, data, len);
        }
        a->forwarded++;
    }
}

static int
agg_consume_events(struct aggregator *a, char *err, size_t errlen)
{
    if (bus_consume(a->bus, a->agg_queue, (uint16_t)a->opts.prefetch, err,
                    errlen) != 0)
        return -1;
    a->events_consumed = 1;
    return 0;
}

static void agg_on_rpc(struct aggregator *a, const struct bus_event *ev);

/* During a replay: answers the RPC requests waiting (status says
 * "replaying"), acks control messages, takes nothing else. */
static void
agg_replay_poll(struct aggregator *a)
{
    struct bus_event ev;
    char err[BUS_ERR_MAX];
    int rc;

    if (a->bus == NULL)
        return;
    while ((rc = bus_wait(a->bus, 0, &ev, err, sizeof(err))) == 1) {
        if (ev.kind == BUS_EVENT_DELIVERY) {
            if (strcmp(ev.consumer_tag, a->rpc_queue) == 0)
                agg_on_rpc(a, &ev);
            bus_ack(a->bus, ev.delivery_tag, err, sizeof(err));
        }
        bus_event_release(a->bus, &ev);
    }
    if (rc < 0) {
        log_warn("bus during replay: %s", err);
        bus_close(a->bus);
        a->bus = NULL;
    }
}

/* Applies one logged bus message (durable_apply_fn): sub-batches already
 * seen are skipped, the rest go into the store. Live, refusals go to
 * tally.rejected and deletes are announced; replaying (no bus yet), the
 * flusher writes the tombstones and refusals are only counted. */
static void
agg_apply(void *ctx, const uint8_t *data, size_t len, int64_t applied_us,
          int replaying)
{
    struct aggregator *a = ctx;
    struct codec_message msg;
    struct store_notice *notices;
    uint8_t *skip, *skip_entry;
    int64_t now_us;
    size_t n;
    char err[CODEC_ERR_MAX];

    if (codec_decode(data, len, &msg, err, sizeof(err)) != 0) {
        log_error("logged message does not decode: %s", err);
        return;
    }
    /* Keys are aged from when this instance first saw them (a message
     * held up behind a backlog is still protected for the whole horizon),
     * replayed keys from no earlier than this start (a restart long after
     * a crash still drops the redeliveries), and expiry runs before every
     * decision, so a replay decides exactly as the live run did. */
    now_us = replaying && applied_us < a->started_us ? a->started_us
                                                      : applied_us;
    dedup_expire(a->dedup, now_us);
    dedup_expire(a->batches, now_us);
    skip = xcalloc(msg.subbatch_count + 1, 1);
    skip_entry = xcalloc(msg.entry_count + 1, 1);
    for (size_t b = 0; b < msg.subbatch_count; b++) {
        const struct codec_subbatch *sb = &msg.subbatches[b];
        int64_t seen_us = sb->created_us > now_us ? sb->created_us : now_us;

        skip[b] = (uint8_t)dedup_seen(a->dedup, sb->dedup_key, seen_us,
                                      now_us);
        a->dedup_skipped += skip[b];
        if (skip[b] || !(sb->flags & CODEC_SB_ENVELOPE))
            continue;
        if (dedup_seen(a->batches, sb->batch_key, seen_us, now_us)) {
            skip[b] = 1;
            a->batches_skipped++;
            continue;
        }
        agg_forward(a, &msg, sb, skip_entry);
    }
    n = store_apply(a->store, &msg, skip, skip_entry, applied_us, &notices);
    for (size_t i = 0; i < n; i++) {
        if (!replaying)
            agg_notice(a, &notices[i]);
        else if (notices[i].tombstone)
            store_repair(a->store, notices[i].name, strlen(notices[i].name));
    }
    store_notices_free(notices, n);
    free(skip);
    free(skip_entry);
    codec_message_destroy(&msg);
    if (replaying) {
        if (a->replay_delay_ms > 0)          /* test hook */
            daemon_sleep_ms(a->replay_delay_ms);
        if (daemon_monotonic_us() - a->replay_polled_us
            >= AGG_REPLAY_POLL_US) {
            a->replay_polled_us = daemon_monotonic_us();
            agg_replay_poll(a);
        }
    }
}

/* A delivery of tally.agg.<i> kept until its record is durable. */
struct agg_pending {
    uint64_t tag;
    uint8_t *data;
    size_t len;
};

/* Logs the group of deliveries, syncs once, then applies and acks each.
 * 0, or -1 when the log failed: nothing is acked (the broker delivers
 * them again to the next connection) and the caller reconnects. */
static int
agg_commit(struct aggregator *a, struct agg_pending *pending, size_t n)
{
    int64_t now = daemon_now_us();
    char err[DURABLE_ERR_MAX];
    size_t i;

    for (i = 0; i < n; i++)
        if (durable_log(a->durable, pending[i].data, pending[i].len, now, err,
                        sizeof(err)) != 0)
            break;
    daemon_crash_point("logged");
    if (i < n || durable_sync(a->durable, err, sizeof(err)) != 0) {
        log_error("write-ahead log: %s; nothing acked, reconnecting", err);
        a->log_errors++;
        snprintf(a->log_failure, sizeof(a->log_failure), "%s", err);
        a->log_failing = 1;
        return -1;
    }
    a->log_failing = 0;
    daemon_crash_point("synced");
    for (i = 0; i < n; i++) {
        agg_apply(a, pending[i].data, pending[i].len, now, 0);
        daemon_crash_point("applied");
    }
    for (i = 0; i < n; i++) {       /* all applied first, as a replay would */
        if (bus_ack(a->bus, pending[i].tag, err, sizeof(err)) != 0) {
            log_error("bus: %s", err);
            return -1;
        }
    }
    return 0;
}

/* Answers one tally.rpc request. */
static void
agg_on_rpc(struct aggregator *a, const struct bus_event *ev)
{
    json_object *req = daemon_parse_json(ev->body, ev->len);
    json_object *reply = NULL;
    struct buf_writer out;
    struct bus_props p = {0};
    const char *op = daemon_json_string(req, "op");
    const char *name = daemon_json_string(req, "name");
    char err[BUS_ERR_MAX];

    buf_writer_create(&out, 256);
    if (op != NULL && strcmp(op, "get") == 0 && name != NULL) {
        uint64_t gen;

        if (!store_get(a->store, name, strlen(name), &out, &gen)) {
            reply = json_object_new_object();
            json_object_object_add(reply, "found",
                                   json_object_new_boolean(0));
            json_object_object_add(reply, "generation",
                                   json_object_new_int64((int64_t)gen));
        }
    } else if (op != NULL && strcmp(op, "list") == 0) {
        const char *prefix = daemon_json_string(req, "prefix");
        const char *after = daemon_json_string(req, "after");
        json_object *limit = NULL;
        int64_t l = AGG_RPC_LIMIT_MAX;

        if (json_object_object_get_ex(req, "limit", &limit)
            && json_object_is_type(limit, json_type_int))
            l = json_object_get_int64(limit);
        if (l < 1 || l > AGG_RPC_LIMIT_MAX)
            l = AGG_RPC_LIMIT_MAX;
        reply = store_list(a->store, prefix ? prefix : "", after ? after : "",
                           (size_t)l);
    } else if (op != NULL && strcmp(op, "status") == 0) {
        struct store_stats st;
        uint32_t depth = 0, consumers = 0;
        json_object *stats = json_object_new_object();

        store_stats(a->store, &st);
        reply = json_object_new_object();
        json_object_object_add(reply, "instance",
                               json_object_new_int64(a->opts.instance));
        json_object_object_add(reply, "version",
                               json_object_new_string(TALLY_VERSION));
        json_object_object_add(reply, "map_version",
                               json_object_new_int64((int64_t)a->map->version));
        json_object_object_add(reply, "slots", json_object_new_int64((int64_t)
            slotmap_slots_owned(a->map, (uint32_t)a->opts.instance)));
        json_object_object_add(reply, "metrics", json_object_new_int64(
            (int64_t)store_count(a->store)));
        json_object_object_add(reply, "metrics_max", json_object_new_int64(
            a->opts.metrics_max));
        if (bus_queue_depth(a->bus, a->agg_queue, &depth, &consumers, err,
                            sizeof(err)) == 0)
            json_object_object_add(reply, "queue_depth",
                                   json_object_new_int64(depth));
        pthread_mutex_lock(&a->flush_lock);
        json_object_object_add(reply, "last_flush", json_object_new_double(
            (double)a->last_flush_us / 1e6));
        json_object_object_add(stats, "flush_errors", json_object_new_int64(
            (int64_t)a->flush_errors));
        pthread_mutex_unlock(&a->flush_lock);
        json_object_object_add(reply, "replaying",
                               json_object_new_boolean(a->replaying));
        if (a->durable != NULL) {
            struct durable_stats ds;
            json_object *dd = json_object_new_object();

            durable_stats(a->durable, &ds);
            json_object_object_add(reply, "durable",
                                   json_object_new_boolean(!a->no_fsync));
            json_object_object_add(reply, "last_checkpoint",
                json_object_new_double((double)ds.snapshot_us / 1e6));
            json_object_object_add(dd, "wal_bytes",
                                   json_object_new_int64((int64_t)ds.wal_bytes));
            json_object_object_add(dd, "replayed_records", json_object_new_int64(
                (int64_t)ds.replayed_records));
            json_object_object_add(dd, "replay_ms", json_object_new_int64(
                ds.replay_us / 1000));
            json_object_object_add(dd, "snapshots",
                                   json_object_new_int64((int64_t)ds.snapshots));
            json_object_object_add(dd, "log_errors",
                                   json_object_new_int64((int64_t)a->log_errors));
            json_object_object_add(dd, "dedup_keys", json_object_new_int64(
                (int64_t)dedup_count(a->dedup)));
            json_object_object_add(dd, "dedup_memory_bytes",
                json_object_new_int64((int64_t)dedup_memory(a->dedup)));
            json_object_object_add(dd, "deduplicated_subbatches",
                json_object_new_int64((int64_t)a->dedup_skipped));
            json_object_object_add(dd, "stale_subbatches",
                json_object_new_int64((int64_t)dedup_stale(a->dedup)));
            json_object_object_add(dd, "batch_keys", json_object_new_int64(
                (int64_t)dedup_count(a->batches)));
            json_object_object_add(dd, "deduplicated_client_batches",
                json_object_new_int64((int64_t)a->batches_skipped));
            json_object_object_add(dd, "forwarded_subbatches",
                json_object_new_int64((int64_t)a->forwarded));
            json_object_object_add(dd, "forwards_pending",
                json_object_new_int64((int64_t)forward_pending(a->forward)));
            json_object_object_add(reply, "durability", dd);
        }
        json_object_object_add(stats, "events_applied", json_object_new_int64(
            (int64_t)st.events_applied));
        json_object_object_add(stats, "type_conflicts", json_object_new_int64(
            (int64_t)st.type_conflicts));
        json_object_object_add(stats, "stale_generation",
            json_object_new_int64((int64_t)st.stale_generation));
        json_object_object_add(stats, "tombstones", json_object_new_int64(
            (int64_t)st.tombstones));
        json_object_object_add(stats, "metrics_collected",
            json_object_new_int64((int64_t)st.metrics_collected));
        json_object_object_add(stats, "quota_refused", json_object_new_int64(
            (int64_t)st.quota_refused));
        json_object_object_add(stats, "bad_messages", json_object_new_int64(
            (int64_t)a->bad_messages));
        json_object_object_add(reply, "stats", stats);
    } else {
        reply = json_object_new_object();
        json_object_object_add(reply, "error",
                               json_object_new_string("unknown request"));
    }
    json_object_put(req);
    if (ev->reply_to[0] == '\0')
        goto done;
    p.correlation_id = ev->correlation_id;
    if (reply != NULL) {
        const char *text = json_object_to_json_string_ext(
            reply, JSON_C_TO_STRING_PLAIN);

        p.content_type = "application/json";
        bus_publish(a->bus, "", ev->reply_to, text, strlen(text), &p, 0, NULL,
                    err, sizeof(err));
    } else {
        p.content_type = "application/octet-stream";
        bus_publish(a->bus, "", ev->reply_to, out.data, out.len, &p, 0, NULL,
                    err, sizeof(err));
    }
done:
    json_object_put(reply);
    buf_writer_destroy(&out);
}

/* ---------------------------------------------------------------------- */
/* Connection                                                              */
/* ---------------------------------------------------------------------- */

/* Connects and declares the topology, and consumes the RPC and control
 * queues; with EVENTS also the instance queue (agg_consume_events later
 * otherwise: during a replay the instance answers status calls but takes
 * no deliveries). */
static int
agg_connect(struct aggregator *a, int events, char *err, size_t errlen)
{
    char name[AGG_TAG_MAX];
    uint32_t i = (uint32_t)a->opts.instance;

    snprintf(name, sizeof(name), "tally-aggregator %" PRIu32, i);
    a->events_consumed = 0;
    a->bus = bus_open(&a->bus_config, name, err, errlen);
    if (a->bus == NULL)
        return -1;
    if (bus_declare_topology(a->bus, err, errlen) != 0
        || bus_declare_instance_queue(a->bus, i, err, errlen) != 0
        || bus_declare_rpc_queue(a->bus, i, err, errlen) != 0
        || bus_declare_private_queue(a->bus, BUS_EXCHANGE_CONTROL, "",
                                     a->control_queue, err, errlen) != 0
        || bus_consume(a->bus, a->rpc_queue, (uint16_t)a->opts.prefetch, err,
                       errlen) != 0
        || bus_consume(a->bus, a->control_queue, (uint16_t)a->opts.prefetch,
                       err, errlen) != 0
        || (events && agg_consume_events(a, err, errlen) != 0)) {
        bus_close(a->bus);
        a->bus = NULL;
        return -1;
    }
    return 0;
}

/* Logs the keys of forwards the broker confirmed, so a replay does not
 * send them again (their targets may have forgotten them by then). */
static void
agg_log_forwards_done(struct aggregator *a)
{
    uint8_t *keys;
    size_t n = forward_take_confirmed(a->forward, &keys);
    char err[DURABLE_ERR_MAX];
    size_t i;

    for (i = 0; i < n; i++)
        if (durable_log_forward_done(a->durable, keys + i * FORWARD_KEY_SIZE,
                                     err, sizeof(err)) != 0)
            break;
    if (n > 0 && (i < n || durable_sync(a->durable, err, sizeof(err)) != 0))
        log_warn("cannot log confirmed forwards (sent again after a "
                 "restart): %s", err);
    free(keys);
}

/* Writes a snapshot when the interval passed or the log grew large. */
static void
agg_maybe_snapshot(struct aggregator *a)
{
    int64_t now = daemon_monotonic_us();
    char err[DURABLE_ERR_MAX];

    if (now - a->last_snapshot_us < a->opts.snapshot_interval_s * AGG_US_PER_S
        && durable_log_since_snapshot(a->durable) < AGG_SNAPSHOT_LOG_BYTES)
        return;
    a->last_snapshot_us = now;
    if (durable_snapshot(a->durable, a->store, err, sizeof(err)) != 0)
        log_error("snapshot: %s", err);
    else
        log_debug("snapshot written");
}

/* Consumes until the connection breaks or a stop is asked for. Deliveries
 * of the instance queue are gathered into groups: one log sync per group
 * (group commit), then apply and ack. */
static void
agg_serve(struct aggregator *a)
{
    struct agg_pending *pending = xcalloc(AGG_GROUP_MAX, sizeof(*pending));
    char err[BUS_ERR_MAX];

    while (!daemon_stopping) {
        struct pollfd pfd = {bus_fd(a->bus), POLLIN, 0};
        size_t n = 0, bytes = 0;
        int rc = 0, failed = 0;

        if (!bus_has_buffered(a->bus) && poll(&pfd, 1, AGG_POLL_MS) < 0)
            continue;
        while (n < AGG_GROUP_MAX && bytes < AGG_GROUP_BYTES) {
            struct bus_event ev;
            struct codec_message msg;
            char why[CODEC_ERR_MAX];

            rc = bus_wait(a->bus, 0, &ev, err, sizeof(err));
            if (rc <= 0)
                break;
            if (ev.kind != BUS_EVENT_DELIVERY) {
                bus_event_release(a->bus, &ev);
                continue;
            }
            if (strcmp(ev.consumer_tag, a->agg_queue) != 0) {
                if (strcmp(ev.consumer_tag, a->rpc_queue) == 0)
                    agg_on_rpc(a, &ev);
                bus_ack(a->bus, ev.delivery_tag, err, sizeof(err));
            } else if (codec_decode(ev.body, ev.len, &msg, why,
                                    sizeof(why)) != 0) {
                char reason[CODEC_ERR_MAX + 32];

                a->bad_messages++;
                snprintf(reason, sizeof(reason), "bad bus message: %s", why);
                log_warn("%s", reason);
                agg_reject(a, ev.body, ev.len, "application/octet-stream",
                           reason);
                bus_ack(a->bus, ev.delivery_tag, err, sizeof(err));
            } else {
                codec_message_destroy(&msg);
                pending[n].tag = ev.delivery_tag;
                pending[n].data = xmalloc(ev.len);
                memcpy(pending[n].data, ev.body, ev.len);
                pending[n].len = ev.len;
                bytes += ev.len;
                n++;
            }
            bus_event_release(a->bus, &ev);
        }
        if (rc < 0)
            log_error("bus: %s", err);
        else if (n > 0)
            failed = agg_commit(a, pending, n) != 0;
        for (size_t i = 0; i < n; i++)
            free(pending[i].data);
        if (rc < 0 || failed || bus_broken(a->bus))
            break;
        forward_poll(a->forward);
        agg_log_forwards_done(a);
        agg_maybe_snapshot(a);
    }
    free(pending);
}

static int
agg_ready(void *ctx, char *why, size_t whylen)
{
    struct aggregator *a = ctx;

    if (a->ready)
        return 1;
    if (a->replaying)
        snprintf(why, whylen, "replaying the write-ahead log");
    else if (a->log_failing)
        snprintf(why, whylen, "write-ahead log failing: %s", a->log_failure);
    else
        snprintf(why, whylen, "not connected to RabbitMQ");
    return 0;
}

static void
agg_no_rpc(struct http_request *req, const char *body, size_t len, void *ctx)
{
    static const char answer[] =
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":"
        "\"Method not found\",\"data\":\"aggregators serve no JSON-RPC; "
        "ask a frontend\"},\"id\":null}";

    (void)body;
    (void)len;
    (void)ctx;
    http_request_respond(req, 200, answer, sizeof(answer) - 1);
}

int
main(int argc, char **argv)
{
    struct aggregator a;
    struct http_server *http = NULL;
    pthread_t flusher;
    char err[DAEMON_ERR_MAX], tag[AGG_TAG_MAX];
    long backoff = DAEMON_RECONNECT_MIN_MS;
    int rc, status = 1;

    memset(&a, 0, sizeof(a));
    rc = config_parse(agg_table, AGG_TABLE_SIZE, &a.opts, argc, argv, stdout,
                      err, sizeof(err));
    if (rc != CONFIG_RUN) {
        if (rc < 0)
            fprintf(stderr, "tally-aggregator: %s\n", err);
        config_free(agg_table, AGG_TABLE_SIZE, &a.opts);
        return rc < 0 ? 2 : 0;
    }
    snprintf(tag, sizeof(tag), "aggregator %ld", a.opts.instance);
    a.map = daemon_setup(&a.opts.common, tag, err, sizeof(err));
    if (a.map == NULL || a.opts.instance < 0
        || (uint32_t)a.opts.instance >= a.map->instances) {
        fprintf(stderr, "tally-aggregator: %s\n", a.map == NULL ? err
                : "--instance must name an instance of the slot map");
        goto out;
    }
    a.cache = cache_create(a.opts.common.memcached, CACHE_TIMEOUT_MS_DEFAULT,
                           err, sizeof(err));
    if (a.cache == NULL) {
        fprintf(stderr, "tally-aggregator: memcached: %s\n", err);
        goto out;
    }
    daemon_catch_signals();
    daemon_bus_config(&a.opts.common, &a.bus_config);
    snprintf(a.agg_queue, sizeof(a.agg_queue), "tally.agg.%ld",
             a.opts.instance);
    snprintf(a.rpc_queue, sizeof(a.rpc_queue), "tally.rpc.%ld",
             a.opts.instance);
    a.store = store_create(a.opts.idle_expiry_s, (uint64_t)a.opts.metrics_max,
                           daemon_now_us());
    pthread_mutex_init(&a.flush_lock, NULL);
    if (a.opts.http_port != 0) {
        struct http_config hc = {0};

        hc.address = a.opts.common.http_address;
        hc.port = (int)a.opts.http_port;
        http = http_server_start(&hc, agg_no_rpc, agg_ready, &a, err,
                                 sizeof(err));
        if (http == NULL) {
            fprintf(stderr, "tally-aggregator: http: %s\n", err);
            goto out_store;
        }
    }
    log_info("instance %ld of %u, %zu slots, map version %" PRIu64,
             a.opts.instance, a.map->instances,
             slotmap_slots_owned(a.map, (uint32_t)a.opts.instance),
             a.map->version);
    a.no_fsync = getenv(AGG_UNSAFE_NO_FSYNC_ENV) != NULL
                 && strcmp(getenv(AGG_UNSAFE_NO_FSYNC_ENV), "1") == 0;
    if (a.no_fsync)
        log_warn("UNSAFE: %s=1, the write-ahead log is not fsynced; for "
                 "tests and benchmarks only", AGG_UNSAFE_NO_FSYNC_ENV);
    a.replaying = 1;
    a.started_us = daemon_now_us();
    if (getenv(AGG_REPLAY_DELAY_ENV) != NULL)
        a.replay_delay_ms = strtol(getenv(AGG_REPLAY_DELAY_ENV), NULL, 10);
    if (agg_connect(&a, 0, err, sizeof(err)) != 0)
        log_warn("bus: %s (status calls go unanswered during the replay)",
                 err);
    log_info("replaying %s", a.opts.data_dir);
    snprintf(tag, sizeof(tag), "tally-aggregator %ld forwarder",
             a.opts.instance);
    a.forwarder = publisher_create(&a.bus_config, a.map,
                                   DAEMON_BUS_TIMEOUT_MS, tag);
    a.forward = forward_create(a.forwarder);
    forward_hold(a.forward, 1);             /* until the replay is done */
    a.durable = durable_open(a.opts.data_dir, a.store, a.forward,
                             a.opts.dedup_horizon_s * AGG_US_PER_S,
                             a.no_fsync, agg_apply, &a, &a.dedup,
                             &a.batches, err, sizeof(err));
    if (a.durable == NULL) {
        log_error("cannot open %s: %s", a.opts.data_dir, err);
        goto out_http;
    }
    {
        struct durable_stats ds;

        durable_stats(a.durable, &ds);
        log_info("replayed %" PRIu64 " records (%" PRIu64 " bytes) in %"
                 PRId64 " ms; %zu metrics; %" PRIu64 " torn bytes cut off",
                 ds.replayed_records, ds.replayed_bytes,
                 ds.replay_us / 1000, store_count(a.store),
                 ds.truncated_bytes);
    }
    a.replaying = 0;
    forward_hold(a.forward, 0);
    a.last_snapshot_us = daemon_monotonic_us();
    pthread_create(&flusher, NULL, agg_flusher, &a);
    while (!daemon_stopping) {
        if (a.bus != NULL && !a.events_consumed
            && agg_consume_events(&a, err, sizeof(err)) != 0) {
            log_warn("bus: %s", err);
            bus_close(a.bus);
            a.bus = NULL;
        }
        if (a.bus == NULL && agg_connect(&a, 1, err, sizeof(err)) != 0) {
            log_warn("bus: %s (retrying in %ld ms)", err, backoff);
            daemon_sleep_ms(backoff);
            backoff = daemon_backoff_next(backoff, DAEMON_RECONNECT_MAX_MS);
            continue;
        }
        backoff = DAEMON_RECONNECT_MIN_MS;
        log_info("consuming %s", a.agg_queue);
        a.ready = 1;
        agg_serve(&a);
        a.ready = 0;
        bus_close(a.bus);
        a.bus = NULL;
        if (a.log_failing)          /* e.g. a full disk: wait for room */
            daemon_sleep_ms(AGG_LOG_RETRY_MS);
    }
    log_info("stopping");
    pthread_join(flusher, NULL);
    agg_flush(&a);
    publisher_stop(a.forwarder);        /* unconfirmed forwards stay pending */
    if (durable_snapshot(a.durable, a.store, err, sizeof(err)) != 0)
        log_error("final snapshot: %s", err);
    durable_close(a.durable);
    status = 0;
out_http:
    if (a.bus != NULL) {
        bus_close(a.bus);
        a.bus = NULL;
    }
    if (http != NULL)
        http_server_stop(http);
out_store:
    pthread_mutex_destroy(&a.flush_lock);
    store_destroy(a.store);
out:
    publisher_destroy(a.forwarder);
    forward_destroy(a.forward);
    if (a.cache != NULL)
        cache_destroy(a.cache);
    slotmap_destroy(a.map);
    config_free(agg_table, AGG_TABLE_SIZE, &a.opts);
    return status;
}
