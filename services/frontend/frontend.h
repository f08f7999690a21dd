/*
 * frontend: the shared state of tally-frontend and the functions its files
 * export to each other.
 *
 *   main.c       options, startup, shutdown, the HTTP handler
 *   record.c     events.record and ingest: validate, type-check, fold
 *                into partial states, one sub-batch per owning instance
 *   query.c      metrics.query, metrics.list, metrics.delete,
 *                cluster.status, rpc.discover
 *   inbox.c      the consuming connection: tally.ingest, control
 *                messages, replies to tally.rpc requests
 *   meta.c       the short local cache of metric types and generations
 *   src/publisher.c  the publishing connection (group commit, confirms)
 *
 * A call with a batch id (an ingest message with a message_id) travels as
 * one envelope to the owner of the batch key's slot (schema/dedup.md).
 */
#ifndef TALLY_FRONTEND_H
#define TALLY_FRONTEND_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <json-c/json.h>

#include "auth.h"
#include "bus.h"
#include "cache.h"
#include "codec.h"
#include "daemon.h"
#include "event.h"
#include "jsonrpc.h"
#include "publisher.h"
#include "ratelimit.h"
#include "slotmap.h"

#define FRONTEND_ORIGIN_MAX 64
#define FRONTEND_REASON_MAX 256
#define FRONTEND_MIB (1024 * 1024)

/* Application error codes of whole calls (schema/errors.md). */
#define FRONTEND_ERR_NOT_QUEUED 1201     /* events not durably queued */
#define FRONTEND_ERR_INSTANCE 1202       /* an owner did not answer */
#define FRONTEND_ERR_TOO_MANY_EVENTS 1203
#define FRONTEND_ERR_MAP 1204            /* a reshard's map not queued */
#define FRONTEND_ERR_MOVING 1205         /* a reshard while slots move */
#define FRONTEND_ERR_RATE 1107           /* --rate-limit, HTTP 429 */

struct frontend_options {
    struct daemon_options common;
    long http_port;
    long http_threads;
    long body_max;
    long batch_max;
    long events_max;
    char *cors_origins;
    char *tls_cert;
    char *tls_key;
    long rpc_timeout_ms;
    long confirm_timeout_ms;
    long meta_ttl_ms;
    long query_cache;                   /* metrics kept decoded; 0 = off */
    long query_cache_mb;                /* ... and their values' MiB */
    char *openrpc;
    char *tokens;
    long rate_limit;
    long connections_max;
    long connections_per_ip;
};

struct meta;
struct inbox;
struct qcache;

struct frontend {
    struct frontend_options opts;
    struct slotmap *map;                /* read with frontend_map */
    pthread_mutex_t map_lock;           /* guards installing a map */
    struct slotmap **old_maps;          /* kept until exit */
    size_t old_map_count;
    uint64_t map_hint;                  /* announced version (atomic) */
    pthread_mutex_t reshard_lock;       /* one cluster.reshard at a time */
    struct bus_config bus_config;
    struct cache *cache;
    struct publisher *publisher;
    struct inbox *inbox;
    struct meta *meta;
    struct qcache *qcache;              /* NULL: --query-cache 0 */
    json_object *openrpc;               /* rpc.discover answer */
    struct auth *auth;                  /* NULL: auth off (loopback) */
    struct ratelimit *ratelimit;        /* NULL: --rate-limit 0 */
    char origin[FRONTEND_ORIGIN_MAX];   /* codec origin of sub-batches */
    struct jsonrpc_limits limits;
    pthread_mutex_t stop_lock;
    int stopping;                       /* new requests get 503 */
};

/* One HTTP request's JSON-RPC batch in flight. Only the dispatching
 * thread touches the batch while it dispatches; a call that finishes later
 * (events.record after broker confirms) is handed in with exchange_complete
 * and applied by whichever thread finishes last, which then answers the
 * HTTP request. LOCK guards only the fields below it, never a wait. */
struct exchange_done;
struct exchange {
    struct frontend *fe;
    struct http_request *http;
    struct jsonrpc_batch *batch;
    enum auth_verdict verdict;       /* of the request's token */
    const struct auth_token *token;  /* when granted; NULL otherwise and
                                        with auth off */
    pthread_mutex_t lock;
    int dispatching;
    size_t outstanding;              /* calls that will finish later */
    struct exchange_done *done;      /* their answers, not yet applied */
};
/* A handler that returns JSONRPC_PENDING calls this first. */
void exchange_expect(struct exchange *x);
/* Completes CALL of X with RESULT (taken) or, when RESULT is NULL, with
 * error CODE, MESSAGE and DATA (taken); from any thread, once per
 * exchange_expect. */
void exchange_complete(struct exchange *x, struct jsonrpc_call *call,
                       json_object *result, int code, const char *message,
                       json_object *data);

/* ---- meta.c: what a frontend knows about a metric ------------------- */
struct meta_info {
    int exists;               /* an open value or the owner said so */
    int deleted;              /* a tombstone */
    enum event_type type;     /* when exists */
    uint64_t generation;
};
struct meta *meta_create(long ttl_ms);
void meta_destroy(struct meta *m);
/* What is known about NAME, from the local cache or else memcached
 * (cached for the TTL). A cache error counts as "unknown" (exists 0). */
void meta_lookup(struct frontend *fe, const char *name, size_t len,
                 struct meta_info *out);
/* meta_lookup of the N names NAMES[i] (LENS[i] bytes; borrowed) into
 * OUT[i], with one multi-get per memcached server for all the names not
 * cached. */
void meta_lookup_many(struct frontend *fe, const char *const *names,
                      const size_t *lens, size_t n, struct meta_info *out);
/* Drops what is cached about NAME (a control message said it changed). */
void meta_forget(struct meta *m, const char *name, size_t len);

/* ---- inbox.c -------------------------------------------------------- */
struct inbox *inbox_create(struct frontend *fe);
void inbox_destroy(struct inbox *in);
int inbox_ready(struct inbox *in);
/* Sends REQUEST (JSON) to each of the N instances INSTANCES over
 * tally.rpc and waits up to the rpc timeout for all replies. REPLIES[i]
 * gets a new reply body (owned by the caller, free) and LENS[i] its
 * length, with BINARY[i] set for a non-JSON body; NULL when instance i
 * did not answer. */
void inbox_call(struct inbox *in, const uint32_t *instances, size_t n,
                const char *request, char **replies, size_t *lens,
                int *binary);
/* Watches for the control announcement that NAME was deleted with a
 * generation >= GENERATION, counting only announcements from now on.
 * Once started, DONE(CTX, 1) runs when it comes, or DONE(CTX, 0) after
 * TIMEOUT_MS (or at shutdown), exactly once, from the inbox thread or the
 * caller's. The caller owns the watch: inbox_watch_free after DONE. */
struct inbox_watch;
struct inbox_watch *inbox_watch_deleted(struct inbox *in, const char *name,
                                        uint64_t generation,
                                        void (*done)(void *ctx, int seen),
                                        void *ctx);
void inbox_watch_start(struct inbox *in, struct inbox_watch *w,
                       long timeout_ms);
void inbox_watch_free(struct inbox_watch *w);
/* Stops and joins the inbox thread (watches settle, later calls fail at
 * once); inbox_destroy then frees it. */
void inbox_stop(struct inbox *in);

/* ---- query.c: helpers for every method ------------------------------ */
/* Asks instances 0..M-1 the JSON REQUEST over tally.rpc; returns their
 * parsed replies (NULL where none came) in a new array of M. */
json_object **frontend_ask(struct frontend *fe, const char *request,
                           uint32_t m);
/* 0, or -1 with CALL answered -32602 when its params hold a member not in
 * ALLOWED (NULL-terminated). */
int frontend_known_params(struct jsonrpc_call *call,
                          const char *const *allowed);

/* ---- reshard.c ------------------------------------------------------ */
/* The map to route by; read it once per request. */
const struct slotmap *frontend_map(struct frontend *fe);
/* Takes a newer map from the instances if one has it; 1 if it did.
 * STRICT: only one that every instance of it and of the current map
 * holds. */
int frontend_map_refresh(struct frontend *fe, int strict);
/* Frees every map (at exit). */
void frontend_maps_free(struct frontend *fe);
int method_cluster_reshard(struct jsonrpc_call *call, void *ctx);

/* ---- record.c ------------------------------------------------------- */
/* Fills SB's header for a sub-batch made now (NOW_US) by this frontend
 * under MAP_VERSION: a random 128-bit key, the frontend's origin. */
void frontend_subbatch(struct frontend *fe, struct codec_subbatch *sb,
                       uint64_t map_version, int64_t now_us);
/* One encoded message of one sub-batch for an owning instance. */
struct record_part {
    uint32_t instance;
    uint8_t *data;                 /* owned */
    size_t len;
};

/* The outcome of validating and folding a batch of events. */
struct record {
    struct frontend *fe;
    const struct slotmap *map;     /* routed by */
    json_object *rejected;         /* array of {"index","code","message"} */
    size_t accepted;
    struct record_part *parts;     /* one per owning instance */
    size_t part_count;
    int failed;                    /* could not encode: nothing to send */
    char reason[FRONTEND_REASON_MAX];
    int has_batch_key;             /* send one envelope (schema/dedup.md) */
    uint8_t batch_key[16];
};
void record_init(struct record *r, struct frontend *fe);
/* Makes R one envelope with the batch key hash_128(KIND ":" ID): KIND is
 * "batch:" + scope for events.record, "ingest" for ingest message ids. */
void record_set_batch(struct record *r, const char *kind, const char *id,
                      size_t len);
/* Validates the events of EVENTS (a JSON array, borrowed), rejects bad
 * ones into R->rejected (by index), folds the rest into partial states and
 * encodes one part per owning instance. No I/O but the metadata lookups.
 * On an encoding failure R->failed is set and no part is kept. */
void record_events(struct record *r, json_object *events);
/* Frees the parts and the rejections. */
void record_destroy(struct record *r);
int method_events_record(struct jsonrpc_call *call, void *ctx);

/* ---- query.c -------------------------------------------------------- */
int method_metrics_query(struct jsonrpc_call *call, void *ctx);
int method_metrics_list(struct jsonrpc_call *call, void *ctx);
int method_metrics_delete(struct jsonrpc_call *call, void *ctx);
int method_cluster_status(struct jsonrpc_call *call, void *ctx);
int method_rpc_discover(struct jsonrpc_call *call, void *ctx);

#endif
