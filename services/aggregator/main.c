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
 *   flusher thread   every flush interval: store_collect --> cache_put_many
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
#include "metric.h"
#include "move.h"
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
    long cache_format;
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
    {"cache-format", CONFIG_INT, offsetof(struct agg_options, cache_format),
     "2", CODEC_CACHE_VERSION_OLDEST, CODEC_CACHE_VERSION,
     "cache value version to write; 1 while frontends of a release "
     "before it still read the cache (schema/cache-value.md)"},
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
    struct move *move;             /* the slot map and moves; main thread */
    uint64_t map_version;          /* of the map, for the flusher (atomic) */
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
    uint64_t stragglers;           /* sub-batches routed under an old map */
    uint64_t hop_refused;          /* entries refused by the hop limit */
    uint64_t newer_maps;           /* sub-batches under a newer map */
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
    size_t n = store_collect(a->store, now,
                             __atomic_load_n(&a->map_version,
                                             __ATOMIC_RELAXED), &w);
    struct cache_write *writes = xcalloc(n, sizeof(*writes));
    uint64_t errors = 0;
    char err[CACHE_ERR_MAX];

    /* All in one batch: a few round trips per memcached server rather than
     * some per value. */
    for (size_t i = 0; i < n; i++)
        writes[i] = (struct cache_write){
            .name = w[i].name, .name_len = w[i].name_len,
            .key = w[i].key, .key_len = w[i].key_len,
            .value = w[i].value, .len = w[i].len, .expire_s = w[i].expire_s,
        };
    if (cache_put_many(a->cache, writes, n, err, sizeof(err)) != 0)
        log_warn("flush: %s (retried at the next flush)", err);
    for (size_t i = 0; i < n; i++) {
        if (writes[i].status >= 0)
            continue;
        store_repair(a->store, w[i].name, w[i].name_len);
        errors++;
    }
    free(writes);
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

        h.version = (uint8_t)a->opts.cache_format;
        h.generation = n->generation;
        h.map_version = move_map(a->move)->version;
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

/* Refuses the entries agg_send_on would have sent (the hop limit: maps
 * that disagree would bounce them forever) to tally.rejected. */
static void
agg_refuse_hops(struct aggregator *a, const struct codec_message *msg,
                const struct codec_subbatch *sb, uint32_t target, int whole,
                uint8_t *skip_entry)
{
    const struct slotmap *map = move_map(a->move);

    for (size_t i = 0; i < sb->entry_count; i++) {
        const struct codec_entry *e = &sb->entries[i];
        json_object *o;
        const char *text;
        char reason[STORE_REASON_MAX];

        if (e->kind == CODEC_ENTRY_DEDUP_KEYS || e->kind == CODEC_ENTRY_MAP
            || (!whole && slotmap_owner(map, e->slot) != target))
            continue;
        skip_entry[e - msg->entries] = 1;
        snprintf(reason, sizeof(reason), "hop limit reached: slot %u went "
                 "through %u instances (map version %" PRIu64 " here)",
                 e->slot, (unsigned)sb->hop_count, map->version);
        o = json_object_new_object();
        json_object_object_add(o, "name", json_object_new_string_len(
            e->name, (int)e->name_len));
        json_object_object_add(o, "type", json_object_new_string(
            event_type_name((enum event_type)e->type)
                ? event_type_name((enum event_type)e->type) : "any"));
        json_object_object_add(o, "events", json_object_new_int64(
            e->kind == CODEC_ENTRY_PARTIAL ? (int64_t)e->u.partial.event_count
            : e->kind == CODEC_ENTRY_EVENT));
        json_object_object_add(o, "reason", json_object_new_string(reason));
        text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        if (!a->replaying)          /* published when it happened */
            agg_reject(a, text, strlen(text), "application/json", reason);
        json_object_put(o);
        a->hop_refused++;
    }
}

/* Sends entries of SB on to TARGET as one sub-batch (schema/dedup.md,
 * schema/resharding.md): every entry when WHOLE, else those of TARGET's
 * slots. Its key is derived from SEED and TARGET, so sending it twice (a
 * crash, a replay) is applied once; its hop count grows by one. The
 * entries sent are marked in SKIP_ENTRY. Past the hop limit the entries
 * are refused to tally.rejected instead (maps that disagree). */
static void
agg_send_on(struct aggregator *a, const struct codec_message *msg,
            const struct codec_subbatch *sb, uint32_t target, int whole,
            const uint8_t *seed_key, uint8_t flags, uint8_t *skip_entry)
{
    const struct slotmap *map = move_map(a->move);
    uint32_t self = (uint32_t)a->opts.instance;
    struct codec_subbatch fwd;
    struct codec_encoder enc;
    struct buf_writer out;
    uint8_t seed[CODEC_KEY_SIZE + sizeof(uint32_t)];
    size_t put = 0, len;
    char origin[AGG_TAG_MAX];

    memset(&fwd, 0, sizeof(fwd));
    memcpy(seed, seed_key, CODEC_KEY_SIZE);
    for (size_t i = 0; i < sizeof(uint32_t); i++)
        seed[CODEC_KEY_SIZE + i] = (uint8_t)(target >> (8 * i));
    hash_128_bytes(hash_128(seed, sizeof(seed)), fwd.dedup_key);
    fwd.flags = flags;
    memcpy(fwd.batch_key, sb->batch_key, CODEC_KEY_SIZE);
    snprintf(origin, sizeof(origin), "agg-%u", self);
    fwd.origin = origin;
    fwd.origin_len = strlen(origin);
    fwd.map_version = map->version;
    fwd.hop_count = (uint8_t)(sb->hop_count + 1);
    fwd.created_us = sb->created_us;
    if (fwd.hop_count > CODEC_HOP_MAX) {
        agg_refuse_hops(a, msg, sb, target, whole, skip_entry);
        return;
    }
    buf_writer_create(&out, 1024);
    codec_message_begin(&enc, &out);
    if (codec_subbatch_begin(&enc, &fwd) != 0) {
        buf_writer_destroy(&out);
        log_error("cannot forward to instance %u: %s", target, enc.err);
        return;
    }
    for (size_t i = 0; i < sb->entry_count; i++) {
        const struct codec_entry *e = &sb->entries[i];

        if (e->kind == CODEC_ENTRY_DEDUP_KEYS || e->kind == CODEC_ENTRY_MAP
            || (!whole && slotmap_owner(map, e->slot) != target))
            continue;
        if (codec_put_entry(&enc, e) == 0) {
            skip_entry[e - msg->entries] = 1;
            put++;
        } else {
            log_error("cannot forward an entry (applied here): %s", enc.err);
        }
    }
    if (put == 0 || codec_subbatch_end(&enc) != 0
        || codec_message_end(&enc) != 0) {
        if (put > 0) {              /* not sent: apply them here instead */
            log_error("cannot forward to instance %u (applied here): %s",
                      target, enc.err);
            for (size_t i = 0; i < sb->entry_count; i++)
                skip_entry[&sb->entries[i] - msg->entries] = 0;
        }
        buf_writer_destroy(&out);
        return;
    }
    {
        uint8_t *data = buf_writer_release(&out, &len);

        forward_add(a->forward, target, fwd.dedup_key, data, len);
    }
    a->forwarded++;
}

/* Entries of SB this instance does not own under its map go on to their
 * owners: those of a client batch's envelope (keyed by the batch key) or
 * stragglers routed under an older map (keyed by the sub-batch key). */
static void
agg_forward(struct aggregator *a, const struct codec_message *msg,
            const struct codec_subbatch *sb, uint8_t *skip_entry)
{
    const struct slotmap *map = move_map(a->move);
    uint32_t self = (uint32_t)a->opts.instance;
    int envelope = (sb->flags & CODEC_SB_ENVELOPE) != 0;
    uint8_t flags = envelope ? CODEC_SB_FORWARDED | CODEC_SB_HAS_BATCH_KEY
                             : (uint8_t)(sb->flags | CODEC_SB_FORWARDED);
    uint8_t *targets = xcalloc(map->instances, 1);

    for (size_t i = 0; i < sb->entry_count; i++) {
        const struct codec_entry *e = &sb->entries[i];
        uint32_t owner = slotmap_owner(map, e->slot);

        if (e->kind != CODEC_ENTRY_DEDUP_KEYS && e->kind != CODEC_ENTRY_MAP
            && owner != self)
            targets[owner] = 1;
    }
    for (uint32_t target = 0; target < map->instances; target++) {
        if (!targets[target])
            continue;
        agg_send_on(a, msg, sb, target, 0,
                    envelope ? sb->batch_key : sb->dedup_key, flags,
                    skip_entry);
        if (!envelope)
            a->stragglers++;
    }
    free(targets);
}

/* A MAP entry (the reshard's new map, in queue order with the events):
 * installed when newer; the slots given up are handed off. */
static void
agg_install_map(struct aggregator *a, const struct codec_entry *e,
                int64_t now_us)
{
    char why[SLOTMAP_ERR_MAX];
    struct slotmap *next = slotmap_parse((const char *)e->u.map.text,
                                         e->u.map.len, why, sizeof(why));
    uint8_t *leaving;
    uint64_t before = move_map(a->move)->version;

    if (next == NULL) {
        log_error("a slot map in the queue does not parse: %s", why);
        return;
    }
    daemon_crash_point("map-received");     /* logged, not yet applied */
    leaving = xcalloc(SLOTMAP_SLOTS, 1);
    if (move_install(a->move, next, leaving)) {
        const struct slotmap *map = move_map(a->move);
        struct move_stats ms;

        move_handoff(a->move, a->store, a->batches, a->forward, leaving,
                     now_us);
        move_stats(a->move, &ms);
        publisher_set_instances(a->forwarder, map->instances);
        __atomic_store_n(&a->map_version, map->version, __ATOMIC_RELAXED);
        log_info("slot map version %" PRIu64 " -> %" PRIu64 ": %zu slots "
                 "owned, %u handed off, %u taken over", before, map->version,
                 slotmap_slots_owned(map, (uint32_t)a->opts.instance),
                 ms.slots_out, ms.slots_in);
        daemon_crash_point("map-installed");
    }
    free(leaving);
}

/* A HANDOFF sub-batch from a slot's old owner: the slot's metrics merged,
 * its client batch keys added, its batch decisions unblocked. One made
 * under a map version this slot already had a handoff for is a copy sent
 * again, and dropped whole. */
static void
agg_receive_handoff(struct aggregator *a, const struct codec_message *msg,
                    const struct codec_subbatch *sb, int64_t applied_us,
                    int64_t now_us, uint8_t *skip)
{
    uint16_t slot = sb->entries[sb->entry_count - 1].slot;
    uint64_t metrics = 0;

    skip[sb - msg->subbatches] = 1;
    if (sb->map_version <= move_received_version(a->move, slot)) {
        log_info("handoff of slot %u (map version %" PRIu64 ") came again; "
                 "dropped", slot, sb->map_version);
        return;
    }
    if (move_owner(a->move, slot) != (uint32_t)a->opts.instance)
        log_warn("handoff of slot %u, which this instance does not own "
                 "(map version %" PRIu64 ")", slot,
                 move_map(a->move)->version);
    for (size_t i = 0; i < sb->entry_count; i++) {
        const struct codec_entry *e = &sb->entries[i];

        if (e->kind == CODEC_ENTRY_METRIC_STATE) {
            struct buf_reader in;
            struct metric *m;
            char err[STORE_REASON_MAX];

            buf_reader_init(&in, e->u.metric_state.metric,
                            e->u.metric_state.metric_len);
            m = metric_decode(&in, err, sizeof(err));
            if (m == NULL) {
                log_error("handoff: metric %.*s does not decode: %s",
                          (int)e->name_len, e->name, err);
                continue;
            }
            if (store_merge_metric(a->store, e->name, e->name_len,
                                   e->generation, m, applied_us, err,
                                   sizeof(err)) != 0)
                log_warn("handoff: %s", err);
            metrics++;
        } else if (e->kind == CODEC_ENTRY_DEDUP_KEYS) {
            /* aged as at the old owner; a replay shifts them by as much
             * as it shifts its own keys */
            for (size_t k = 0; k < e->u.dedup.count; k++)
                dedup_seen(a->batches, e->u.dedup.keys[k].key,
                           e->u.dedup.keys[k].created_us
                               + (now_us - applied_us), now_us);
            move_received(a->move, e->slot, sb->map_version);
        }
    }
    move_count_received(a->move, 1, metrics);
    daemon_crash_point("handoff-received");
}

/* Parks the client batch SB until its slot's batch keys arrive: a
 * message of that one sub-batch, applied later as if it came then. */
static void
agg_park(struct aggregator *a, const struct codec_subbatch *sb,
         uint16_t slot)
{
    struct codec_encoder enc;
    struct buf_writer out;

    buf_writer_create(&out, 1024);
    codec_message_begin(&enc, &out);
    if (codec_subbatch_begin(&enc, sb) == 0) {
        for (size_t i = 0; i < sb->entry_count; i++)
            if (codec_put_entry(&enc, &sb->entries[i]) != 0)
                break;
    }
    if (codec_subbatch_end(&enc) != 0 || codec_message_end(&enc) != 0)
        log_error("cannot park a client batch: %s", enc.err);
    else
        move_park(a->move, slot, out.data, out.len);
    buf_writer_destroy(&out);
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

/* Applies the store's part of sub-batches FROM..TO-1 of MSG (the others
 * untouched) and sends or counts their notices. */
static void
agg_apply_segment(struct aggregator *a, const struct codec_message *msg,
                  const uint8_t *skip, const uint8_t *skip_entry,
                  size_t from, size_t to, int64_t applied_us, int replaying)
{
    uint8_t *mask = xcalloc(msg->subbatch_count + 1, 1);
    struct store_notice *notices;
    size_t n;

    if (from >= to) {
        free(mask);
        return;
    }
    for (size_t b = 0; b < msg->subbatch_count; b++)
        mask[b] = b < from || b >= to || skip[b];
    n = store_apply(a->store, msg, mask, skip_entry, applied_us, &notices);
    for (size_t i = 0; i < n; i++) {
        if (!replaying)
            agg_notice(a, &notices[i]);
        else if (notices[i].tombstone)
            store_repair(a->store, notices[i].name, strlen(notices[i].name));
    }
    store_notices_free(notices, n);
    free(mask);
}

/* The body of agg_apply. PARKED: a client batch parked for its slot's
 * batch keys (its sub-batch key was checked when it came). A MAP entry is
 * a barrier: what came before it in the message is applied under the old
 * map, what follows under the new one. */
static void
agg_apply_message(struct aggregator *a, const uint8_t *data, size_t len,
                  int64_t applied_us, int replaying, int parked)
{
    uint32_t self = (uint32_t)a->opts.instance;
    struct codec_message msg;
    struct move_parked *ready;
    uint8_t *skip, *skip_entry;
    int64_t now_us;
    size_t segment = 0;
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
        uint16_t slot;

        if (!parked) {
            skip[b] = (uint8_t)dedup_seen(a->dedup, sb->dedup_key, seen_us,
                                          now_us);
            a->dedup_skipped += skip[b];
            if (skip[b])
                continue;
        }
        if (sb->entry_count > 0 && sb->entries[0].kind == CODEC_ENTRY_MAP) {
            agg_apply_segment(a, &msg, skip, skip_entry, segment, b,
                              applied_us, replaying);
            segment = b + 1;
            agg_install_map(a, &sb->entries[0], now_us);
            skip[b] = 1;
            continue;
        }
        if (sb->map_version > move_map(a->move)->version)
            a->newer_maps++;
        if (sb->flags & CODEC_SB_HANDOFF) {
            agg_receive_handoff(a, &msg, sb, applied_us, now_us, skip);
            continue;
        }
        if (!(sb->flags & CODEC_SB_ENVELOPE)) {
            agg_forward(a, &msg, sb, skip_entry);       /* stragglers */
            continue;
        }
        slot = slotmap_slot((const char *)sb->batch_key, CODEC_KEY_SIZE);
        if (move_owner(a->move, slot) != self) {
            /* routed under an older map: to the batch key's owner */
            agg_send_on(a, &msg, sb, move_owner(a->move, slot), 1,
                        sb->dedup_key, (uint8_t)(sb->flags
                                                 | CODEC_SB_FORWARDED),
                        skip_entry);
            skip[b] = 1;
            continue;
        }
        if (move_awaiting(a->move, slot)) {
            agg_park(a, sb, slot);
            skip[b] = 1;
            continue;
        }
        if (dedup_seen(a->batches, sb->batch_key, seen_us, now_us)) {
            skip[b] = 1;
            a->batches_skipped++;
            continue;
        }
        agg_forward(a, &msg, sb, skip_entry);
    }
    agg_apply_segment(a, &msg, skip, skip_entry, segment, msg.subbatch_count,
                      applied_us, replaying);
    free(skip);
    free(skip_entry);
    codec_message_destroy(&msg);
    if (parked)
        return;
    /* Batches whose keys have come; one at a time, never nested. */
    while ((ready = move_release(a->move)) != NULL) {
        agg_apply_message(a, ready->data, ready->len, applied_us, replaying,
                          1);
        move_parked_free(ready);
    }
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

/* Applies one logged bus message (durable_apply_fn): sub-batches already
 * seen are skipped, the rest go into the store. Live, refusals go to
 * tally.rejected and deletes are announced; replaying (no bus yet), the
 * flusher writes the tombstones and refusals are only counted. */
static void
agg_apply(void *ctx, const uint8_t *data, size_t len, int64_t applied_us,
          int replaying)
{
    agg_apply_message(ctx, data, len, applied_us, replaying, 0);
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

/* The tag of a forward (forward_create): 1 for a HANDOFF message. */
static int
agg_is_handoff(const uint8_t *data, size_t len)
{
    struct codec_message msg;
    char err[CODEC_ERR_MAX];
    int handoff;

    if (codec_decode(data, len, &msg, err, sizeof(err)) != 0)
        return 0;
    handoff = msg.subbatch_count > 0
              && (msg.subbatches[0].flags & CODEC_SB_HANDOFF) != 0;
    codec_message_destroy(&msg);
    return handoff;
}

/* The "moves" object of the status answer (schema/resharding.md). */
static json_object *
agg_moves_status(struct aggregator *a)
{
    json_object *o = json_object_new_object();
    struct move_stats ms;
    size_t awaiting = move_awaiting_count(a->move);
    size_t handoffs = forward_pending_tagged(a->forward, 1);

    move_stats(a->move, &ms);
    json_object_object_add(o, "from_version",
                           json_object_new_int64((int64_t)ms.from_version));
    json_object_object_add(o, "to_version",
                           json_object_new_int64((int64_t)ms.to_version));
    json_object_object_add(o, "slots_out",
                           json_object_new_int64(ms.slots_out));
    json_object_object_add(o, "slots_in", json_object_new_int64(ms.slots_in));
    json_object_object_add(o, "awaiting_slots",
                           json_object_new_int64((int64_t)awaiting));
    json_object_object_add(o, "parked_batches", json_object_new_int64(
        (int64_t)move_parked_count(a->move)));
    json_object_object_add(o, "handoffs_sent",
                           json_object_new_int64((int64_t)ms.handoffs_sent));
    json_object_object_add(o, "handoffs_received", json_object_new_int64(
        (int64_t)ms.handoffs_received));
    json_object_object_add(o, "handoffs_pending",
                           json_object_new_int64((int64_t)handoffs));
    json_object_object_add(o, "metrics_sent",
                           json_object_new_int64((int64_t)ms.metrics_sent));
    json_object_object_add(o, "metrics_received", json_object_new_int64(
        (int64_t)ms.metrics_received));
    json_object_object_add(o, "stragglers_forwarded",
                           json_object_new_int64((int64_t)a->stragglers));
    json_object_object_add(o, "hop_refused",
                           json_object_new_int64((int64_t)a->hop_refused));
    json_object_object_add(o, "newer_map_subbatches",
                           json_object_new_int64((int64_t)a->newer_maps));
    json_object_object_add(o, "in_progress", json_object_new_boolean(
        awaiting > 0 || handoffs > 0));
    return o;
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
    } else if (op != NULL && strcmp(op, "map") == 0) {
        struct buf_writer text;

        buf_writer_create(&text, 1024);
        slotmap_format(move_map(a->move), &text);
        reply = json_object_new_object();
        json_object_object_add(reply, "version", json_object_new_int64(
            (int64_t)move_map(a->move)->version));
        json_object_object_add(reply, "text", json_object_new_string_len(
            (const char *)text.data, (int)text.len));
        buf_writer_destroy(&text);
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
        json_object_object_add(reply, "map_version", json_object_new_int64(
            (int64_t)move_map(a->move)->version));
        json_object_object_add(reply, "slots", json_object_new_int64((int64_t)
            slotmap_slots_owned(move_map(a->move),
                                (uint32_t)a->opts.instance)));
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
        json_object_object_add(reply, "moves", agg_moves_status(a));
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
    else if (n > 0)
        daemon_crash_point("forwards-logged");
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

    if (a->ready && publisher_ready(a->forwarder))
        return 1;
    if (a->ready)       /* its rejections and announcements would wait */
        snprintf(why, whylen, "the forwarder is not connected to RabbitMQ");
    else if (a->replaying)
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
    struct slotmap *start;
    const struct slotmap *map;
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
    start = daemon_setup(&a.opts.common, tag, err, sizeof(err));
    if (start == NULL || a.opts.instance < 0) {
        fprintf(stderr, "tally-aggregator: %s\n", start == NULL ? err
                : "--instance is required");
        slotmap_destroy(start);
        goto out;
    }
    /* An instance outside the map is a new one: it owns nothing until a
     * reshard's map reaches it through its queue. */
    a.move = move_create(start, (uint32_t)a.opts.instance);
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
                           daemon_now_us(), (int)a.opts.cache_format);
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
    a.forwarder = publisher_create(&a.bus_config, start->instances,
                                   DAEMON_BUS_TIMEOUT_MS, tag);
    a.forward = forward_create(a.forwarder, agg_is_handoff);
    forward_hold(a.forward, 1);             /* until the replay is done */
    a.durable = durable_open(a.opts.data_dir, a.store, a.forward, a.move,
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
    map = move_map(a.move);
    a.map_version = map->version;
    publisher_set_instances(a.forwarder, map->instances);
    log_info("instance %ld: %zu slots of map version %" PRIu64 " (%u "
             "instances)%s", a.opts.instance,
             slotmap_slots_owned(map, (uint32_t)a.opts.instance),
             map->version, map->instances,
             (uint32_t)a.opts.instance < map->instances ? ""
             : "; outside the map, it waits for a reshard");
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
    move_destroy(a.move);
    config_free(agg_table, AGG_TABLE_SIZE, &a.opts);
    return status;
}
