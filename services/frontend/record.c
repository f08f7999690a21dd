/*
 * record: events.record and the ingest path share this: validate each
 * event, reject known type conflicts by index, fold the rest into partial
 * states per (metric, 10-second granule) -- only within one request --
 * and hand one sub-batch per owning instance to the publisher.
 *
 *   events[] --event_from_json--> rejected[] (index, code, message)
 *     or evparse's events (already checked, no rejection)
 *            --meta_lookup------> 1010 type conflict
 *            --fold-------------> partial state per (name, granule)
 *            --codec------------> one message per instance --> publisher
 *                                 (a partial state, or the event itself
 *                                 when it is the granule's only one)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "codec.h"
#include "evparse.h"
#include "frontend.h"
#include "hash.h"
#include "log.h"
#include "state.h"
#include "window.h"
#include "xalloc.h"

#define RECORD_MESSAGE_MAX 160
/* Client batch ids are scoped by the token's name, so one client cannot
 * make another's batch look like a retry; without auth the scope is
 * empty and ids must be globally unique (schema/dedup.md). */
#define RECORD_BATCH_KIND "batch:"

/* Where the events of one call come from: a json-c array, decoded here by
 * event_from_json (which words the rejections), or the events evparse
 * decoded and checked (jsonrpc_call_events). */
struct record_source {
    json_object *array;            /* NULL: DECODED */
    const struct event *decoded;   /* borrowed */
    size_t count;
};

/* One metric named in the request. */
struct record_name {
    const char *name;          /* borrowed from the request */
    size_t len;
    struct meta_info info;     /* what the cluster knows (meta_lookup) */
    int typed;                 /* an event of it was accepted: */
    enum event_type type;      /* the type of the first one */
    uint64_t generation;
    uint16_t slot;
};

/* One partial state: a metric's events within one granule. */
struct record_fold {
    size_t name;               /* index into names */
    int64_t granule_s;
    int64_t first_us, last_us;
    uint64_t count;
    void *state;
    struct event first;        /* the first event folded (strings borrowed
                                  from the request) */
};

struct record_table {
    struct record_name *names;
    size_t name_count, name_cap;
    struct record_fold *folds;
    size_t fold_count, fold_cap;
    size_t *name_index;        /* open addressing: name index + 1 */
    size_t *fold_index;        /* fold index + 1 */
    size_t index_cap;          /* power of two, > 2 x entries */
};

static size_t
record_slot_of(const struct record_table *t, uint64_t hash)
{
    return (size_t)hash & (t->index_cap - 1);
}

static uint64_t
record_fold_hash(size_t name, int64_t granule)
{
    return hash_mix64((uint64_t)name * 0x9e3779b97f4a7c15ULL
                      ^ (uint64_t)granule);
}

static void
record_table_create(struct record_table *t, size_t events)
{
    memset(t, 0, sizeof(*t));
    t->index_cap = 16;
    while (t->index_cap < events * 2 + 2)
        t->index_cap *= 2;
    t->name_index = xcalloc(t->index_cap, sizeof(size_t));
    t->fold_index = xcalloc(t->index_cap, sizeof(size_t));
}

static void
record_table_destroy(struct record_table *t)
{
    for (size_t i = 0; i < t->fold_count; i++)
        state_ops_for(t->names[t->folds[i].name].type)
            ->destroy(t->folds[i].state);
    free(t->names);
    free(t->folds);
    free(t->name_index);
    free(t->fold_index);
}

/* The index of NAME in T, or -1 with *SLOT set to the free index slot. */
static long
record_find_name(struct record_table *t, const char *name, size_t len,
                 size_t *slot)
{
    size_t i = record_slot_of(t, hash_fnv1a64(name, len));

    for (; t->name_index[i] != 0; i = (i + 1) & (t->index_cap - 1)) {
        struct record_name *n = &t->names[t->name_index[i] - 1];

        if (n->len == len && memcmp(n->name, name, len) == 0)
            return (long)(t->name_index[i] - 1);
    }
    *slot = i;
    return -1;
}

static struct record_fold *
record_find_fold(struct record_table *t, size_t name, int64_t granule)
{
    size_t i = record_slot_of(t, record_fold_hash(name, granule));
    struct record_fold *f;

    for (; t->fold_index[i] != 0; i = (i + 1) & (t->index_cap - 1)) {
        f = &t->folds[t->fold_index[i] - 1];
        if (f->name == name && f->granule_s == granule)
            return f;
    }
    if (t->fold_count == t->fold_cap) {
        t->fold_cap = t->fold_cap ? t->fold_cap * 2 : 16;
        t->folds = xrealloc(t->folds, t->fold_cap * sizeof(*t->folds));
    }
    f = &t->folds[t->fold_count++];
    t->fold_index[i] = t->fold_count;
    memset(f, 0, sizeof(*f));
    f->name = name;
    f->granule_s = granule;
    f->first_us = INT64_MAX;
    f->last_us = INT64_MIN;
    f->state = state_ops_for(t->names[name].type)->create(NULL);
    return f;
}

static void
record_reject(struct record *r, size_t index, int code, const char *message)
{
    json_object *o = json_object_new_object();

    json_object_object_add(o, "index", json_object_new_int64((int64_t)index));
    json_object_object_add(o, "code", json_object_new_int(code));
    json_object_object_add(o, "message", json_object_new_string(message));
    json_object_array_add(r->rejected, o);
}

/* Adds the metric of each of the N events EVS[i] with VALID[i] to T,
 * untyped, and looks up what is known about all of them at once: one
 * multi-get per memcached server for those the frontend has not cached
 * (meta_lookup_many), instead of a round trip per metric. */
static void
record_lookup_meta(struct record *r, struct record_table *t,
                   const struct event *evs, const uint8_t *valid, size_t n)
{
    const char **names;
    size_t *lens;
    struct meta_info *infos;

    for (size_t i = 0; i < n; i++) {
        struct record_name *nm;
        size_t slot = 0;

        if (!valid[i]
            || record_find_name(t, evs[i].name, evs[i].name_len, &slot) >= 0)
            continue;
        if (t->name_count == t->name_cap) {
            t->name_cap = t->name_cap ? t->name_cap * 2 : 16;
            t->names = xrealloc(t->names, t->name_cap * sizeof(*t->names));
        }
        nm = &t->names[t->name_count++];
        t->name_index[slot] = t->name_count;
        memset(nm, 0, sizeof(*nm));
        nm->name = evs[i].name;
        nm->len = evs[i].name_len;
        nm->slot = slotmap_slot(evs[i].name, evs[i].name_len);
    }
    names = xcalloc(t->name_count, sizeof(*names));
    lens = xcalloc(t->name_count, sizeof(*lens));
    infos = xcalloc(t->name_count, sizeof(*infos));
    for (size_t k = 0; k < t->name_count; k++) {
        names[k] = t->names[k].name;
        lens[k] = t->names[k].len;
    }
    meta_lookup_many(r->fe, names, lens, t->name_count, infos);
    for (size_t k = 0; k < t->name_count; k++)
        t->names[k].info = infos[k];
    free(names);
    free(lens);
    free(infos);
}

/* Checks EV's type against what is known of its metric: the first event
 * of it accepted in this request, else what the cluster knows. Returns the
 * metric's index in T, or -1 with the event rejected. */
static long
record_name_for(struct record *r, struct record_table *t,
                const struct event *ev, size_t index)
{
    char msg[RECORD_MESSAGE_MAX];
    size_t slot = 0;
    /* record_lookup_meta added the metric of every valid event */
    long found = record_find_name(t, ev->name, ev->name_len, &slot);
    struct record_name *n = &t->names[found];
    enum event_type known;

    if (n->typed)
        known = n->type;
    else if (n->info.exists && !n->info.deleted)
        known = n->info.type;
    else
        known = ev->type;       /* nothing known: this event decides */
    if (known != ev->type) {
        snprintf(msg, sizeof(msg), "type conflict: metric \"%.*s\" is a %s, "
                 "not a %s", (int)ev->name_len, ev->name,
                 event_type_name(known), event_type_name(ev->type));
        record_reject(r, index, EVENT_ERR_TYPE_CONFLICT, msg);
        return -1;
    }
    if (!n->typed) {
        n->typed = 1;
        n->type = ev->type;
        n->generation = n->info.generation;
    }
    return found;
}

/* Orders rejections ({"index",...} objects) by their event's index. */
static int
record_by_index(const void *a, const void *b)
{
    json_object *index_a = NULL, *index_b = NULL;
    int64_t x, y;

    json_object_object_get_ex(*(json_object *const *)a, "index", &index_a);
    json_object_object_get_ex(*(json_object *const *)b, "index", &index_b);
    x = json_object_get_int64(index_a);
    y = json_object_get_int64(index_b);
    return (x > y) - (x < y);
}

/* Encodes the folds of INSTANCE as one message of one sub-batch; with a
 * batch key, every fold as one envelope (schema/dedup.md). */
static uint8_t *
record_encode(struct record *r, struct record_table *t, uint32_t instance,
              int64_t now_us, size_t *len)
{
    struct frontend *fe = r->fe;
    struct buf_writer out, state;
    struct codec_encoder enc;
    struct codec_subbatch sb;

    frontend_subbatch(fe, &sb, r->map->version, now_us);
    if (r->has_batch_key) {
        sb.flags = CODEC_SB_HAS_BATCH_KEY | CODEC_SB_ENVELOPE;
        memcpy(sb.batch_key, r->batch_key, CODEC_KEY_SIZE);
    }
    buf_writer_create(&out, 1024);
    buf_writer_create(&state, 256);
    codec_message_begin(&enc, &out);
    codec_subbatch_begin(&enc, &sb);
    for (size_t i = 0; i < t->fold_count; i++) {
        const struct record_fold *f = &t->folds[i];
        const struct record_name *n = &t->names[f->name];

        if (!r->has_batch_key && slotmap_owner(r->map, n->slot) != instance)
            continue;
        /* A lone event goes as it came: folding it costs an aggregator
         * far less than decoding and merging a state made of it. */
        if (f->count == 1) {
            if (codec_put_event(&enc, n->slot, n->generation, &f->first) != 0)
                break;
            continue;
        }
        buf_writer_reset(&state);
        state_ops_for(n->type)->encode(f->state, &state);
        if (codec_put_partial(&enc, n->slot, n->type, n->generation, n->name,
                              n->len, f->granule_s, f->first_us, f->last_us,
                              f->count, state.data, state.len) != 0)
            break;
    }
    buf_writer_destroy(&state);
    if (enc.err[0] != '\0' || codec_subbatch_end(&enc) != 0
        || codec_message_end(&enc) != 0) {
        snprintf(r->reason, sizeof(r->reason), "cannot encode: %s", enc.err);
        r->failed = 1;
        buf_writer_destroy(&out);
        return NULL;
    }
    return buf_writer_release(&out, len);
}

void
frontend_subbatch(struct frontend *fe, struct codec_subbatch *sb,
                  uint64_t map_version, int64_t now_us)
{
    memset(sb, 0, sizeof(*sb));
    if (getrandom(sb->dedup_key, sizeof(sb->dedup_key), 0)
        != (ssize_t)sizeof(sb->dedup_key))
        log_warn("getrandom failed; dedup key is not random");
    sb->origin = fe->origin;
    sb->origin_len = strlen(fe->origin);
    sb->map_version = map_version;
    sb->created_us = now_us;
}

void
record_init(struct record *r, struct frontend *fe)
{
    memset(r, 0, sizeof(*r));
    r->fe = fe;
    r->map = frontend_map(fe);
    r->rejected = json_object_new_array();
}

void
record_set_batch(struct record *r, const char *kind, const char *id,
                 size_t len)
{
    struct buf_writer text;
    struct hash128 h;

    buf_writer_create(&text, len + 16);
    buf_put_bytes(&text, kind, strlen(kind));
    buf_put_bytes(&text, ":", 1);
    buf_put_bytes(&text, id, len);
    h = hash_128(text.data, text.len);
    buf_writer_destroy(&text);
    hash_128_bytes(h, r->batch_key);
    r->has_batch_key = 1;
}

void
record_destroy(struct record *r)
{
    for (size_t i = 0; i < r->part_count; i++)
        free(r->parts[i].data);
    free(r->parts);
    r->parts = NULL;
    r->part_count = 0;
    json_object_put(r->rejected);
    r->rejected = NULL;
}

/* Event I of SRC into *EV: EVENT_OK, or the reason to reject it with its
 * message in MSG. */
static enum event_error
record_decode(const struct record_source *src, size_t i, int64_t now_us,
              struct event *ev, char *msg, size_t msglen)
{
    if (src->array == NULL) {
        *ev = src->decoded[i];
        return EVENT_OK;
    }
    return event_from_json(ev, json_object_array_get_idx(src->array, i),
                           now_us, msg, msglen);
}

/* record_events for the events of SRC, received at NOW. */
static void
record_source_events(struct record *r, const struct record_source *src,
                     int64_t now)
{
    size_t n = src->count;
    struct record_table t;
    struct event *evs = xcalloc(n, sizeof(*evs));
    uint8_t *valid = xcalloc(n, 1);
    uint8_t *owners;

    record_table_create(&t, n);
    /* Every event is validated before the type checks, so that one lookup
     * answers for all the metrics of the request. */
    for (size_t i = 0; i < n; i++) {
        char msg[RECORD_MESSAGE_MAX];
        enum event_error code = record_decode(src, i, now, &evs[i], msg,
                                              sizeof(msg));

        if (code != EVENT_OK)
            record_reject(r, i, code, msg);
        valid[i] = code == EVENT_OK;
    }
    record_lookup_meta(r, &t, evs, valid, n);
    for (size_t i = 0; i < n; i++) {
        struct event ev = evs[i];
        struct record_fold *f;
        long name;

        if (!valid[i])
            continue;
        name = record_name_for(r, &t, &ev, i);
        if (name < 0)
            continue;
        f = record_find_fold(&t, (size_t)name,
                             window_align(ev.time_us, WINDOW_GRANULE_S));
        state_ops_for(ev.type)->fold(f->state, &ev);
        if (f->count == 0)
            f->first = ev;
        if (ev.time_us < f->first_us)
            f->first_us = ev.time_us;
        if (ev.time_us > f->last_us)
            f->last_us = ev.time_us;
        f->count++;
        r->accepted++;
    }
    /* The rejections of both passes, in the order of the events. */
    json_object_array_sort(r->rejected, record_by_index);
    free(evs);
    free(valid);
    owners = xcalloc(r->map->instances, 1);
    if (r->has_batch_key && t.fold_count > 0)   /* one envelope */
        owners[slotmap_owner(r->map, slotmap_slot((const char *)r->batch_key,
                                                   CODEC_KEY_SIZE))] = 1;
    else
        for (size_t i = 0; i < t.fold_count; i++)
            owners[slotmap_owner(r->map,
                                 t.names[t.folds[i].name].slot)] = 1;
    r->parts = xcalloc(r->map->instances, sizeof(*r->parts));
    for (uint32_t i = 0; i < r->map->instances && !r->failed; i++) {
        struct record_part *part = &r->parts[r->part_count];

        if (!owners[i])
            continue;
        part->instance = i;
        part->data = record_encode(r, &t, i, now, &part->len);
        if (part->data != NULL)
            r->part_count++;
    }
    if (r->failed) {           /* all or nothing: send none */
        for (size_t i = 0; i < r->part_count; i++)
            free(r->parts[i].data);
        r->part_count = 0;
    }
    record_table_destroy(&t);
    free(owners);
}

void
record_events(struct record *r, json_object *events)
{
    struct record_source src = {
        .array = events,
        .count = json_object_array_length(events),
    };

    record_source_events(r, &src, daemon_now_us());
}

/* ---------------------------------------------------------------------- */
/* events.record                                                           */
/* ---------------------------------------------------------------------- */

struct record_call {
    struct record record;
    struct exchange *x;
    struct jsonrpc_call *call;
    pthread_mutex_t lock;
    size_t pending;                /* parts not yet settled, plus one */
    int failed;
    char reason[PUBLISHER_REASON_MAX];
};

static void
record_call_settled(void *ctx, int ok, const char *reason)
{
    struct record_call *rc = ctx;
    struct record *r = &rc->record;
    int last;

    pthread_mutex_lock(&rc->lock);
    if (!ok && !rc->failed) {
        rc->failed = 1;
        snprintf(rc->reason, sizeof(rc->reason), "%s", reason);
    }
    last = --rc->pending == 0;
    pthread_mutex_unlock(&rc->lock);
    if (!last)
        return;
    if (rc->failed) {
        exchange_complete(rc->x, rc->call, NULL, FRONTEND_ERR_NOT_QUEUED,
                          "Events not queued; retry",
                          json_object_new_string(rc->reason));
    } else {
        json_object *result = json_object_new_object();

        json_object_object_add(result, "accepted",
                               json_object_new_int64((int64_t)r->accepted));
        json_object_object_add(result, "rejected",
                               json_object_get(r->rejected));
        exchange_complete(rc->x, rc->call, result, 0, NULL, NULL);
    }
    record_destroy(r);
    pthread_mutex_destroy(&rc->lock);
    free(rc);
}

/* The events and batch id of CALL's params tree into SRC and *BATCH
 * (NULL when absent; borrowed from the tree), or -1 with CALL answered
 * -32602. */
static int
record_params(struct jsonrpc_call *call, struct record_source *src,
              const char **batch, size_t *batch_len)
{
    static const char *const allowed[] = {"events", "batch", NULL};
    json_object *params, *events, *batch_id;

    if (jsonrpc_params_object(call) != 0
        || frontend_known_params(call, allowed) != 0)
        return -1;
    params = jsonrpc_call_params(call);
    if (!json_object_object_get_ex(params, "events", &events)
        || !json_object_is_type(events, json_type_array)
        || json_object_array_length(events) == 0) {
        jsonrpc_call_invalid_params(call, "events must be a non-empty array");
        return -1;
    }
    if (json_object_object_get_ex(params, "batch", &batch_id)) {
        if (!json_object_is_type(batch_id, json_type_string)
            || json_object_get_string_len(batch_id) == 0
            || json_object_get_string_len(batch_id) > EVENT_NAME_MAX) {
            jsonrpc_call_invalid_params(
                call, "batch must be a string of 1 to 200 bytes");
            return -1;
        }
        *batch = json_object_get_string(batch_id);
        *batch_len = (size_t)json_object_get_string_len(batch_id);
    }
    src->array = events;
    src->decoded = NULL;
    src->count = json_object_array_length(events);
    return 0;
}

/* The events come from evparse when it decoded the call and every time
 * is within range; otherwise from the params tree, whose path answers
 * every error and words every rejection. */
int
method_events_record(struct jsonrpc_call *call, void *ctx)
{
    struct exchange *x = ctx;
    struct frontend *fe = x->fe;
    struct evparse_record *fast = jsonrpc_call_events(call);
    int64_t now = daemon_now_us();
    struct record_source src;
    const char *batch = NULL;
    size_t batch_len = 0;
    struct record_call *rc;
    char reason[FRONTEND_REASON_MAX];

    if (fast != NULL && evparse_record_stamp(fast, now) == 0) {
        src.array = NULL;
        src.decoded = fast->events;
        src.count = fast->count;
        batch = fast->batch;
        batch_len = fast->batch_len;
    } else if (record_params(call, &src, &batch, &batch_len) != 0) {
        return JSONRPC_DONE;
    }
    if (src.count > (size_t)fe->opts.events_max) {
        snprintf(reason, sizeof(reason), "at most %ld events per call, got %zu",
                 fe->opts.events_max, src.count);
        jsonrpc_call_error(call, FRONTEND_ERR_TOO_MANY_EVENTS,
                           "Too many events", json_object_new_string(reason));
        return JSONRPC_DONE;
    }
    rc = xcalloc(1, sizeof(*rc));
    rc->x = x;
    rc->call = call;
    pthread_mutex_init(&rc->lock, NULL);
    record_init(&rc->record, fe);
    if (batch != NULL) {
        char kind[sizeof(RECORD_BATCH_KIND) + AUTH_NAME_MAX];

        snprintf(kind, sizeof(kind), "%s%s", RECORD_BATCH_KIND,
                 x->token != NULL ? x->token->name : "");
        record_set_batch(&rc->record, kind, batch, batch_len);
    }
    record_source_events(&rc->record, &src, now);
    if (rc->record.failed) {
        rc->failed = 1;
        snprintf(rc->reason, sizeof(rc->reason), "%s", rc->record.reason);
    }
    exchange_expect(x);
    rc->pending = rc->record.part_count + 1;
    for (size_t i = 0; i < rc->record.part_count; i++) {
        struct record_part *part = &rc->record.parts[i];

        publisher_submit(fe->publisher,
                         publisher_item_events(part->instance, part->data,
                                               part->len, record_call_settled,
                                               rc));
        part->data = NULL;     /* the publisher owns it now */
    }
    record_call_settled(rc, 1, NULL);
    return JSONRPC_PENDING;
}
