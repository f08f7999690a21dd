/*
 * reshard: the frontend's slot map, kept up to date, and cluster.reshard
 * (schema/resharding.md).
 *
 *   frontend_map        the map requests route by (read once per request)
 *   frontend_map_refresh  asks every instance its map version and takes a
 *                       newer map from the one that has it ({"op":"map"});
 *                       at start, on a tally.control "map" announcement
 *                       and every FRONTEND_MAP_REFRESH_S
 *   cluster.reshard     the next map for N instances, queued as a MAP
 *                       entry to every instance queue (the ones that gain
 *                       slots first), then announced
 *
 * Maps are never freed while the frontend runs (a request may still route
 * by the one it read); they are a few kilobytes each.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "frontend.h"
#include "log.h"
#include "xalloc.h"

#define RESHARD_ORIGIN "reshard"

const struct slotmap *
frontend_map(struct frontend *fe)
{
    return __atomic_load_n(&fe->map, __ATOMIC_ACQUIRE);
}

/* Makes NEXT (taken) the map if it is newer; 1 if it did. */
static int
frontend_map_install(struct frontend *fe, struct slotmap *next)
{
    int installed = 0;

    pthread_mutex_lock(&fe->map_lock);
    if (next->version > frontend_map(fe)->version) {
        publisher_set_instances(fe->publisher, next->instances);
        fe->old_maps = xrealloc(fe->old_maps, (fe->old_map_count + 1)
                                                  * sizeof(*fe->old_maps));
        fe->old_maps[fe->old_map_count++] = fe->map;
        __atomic_store_n(&fe->map, next, __ATOMIC_RELEASE);
        installed = 1;
        log_info("slot map version %" PRIu64 " (%u instances)",
                 next->version, next->instances);
    }
    pthread_mutex_unlock(&fe->map_lock);
    if (!installed)
        slotmap_destroy(next);
    return installed;
}

void
frontend_maps_free(struct frontend *fe)
{
    for (size_t i = 0; i < fe->old_map_count; i++)
        slotmap_destroy(fe->old_maps[i]);
    free(fe->old_maps);
    slotmap_destroy(fe->map);
}

/* Asks instances 0..M-1 their status: their map versions into VERSIONS
 * (0 for one that did not answer); returns 1 if one of them is still
 * moving slots. */
static int
reshard_survey(struct frontend *fe, uint32_t m, uint64_t *versions)
{
    json_object **replies = frontend_ask(fe, "{\"op\":\"status\"}", m);
    int moving = 0;

    for (uint32_t i = 0; i < m; i++) {
        json_object *v, *moves;

        versions[i] = replies[i] != NULL
                              && json_object_object_get_ex(replies[i],
                                                           "map_version", &v)
                          ? (uint64_t)json_object_get_int64(v) : 0;
        if (replies[i] != NULL
            && json_object_object_get_ex(replies[i], "moves", &moves)
            && json_object_object_get_ex(moves, "in_progress", &v)
            && json_object_get_boolean(v))
            moving = 1;
        json_object_put(replies[i]);
    }
    free(replies);
    return moving;
}

/* Instances to ask: every one a map has named so far. */
static uint32_t
reshard_span(struct frontend *fe)
{
    uint32_t m = publisher_instances(fe->publisher);
    uint32_t n = frontend_map(fe)->instances;

    return m > n ? m : n;
}

/* The map instance I holds, or NULL. */
static struct slotmap *
reshard_fetch(struct frontend *fe, uint32_t i)
{
    char *reply = NULL, why[SLOTMAP_ERR_MAX];
    size_t len = 0;
    int binary = 0;
    json_object *o;
    const char *text;
    struct slotmap *map = NULL;

    inbox_call(fe->inbox, &i, 1, "{\"op\":\"map\"}", &reply, &len, &binary);
    o = reply != NULL && !binary ? daemon_parse_json(reply, len) : NULL;
    text = daemon_json_string(o, "text");
    if (text != NULL) {
        map = slotmap_parse(text, strlen(text), why, sizeof(why));
        if (map == NULL)
            log_warn("instance %u sent a bad slot map: %s", i, why);
    }
    json_object_put(o);
    free(reply);
    return map;
}

int
frontend_map_refresh(struct frontend *fe, int strict)
{
    const struct slotmap *map = frontend_map(fe);
    uint32_t m = reshard_span(fe), newest = 0;
    uint64_t *versions = xcalloc(m, sizeof(*versions));
    struct slotmap *next = NULL;
    int installed = 0;

    reshard_survey(fe, m, versions);
    for (uint32_t i = 1; i < m; i++)
        if (versions[i] > versions[newest])
            newest = i;
    if (versions[newest] > map->version)
        next = reshard_fetch(fe, newest);
    /* STRICT: only a map every instance of it and of ours has: a reshard
     * cut short in the middle is not followed (its gainers would wait for
     * handoffs that never come); the next cluster.reshard finishes it. */
    for (uint32_t i = 0; strict && next != NULL && i < m; i++) {
        if ((i < map->instances || i < next->instances)
            && versions[i] < next->version) {
            slotmap_destroy(next);
            next = NULL;
        }
    }
    if (next != NULL)
        installed = frontend_map_install(fe, next);
    free(versions);
    return installed;
}

/* ---------------------------------------------------------------------- */
/* cluster.reshard                                                         */
/* ---------------------------------------------------------------------- */

/* Messages queued and waited for by one reshard. */
struct reshard_wait {
    pthread_mutex_t lock;
    pthread_cond_t done;
    size_t pending;
    int failed;
    char reason[PUBLISHER_REASON_MAX];
};

static void
reshard_queued(void *ctx, int ok, const char *reason)
{
    struct reshard_wait *w = ctx;

    pthread_mutex_lock(&w->lock);
    if (!ok && !w->failed) {
        w->failed = 1;
        snprintf(w->reason, sizeof(w->reason), "%s", reason);
    }
    if (--w->pending == 0)
        pthread_cond_broadcast(&w->done);
    pthread_mutex_unlock(&w->lock);
}

/* A bus message of one sub-batch holding MAP's text. */
static uint8_t *
reshard_message(struct frontend *fe, const struct slotmap *map, size_t *len)
{
    struct buf_writer text, out;
    struct codec_encoder enc;
    struct codec_subbatch sb;
    uint8_t *data = NULL;

    frontend_subbatch(fe, &sb, map->version, daemon_now_us());
    buf_writer_create(&text, 1024);
    slotmap_format(map, &text);
    buf_writer_create(&out, text.len + 128);
    codec_message_begin(&enc, &out);
    if (codec_subbatch_begin(&enc, &sb) == 0
        && codec_put_map(&enc, text.data, text.len) == 0
        && codec_subbatch_end(&enc) == 0 && codec_message_end(&enc) == 0)
        data = buf_writer_release(&out, len);
    else
        buf_writer_destroy(&out);
    buf_writer_destroy(&text);
    return data;
}

/* Queues MAP to each instance I with WHICH[I] set, and waits for the
 * broker's confirms. 0, or -1 with the reason. */
static int
reshard_send(struct frontend *fe, const struct slotmap *map,
             const uint8_t *which, uint32_t count, char *reason,
             size_t reasonlen)
{
    struct reshard_wait w;
    size_t len;
    int rc;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.done, NULL);
    for (uint32_t i = 0; i < count; i++)
        w.pending += which[i];
    if (w.pending == 0) {
        pthread_cond_destroy(&w.done);
        pthread_mutex_destroy(&w.lock);
        return 0;
    }
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *data;

        if (!which[i])
            continue;
        data = reshard_message(fe, map, &len);
        if (data == NULL) {
            reshard_queued(&w, 0, "cannot encode the map");
            continue;
        }
        publisher_submit(fe->publisher,
                         publisher_item_events(i, data, len, reshard_queued,
                                               &w));
    }
    pthread_mutex_lock(&w.lock);
    while (w.pending > 0)
        pthread_cond_wait(&w.done, &w.lock);
    rc = w.failed ? -1 : 0;
    if (rc != 0)
        snprintf(reason, reasonlen, "%s", w.reason);
    pthread_mutex_unlock(&w.lock);
    pthread_cond_destroy(&w.done);
    pthread_mutex_destroy(&w.lock);
    return rc;
}

/* Announces NEXT's version on tally.control (frontends fetch it). */
static void
reshard_announce(struct frontend *fe, uint64_t version)
{
    struct bus_props p = {0};
    char body[64];

    snprintf(body, sizeof(body), "{\"op\":\"map\",\"version\":%" PRIu64 "}",
             version);
    p.content_type = "application/json";
    p.persistent = 1;
    publisher_submit(fe->publisher,
                     publisher_item_raw(BUS_EXCHANGE_CONTROL, "", body,
                                        strlen(body), &p, 0, NULL, NULL));
}

static void
reshard_fail(struct jsonrpc_call *call, const char *reason)
{
    jsonrpc_call_error(call, FRONTEND_ERR_MAP, "Map not queued; retry",
                       json_object_new_string(reason));
}

int
method_cluster_reshard(struct jsonrpc_call *call, void *ctx)
{
    static const char *const allowed[] = {"instances", NULL};
    struct exchange *x = ctx;
    struct frontend *fe = x->fe;
    json_object *params = jsonrpc_call_params(call), *v, *result;
    const struct slotmap *current;
    struct slotmap *next;
    uint64_t *versions;
    uint8_t *gainers, *others, *behind;
    uint32_t n, span;
    char reason[PUBLISHER_REASON_MAX];
    int rc, unchanged, moving;

    if (jsonrpc_params_object(call) != 0
        || frontend_known_params(call, allowed) != 0)
        return JSONRPC_DONE;
    if (!json_object_object_get_ex(params, "instances", &v)
        || !json_object_is_type(v, json_type_int)
        || json_object_get_int64(v) < 1
        || json_object_get_int64(v) > SLOTMAP_INSTANCES_MAX) {
        jsonrpc_call_invalid_params(call, "instances must be an integer "
                                    "from 1 to 1024");
        return JSONRPC_DONE;
    }
    n = (uint32_t)json_object_get_int64(v);
    pthread_mutex_lock(&fe->reshard_lock);
    /* Start from the newest map any instance holds: a reshard cut short
     * is finished by the next one. */
    frontend_map_refresh(fe, 0);
    current = frontend_map(fe);
    span = reshard_span(fe);
    versions = xcalloc(span, sizeof(*versions));
    moving = reshard_survey(fe, span, versions);
    behind = xcalloc(span, 1);
    for (uint32_t i = 0; i < current->instances; i++)
        if (versions[i] < current->version) {
            behind[i] = 1;
            moving = 1;
        }
    /* An instance still on an older map gets the current one first. */
    rc = reshard_send(fe, current, behind, span, reason, sizeof(reason));
    for (uint32_t i = 0; i < current->instances && rc == 0; i++) {
        if (versions[i] == 0) {     /* no answer: it could not move */
            snprintf(reason, sizeof(reason), "instance %u did not answer "
                     "within %ld ms", i, fe->opts.rpc_timeout_ms);
            jsonrpc_call_error(call, FRONTEND_ERR_INSTANCE,
                               "Instance unavailable",
                               json_object_new_string(reason));
            rc = 1;
        }
    }
    if (rc != 0 || moving) {
        if (rc < 0)
            reshard_fail(call, reason);
        else if (rc == 0)
            jsonrpc_call_error(call, FRONTEND_ERR_MOVING,
                               "Move in progress; retry",
                               json_object_new_string(
                                   "slots of an earlier reshard are still "
                                   "moving; retry once cluster.status "
                                   "shows move_in_progress false"));
        pthread_mutex_unlock(&fe->reshard_lock);
        free(versions);
        free(behind);
        return JSONRPC_DONE;
    }
    free(behind);
    next = slotmap_rebalance(current, n);
    if (next == NULL) {
        pthread_mutex_unlock(&fe->reshard_lock);
        free(versions);
        jsonrpc_call_invalid_params(call, "no map can follow the current "
                                    "one (its version is at the limit)");
        return JSONRPC_DONE;
    }
    if (next->instances > span)
        span = next->instances;
    gainers = xcalloc(span, 1);
    others = xcalloc(span, 1);
    for (uint32_t s = 0; s < SLOTMAP_SLOTS; s++) {
        uint16_t after = slotmap_owner(next, (uint16_t)s);

        if (slotmap_owner(current, (uint16_t)s) != after)
            gainers[after] = 1;
    }
    for (uint32_t i = 0; i < span; i++)
        others[i] = !gainers[i];
    publisher_set_instances(fe->publisher, span);
    /* The gaining instances install the map before anyone hands them a
     * slot (schema/resharding.md, "Order"). When nothing moves, the map
     * stays as it is. */
    unchanged = next->instances == current->instances
                && slotmap_moved(current, next) == 0;
    if (!unchanged)
        rc = reshard_send(fe, next, gainers, span, reason, sizeof(reason));
    if (rc == 0 && !unchanged)
        rc = reshard_send(fe, next, others, span, reason, sizeof(reason));
    if (rc != 0 || unchanged) {
        if (rc != 0)
            reshard_fail(call, reason);
        slotmap_destroy(next);
        next = NULL;
    }
    if (rc == 0) {
        uint64_t from = current->version;
        uint64_t to = next != NULL ? next->version : from;
        size_t moved = next != NULL ? slotmap_moved(current, next) : 0;

        if (next != NULL) {
            frontend_map_install(fe, next);
            reshard_announce(fe, to);
        }
        result = json_object_new_object();
        json_object_object_add(result, "previous_version",
                               json_object_new_int64((int64_t)from));
        json_object_object_add(result, "version",
                               json_object_new_int64((int64_t)to));
        json_object_object_add(result, "instances", json_object_new_int64(n));
        json_object_object_add(result, "moved_slots",
                               json_object_new_int64((int64_t)moved));
        jsonrpc_call_result(call, result);
        log_info("reshard: map version %" PRIu64 " -> %" PRIu64 ", %u "
                 "instances, %zu slots move", from, to, n, moved);
    }
    pthread_mutex_unlock(&fe->reshard_lock);
    free(versions);
    free(gainers);
    free(others);
    return JSONRPC_DONE;
}
