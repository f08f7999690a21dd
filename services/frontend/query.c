/*
 * query: the read and admin methods of the frontend.
 *
 *   metrics.query   open value (memcached) --> closed buckets of the window
 *                   (one multi-get) --> assemble --> metric_render; a miss,
 *                   an incomplete set or a cache error asks the owner over
 *                   tally.rpc for the whole metric
 *   metrics.list    asks every instance, merges by name
 *   metrics.delete  tombstone to the owner through tally.events, then waits
 *                   for the owner's tally.control announcement
 *   cluster.status  asks every instance
 *   rpc.discover    the OpenRPC document
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cacheval.h"
#include "codec.h"
#include "frontend.h"
#include "log.h"
#include "metric.h"
#include "qcache.h"
#include "state.h"
#include "window.h"
#include "xalloc.h"

#define QUERY_NAMES_MAX 100
#define QUERY_LIST_DEFAULT 100
#define QUERY_LIST_MAX 1000
#define QUERY_BUCKETS_MAX 128
#define QUERY_REASON_MAX 256
#define QUERY_SERIES 0x1          /* add "series" */
#define QUERY_STATE 0x2           /* add "state": the merged window state */

int
frontend_known_params(struct jsonrpc_call *call, const char *const *allowed)
{
    char reason[QUERY_REASON_MAX];

    json_object_object_foreach(jsonrpc_call_params(call), key, value) {
        size_t i;

        (void)value;
        for (i = 0; allowed[i] != NULL; i++)
            if (strcmp(key, allowed[i]) == 0)
                break;
        if (allowed[i] == NULL) {
            snprintf(reason, sizeof(reason), "unknown parameter \"%s\"", key);
            jsonrpc_call_invalid_params(call, reason);
            return -1;
        }
    }
    return 0;
}

static int
query_name_valid(json_object *v)
{
    return json_object_is_type(v, json_type_string)
           && event_name_valid(json_object_get_string(v),
                               (size_t)json_object_get_string_len(v));
}

/* ---------------------------------------------------------------------- */
/* metrics.query                                                           */
/* ---------------------------------------------------------------------- */

struct query_fetch {
    struct cacheval_open *open;
    const uint8_t *open_value;
    size_t open_len;
    int bad;
    char err[CODEC_ERR_MAX];
};

static void
query_found_open(void *ctx, size_t index, const uint8_t *value, size_t len)
{
    struct query_fetch *f = ctx;

    (void)index;
    if (cacheval_decode_open(value, len, f->open, f->err, sizeof(f->err)) != 0)
        f->bad = 1;
    else
        f->open_value = value;
}

static void
query_found_closed(void *ctx, size_t index, const uint8_t *value, size_t len)
{
    struct query_fetch *f = ctx;

    (void)index;
    if (cacheval_apply_closed(f->open, value, len, f->err, sizeof(f->err)) < 0)
        f->bad = 1;
}

/* Adds "state": STATE (borrowed, of OPS) in its canonical encoding
 * (schema/state-encoding.md), base64, to OUT. */
static void
query_add_state(json_object *out, const struct state_ops *ops,
                const void *state)
{
    struct buf_writer bytes, text;

    buf_writer_create(&bytes, 256);
    buf_writer_create(&text, 512);
    ops->encode(state, &bytes);
    buf_put_base64(&text, bytes.data, bytes.len);
    json_object_object_add(out, "state", json_object_new_string_len(
        (const char *)text.data, (int)text.len));
    buf_writer_destroy(&text);
    buf_writer_destroy(&bytes);
}

/* metric_render, plus with QUERY_STATE the window's merged state in its
 * canonical encoding (schema/state-encoding.md), base64. */
static json_object *
query_render(const struct metric *m, enum window window, int64_t now,
             int flags)
{
    json_object *out = metric_render(m, window, now, flags & QUERY_SERIES);

    if (flags & QUERY_STATE) {
        const struct state_ops *ops = state_ops_for(metric_type(m));
        void *state = metric_window_state(m, window, now);

        query_add_state(out, ops, state);
        ops->destroy(state);
    }
    return out;
}

/* What query_render answers for a metric of TYPE whose window state is
 * STATE (taken), without series: metric_render's fields in its order. */
static json_object *
query_render_state(enum event_type type, enum window window, int64_t now,
                   void *state, int flags)
{
    const struct state_ops *ops = state_ops_for(type);
    struct state_render_context ctx = {
        .span_seconds = window_span_seconds(window, now),
    };
    json_object *out = json_object_new_object(), *fields;

    json_object_object_add(out, "type",
                           json_object_new_string(event_type_name(type)));
    json_object_object_add(out, "window",
                           json_object_new_string(window_name(window)));
    fields = ops->render(state, &ctx);
    json_object_object_foreach(fields, key, value)
        json_object_object_add(out, key, json_object_get(value));
    json_object_put(fields);
    if (flags & QUERY_STATE)
        query_add_state(out, ops, state);
    ops->destroy(state);
    return out;
}

/* From memcached: 1 with *OUT set (NULL for a deleted metric), or 0 when
 * the cache cannot answer (miss, incomplete, error). */
static int
query_from_cache(struct frontend *fe, const char *name, size_t len,
                 enum window window, int flags, int64_t now,
                 json_object **out)
{
    struct cacheval_open open;
    struct query_fetch f;
    char key[CACHE_KEY_MAX], err[CACHE_ERR_MAX];
    const char *keys[QUERY_BUCKETS_MAX];
    char (*bucket_keys)[CACHE_KEY_MAX];
    size_t key_lens[QUERY_BUCKETS_MAX];
    int64_t starts[QUERY_BUCKETS_MAX];
    enum ring ring;
    size_t n;

    memset(&f, 0, sizeof(f));
    memset(&open, 0, sizeof(open));
    f.open = &open;
    keys[0] = key;
    key_lens[0] = cache_key_open(key, name, len);
    if (cache_mget(fe->cache, name, len, keys, key_lens, 1, query_found_open,
                   &f, err, sizeof(err)) != 0) {
        log_debug("query %.*s: %s", (int)len, name, err);
        cacheval_open_release(&open);
        return 0;
    }
    if (f.bad || f.open_value == NULL) {
        cacheval_open_release(&open);
        return 0;
    }
    if (open.metric == NULL) {          /* tombstone */
        *out = NULL;
        return 1;
    }
    n = 0;
    if (window != WINDOW_ALL || (flags & QUERY_SERIES))
        n = cacheval_wanted(&open, window, now, &ring, starts,
                            QUERY_BUCKETS_MAX);
    if (n > 0) {
        bucket_keys = xcalloc(n, CACHE_KEY_MAX);
        for (size_t i = 0; i < n; i++) {
            key_lens[i] = cache_key_bucket(bucket_keys[i], name, len,
                                           open.header.generation, ring,
                                           starts[i]);
            keys[i] = bucket_keys[i];
        }
        if (cache_mget(fe->cache, name, len, keys, key_lens, n,
                       query_found_closed, &f, err, sizeof(err)) != 0)
            f.bad = 1;
        free(bucket_keys);
        if (f.bad || !cacheval_complete(&open, window, now)) {
            cacheval_open_release(&open);
            return 0;
        }
    }
    *out = query_render(open.metric, window, now, flags);
    cacheval_open_release(&open);
    return 1;
}

/* An open value read for the query cache: a copy, since the entry is
 * taken only after the read. */
struct query_open_copy {
    uint8_t *data;
    size_t len;
};

static void
query_copy_open(void *ctx, size_t index, const uint8_t *value, size_t len)
{
    struct query_open_copy *copy = ctx;

    (void)index;
    free(copy->data);
    copy->data = xmalloc(len > 0 ? len : 1);
    memcpy(copy->data, value, len);
    copy->len = len;
}

/* Closed values read for a query cache entry. */
struct query_closed_fetch {
    struct qcache *qcache;
    struct qcache_entry *entry;
    int bad;
};

static void
query_found_cached(void *ctx, size_t index, const uint8_t *value, size_t len)
{
    struct query_closed_fetch *f = ctx;
    char err[CODEC_ERR_MAX];

    (void)index;
    if (qcache_closed(f->qcache, f->entry, value, len, err, sizeof(err)) < 0)
        f->bad = 1;
}

/* query_from_cache through the frontend's query cache: the open value is
 * read every time, the closed buckets only when the cache cannot vouch
 * for them (qcache.h). 1 with *OUT set (NULL for a deleted metric), 0 when
 * the cache cannot answer, -1 when the query cache gave up on the metric
 * (use query_from_cache). */
static int
query_from_qcache(struct frontend *fe, const char *name, size_t len,
                  enum window window, int flags, int64_t now,
                  json_object **out)
{
    struct query_open_copy copy = {0};
    struct query_closed_fetch f = { .qcache = fe->qcache };
    char key[CACHE_KEY_MAX], err[CACHE_ERR_MAX];
    const char *keys[QUERY_BUCKETS_MAX];
    char (*bucket_keys)[CACHE_KEY_MAX];
    size_t key_lens[QUERY_BUCKETS_MAX];
    int64_t starts[QUERY_BUCKETS_MAX];
    uint64_t generation;
    enum ring ring;
    size_t n = 0;
    int rc = 1, held;

    keys[0] = key;
    key_lens[0] = cache_key_open(key, name, len);
    if (cache_mget(fe->cache, name, len, keys, key_lens, 1, query_copy_open,
                   &copy, err, sizeof(err)) != 0 || copy.data == NULL) {
        if (copy.data == NULL)
            snprintf(err, sizeof(err), "no open value");
        log_debug("query %.*s: %s", (int)len, name, err);
        free(copy.data);
        return 0;
    }
    f.entry = qcache_acquire(fe->qcache, name, len);
    held = qcache_open(fe->qcache, f.entry, copy.data, copy.len, err,
                       sizeof(err));
    free(copy.data);
    if (held < 0) {
        log_debug("query %.*s: %s", (int)len, name, err);
        qcache_release(fe->qcache, f.entry);
        return 0;
    }
    if (held == QCACHE_DELETED) {
        *out = NULL;
        qcache_release(fe->qcache, f.entry);
        return 1;
    }
    if (window != WINDOW_ALL || (flags & QUERY_SERIES))
        n = qcache_missing(fe->qcache, f.entry, window, now, &ring,
                           &generation, starts, QUERY_BUCKETS_MAX);
    if (n == (size_t)-1) {
        qcache_release(fe->qcache, f.entry);
        return -1;
    }
    if (n > 0) {
        bucket_keys = xcalloc(n, CACHE_KEY_MAX);
        for (size_t i = 0; i < n; i++) {
            key_lens[i] = cache_key_bucket(bucket_keys[i], name, len,
                                           generation, ring, starts[i]);
            keys[i] = bucket_keys[i];
        }
        if (cache_mget(fe->cache, name, len, keys, key_lens, n,
                       query_found_cached, &f, err, sizeof(err)) != 0)
            f.bad = 1;
        free(bucket_keys);
        if (f.bad)
            rc = 0;
    }
    if (rc == 1 && (window != WINDOW_ALL || (flags & QUERY_SERIES))
        && !qcache_complete(f.entry, window, now))
        rc = 0;
    if (rc == 1 && window != WINDOW_ALL && !(flags & QUERY_SERIES)) {
        /* the merge under the entry's lock, the rendering after it */
        enum event_type type = metric_type(qcache_metric(f.entry));
        void *state = qcache_window_state(f.entry, window, now);

        qcache_release(fe->qcache, f.entry);
        *out = query_render_state(type, window, now, state, flags);
        return rc;
    }
    if (rc == 1)
        *out = query_render(qcache_metric(f.entry), window, now, flags);
    qcache_release(fe->qcache, f.entry);
    return rc;
}

/* From the owner: 0 with *OUT set (NULL when it does not exist), or -1 with
 * a reason. */
static int
query_from_owner(struct frontend *fe, const char *name, size_t len,
                 enum window window, int flags, int64_t now,
                 json_object **out, char *reason, size_t reasonlen)
{
    uint32_t owner = slotmap_owner(frontend_map(fe), slotmap_slot(name, len));
    json_object *req = json_object_new_object();
    char *reply;
    size_t reply_len;
    int binary;

    json_object_object_add(req, "op", json_object_new_string("get"));
    json_object_object_add(req, "name", json_object_new_string_len(name,
                                                                   (int)len));
    inbox_call(fe->inbox, &owner, 1,
               json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN),
               &reply, &reply_len, &binary);
    json_object_put(req);
    if (reply == NULL) {
        snprintf(reason, reasonlen, "instance %" PRIu32 " did not answer "
                 "within %ld ms", owner, fe->opts.rpc_timeout_ms);
        return -1;
    }
    *out = NULL;
    if (binary) {
        struct buf_reader in;
        char err[CODEC_ERR_MAX];
        struct metric *m;

        buf_reader_init(&in, reply, reply_len);
        m = metric_decode(&in, err, sizeof(err));
        if (m == NULL) {
            snprintf(reason, reasonlen, "instance %" PRIu32 " sent a bad "
                     "metric: %s", owner, err);
            free(reply);
            return -1;
        }
        *out = query_render(m, window, now, flags);
        metric_destroy(m);
    }
    free(reply);
    return 0;
}

int
method_metrics_query(struct jsonrpc_call *call, void *ctx)
{
    static const char *const allowed[] = {"names", "window", "series",
                                          "state", NULL};
    struct exchange *x = ctx;
    struct frontend *fe = x->fe;
    json_object *params = jsonrpc_call_params(call), *names, *v, *metrics;
    enum window window = WINDOW_ALL;
    int flags = 0;
    int64_t now = daemon_now_us();
    size_t n;

    if (jsonrpc_params_object(call) != 0
        || frontend_known_params(call, allowed) != 0)
        return JSONRPC_DONE;
    if (!json_object_object_get_ex(params, "names", &names)
        || !json_object_is_type(names, json_type_array)
        || (n = json_object_array_length(names)) == 0 || n > QUERY_NAMES_MAX)
        goto bad_names;
    for (size_t i = 0; i < n; i++)
        if (!query_name_valid(json_object_array_get_idx(names, i)))
            goto bad_names;
    if (json_object_object_get_ex(params, "window", &v)
        && (!json_object_is_type(v, json_type_string)
            || window_parse(json_object_get_string(v),
                            (size_t)json_object_get_string_len(v),
                            &window) != 0)) {
        jsonrpc_call_invalid_params(call,
                                    "window must be one of 1m, 10m, 1h, 1d, all");
        return JSONRPC_DONE;
    }
    if (json_object_object_get_ex(params, "series", &v)) {
        if (!json_object_is_type(v, json_type_boolean)) {
            jsonrpc_call_invalid_params(call, "series must be a boolean");
            return JSONRPC_DONE;
        }
        flags |= json_object_get_boolean(v) ? QUERY_SERIES : 0;
    }
    if (json_object_object_get_ex(params, "state", &v)) {
        if (!json_object_is_type(v, json_type_boolean)) {
            jsonrpc_call_invalid_params(call, "state must be a boolean");
            return JSONRPC_DONE;
        }
        flags |= json_object_get_boolean(v) ? QUERY_STATE : 0;
    }
    metrics = json_object_new_object();
    for (size_t i = 0; i < n; i++) {
        json_object *name = json_object_array_get_idx(names, i), *out = NULL;
        const char *s = json_object_get_string(name);
        size_t len = (size_t)json_object_get_string_len(name);
        char reason[QUERY_REASON_MAX];

        int cached = fe->qcache != NULL
                     ? query_from_qcache(fe, s, len, window, flags, now, &out)
                     : -1;

        if (cached < 0)
            cached = query_from_cache(fe, s, len, window, flags, now, &out);
        if (!cached
            && query_from_owner(fe, s, len, window, flags, now, &out,
                                reason, sizeof(reason)) != 0) {
            json_object_put(metrics);
            jsonrpc_call_error(call, FRONTEND_ERR_INSTANCE,
                               "Instance unavailable",
                               json_object_new_string(reason));
            return JSONRPC_DONE;
        }
        json_object_object_add(metrics, s, out);
    }
    v = json_object_new_object();
    json_object_object_add(v, "metrics", metrics);
    jsonrpc_call_result(call, v);
    return JSONRPC_DONE;

bad_names:
    jsonrpc_call_invalid_params(call,
                                "names must be an array of 1 to 100 metric names");
    return JSONRPC_DONE;
}

/* ---------------------------------------------------------------------- */
/* Fan-out: metrics.list and cluster.status                                */
/* ---------------------------------------------------------------------- */

json_object **
frontend_ask(struct frontend *fe, const char *request, uint32_t m)
{
    uint32_t *instances = xcalloc(m + 1, sizeof(*instances));
    char **replies = xcalloc(m + 1, sizeof(*replies));
    size_t *lens = xcalloc(m + 1, sizeof(*lens));
    int *binary = xcalloc(m + 1, sizeof(*binary));
    json_object **parsed = xcalloc(m + 1, sizeof(*parsed));

    for (uint32_t i = 0; i < m; i++)
        instances[i] = i;
    inbox_call(fe->inbox, instances, m, request, replies, lens, binary);
    for (uint32_t i = 0; i < m; i++) {
        if (replies[i] != NULL && !binary[i])
            parsed[i] = daemon_parse_json(replies[i], lens[i]);
        free(replies[i]);
    }
    free(instances);
    free(replies);
    free(lens);
    free(binary);
    return parsed;
}

/* Asks every instance of the map REQUEST; returns the replies
 * (frontend_ask) for its *COUNT instances, and the silent ones in
 * *UNREACHABLE (a new JSON array). */
static json_object **
query_ask_all(struct frontend *fe, json_object *request, uint32_t *count,
              json_object **unreachable)
{
    uint32_t m = frontend_map(fe)->instances;
    json_object **parsed = frontend_ask(fe, json_object_to_json_string_ext(
        request, JSON_C_TO_STRING_PLAIN), m);

    *unreachable = json_object_new_array();
    for (uint32_t i = 0; i < m; i++)
        if (parsed[i] == NULL)
            json_object_array_add(*unreachable, json_object_new_int64(i));
    *count = m;
    return parsed;
}

static int
query_compare_names(const void *a, const void *b)
{
    json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
    json_object *nx, *ny;

    json_object_object_get_ex(x, "name", &nx);
    json_object_object_get_ex(y, "name", &ny);
    return buf_compare(json_object_get_string(nx),
                       (size_t)json_object_get_string_len(nx),
                       json_object_get_string(ny),
                       (size_t)json_object_get_string_len(ny));
}

int
method_metrics_list(struct jsonrpc_call *call, void *ctx)
{
    static const char *const allowed[] = {"prefix", "after", "limit", NULL};
    struct exchange *x = ctx;
    struct frontend *fe = x->fe;
    json_object *params = jsonrpc_call_params(call), *v, *req, *result;
    json_object *unreachable, **replies, *all, *page;
    const char *prefix = "", *after = "";
    int64_t limit = QUERY_LIST_DEFAULT;
    int more = 0;
    uint32_t count;
    size_t n;

    if (params != NULL && (jsonrpc_params_object(call) != 0
                           || frontend_known_params(call, allowed) != 0))
        return JSONRPC_DONE;
    if (params != NULL && json_object_object_get_ex(params, "prefix", &v)) {
        if (!json_object_is_type(v, json_type_string)
            || json_object_get_string_len(v) > EVENT_NAME_MAX) {
            jsonrpc_call_invalid_params(call, "prefix must be a string of at "
                                        "most 200 bytes");
            return JSONRPC_DONE;
        }
        prefix = json_object_get_string(v);
    }
    if (params != NULL && json_object_object_get_ex(params, "after", &v)) {
        if (!json_object_is_type(v, json_type_string)
            || json_object_get_string_len(v) > EVENT_NAME_MAX) {
            jsonrpc_call_invalid_params(call, "after must be a string of at "
                                        "most 200 bytes");
            return JSONRPC_DONE;
        }
        after = json_object_get_string(v);
    }
    if (params != NULL && json_object_object_get_ex(params, "limit", &v)) {
        if (!json_object_is_type(v, json_type_int)
            || (limit = json_object_get_int64(v)) < 1
            || limit > QUERY_LIST_MAX) {
            jsonrpc_call_invalid_params(call, "limit must be an integer from "
                                        "1 to 1000");
            return JSONRPC_DONE;
        }
    }
    req = json_object_new_object();
    json_object_object_add(req, "op", json_object_new_string("list"));
    json_object_object_add(req, "prefix", json_object_new_string(prefix));
    json_object_object_add(req, "after", json_object_new_string(after));
    json_object_object_add(req, "limit", json_object_new_int64(limit));
    replies = query_ask_all(fe, req, &count, &unreachable);
    json_object_put(req);
    all = json_object_new_array();
    for (uint32_t i = 0; i < count; i++) {
        json_object *metrics, *m;

        if (replies[i] == NULL)
            continue;
        if (json_object_object_get_ex(replies[i], "more", &m)
            && json_object_get_boolean(m))
            more = 1;
        if (json_object_object_get_ex(replies[i], "metrics", &metrics)
            && json_object_is_type(metrics, json_type_array))
            for (size_t k = 0; k < json_object_array_length(metrics); k++)
                if (daemon_json_string(json_object_array_get_idx(metrics, k),
                                       "name") != NULL)
                    json_object_array_add(all, json_object_get(
                        json_object_array_get_idx(metrics, k)));
        json_object_put(replies[i]);
    }
    free(replies);
    json_object_array_sort(all, query_compare_names);
    n = json_object_array_length(all);
    page = json_object_new_array();
    for (size_t i = 0; i < n && i < (size_t)limit; i++)
        json_object_array_add(page, json_object_get(
            json_object_array_get_idx(all, i)));
    result = json_object_new_object();
    json_object_object_add(result, "metrics", page);
    if (more || n > (size_t)limit) {
        json_object *last, *name;

        last = json_object_array_get_idx(page, (size_t)limit - 1);
        json_object_object_get_ex(last, "name", &name);
        json_object_object_add(result, "next", json_object_get(name));
    } else {
        json_object_object_add(result, "next", NULL);
    }
    json_object_object_add(result, "unreachable", unreachable);
    json_object_put(all);
    jsonrpc_call_result(call, result);
    return JSONRPC_DONE;
}

/* The query cache's counters (qcache_stats) for cluster.status. */
static json_object *
query_cache_status(struct qcache *qcache)
{
    json_object *o = json_object_new_object();
    struct qcache_stats st;

    qcache_stats(qcache, &st);
    json_object_object_add(o, "metrics",
                           json_object_new_int64((int64_t)st.entries));
    json_object_object_add(o, "evicted",
                           json_object_new_int64((int64_t)st.evicted));
    json_object_object_add(o, "bytes",
                           json_object_new_int64((int64_t)st.bytes));
    json_object_object_add(o, "open_decoded",
                           json_object_new_int64((int64_t)st.opens));
    json_object_object_add(o, "closed_read",
                           json_object_new_int64((int64_t)st.closed_read));
    json_object_object_add(o, "closed_decoded",
                           json_object_new_int64((int64_t)st.closed_decoded));
    json_object_object_add(o, "closed_kept",
                           json_object_new_int64((int64_t)st.closed_kept));
    return o;
}

int
method_cluster_status(struct jsonrpc_call *call, void *ctx)
{
    struct exchange *x = ctx;
    struct frontend *fe = x->fe;
    json_object *unreachable, **replies;
    json_object *result = json_object_new_object();
    json_object *instances = json_object_new_array();
    json_object *retired = json_object_new_array();
    json_object *self = json_object_new_object();
    const struct slotmap *map = frontend_map(fe);
    int64_t moved = 0;
    int moving = 0;
    uint32_t m;

    /* Instances past the map (removed by a reshard) answer as "retired"
     * while they run: a move is not over while one still has work. */
    m = publisher_instances(fe->publisher);
    if (m < map->instances)
        m = map->instances;
    replies = frontend_ask(fe, "{\"op\":\"status\"}", m);
    unreachable = json_object_new_array();
    for (uint32_t i = 0; i < m; i++) {
        json_object *moves, *o;

        if (replies[i] == NULL) {
            if (i < map->instances)
                json_object_array_add(unreachable, json_object_new_int64(i));
            continue;
        }
        if (i >= map->instances) {
            if (json_object_object_get_ex(replies[i], "queue_depth", &o)
                && json_object_get_int64(o) > 0)
                moving = 1;
            if (json_object_object_get_ex(replies[i], "moves", &moves)
                && json_object_object_get_ex(moves, "in_progress", &o)
                && json_object_get_boolean(o))
                moving = 1;
            json_object_array_add(retired, replies[i]);
            continue;
        }
        if (json_object_object_get_ex(replies[i], "moves", &moves)) {
            if (json_object_object_get_ex(moves, "in_progress", &o)
                && json_object_get_boolean(o))
                moving = 1;
            if (json_object_object_get_ex(moves, "to_version", &o)
                && (uint64_t)json_object_get_int64(o) == map->version
                && json_object_object_get_ex(moves, "slots_in", &o))
                moved += json_object_get_int64(o);
        }
        if (json_object_object_get_ex(replies[i], "map_version", &o)
            && (uint64_t)json_object_get_int64(o) != map->version)
            moving = 1;
        json_object_array_add(instances, replies[i]);
    }
    free(replies);
    json_object_object_add(self, "version",
                           json_object_new_string(TALLY_VERSION));
    json_object_object_add(self, "origin", json_object_new_string(fe->origin));
    json_object_object_add(self, "publisher_ready", json_object_new_boolean(
        publisher_ready(fe->publisher)));
    json_object_object_add(self, "inbox_ready", json_object_new_boolean(
        inbox_ready(fe->inbox)));
    json_object_object_add(self, "republished", json_object_new_int64(
        (int64_t)publisher_republished(fe->publisher)));
    if (fe->qcache != NULL)
        json_object_object_add(self, "query_cache",
                               query_cache_status(fe->qcache));
    json_object_object_add(result, "map_version",
                           json_object_new_int64((int64_t)map->version));
    json_object_object_add(result, "instance_count",
                           json_object_new_int64(map->instances));
    json_object_object_add(result, "moved_slots", json_object_new_int64(moved));
    json_object_object_add(result, "move_in_progress",
                           json_object_new_boolean(moving));
    json_object_object_add(result, "instances", instances);
    json_object_object_add(result, "retired", retired);
    json_object_object_add(result, "unreachable", unreachable);
    json_object_object_add(result, "frontend", self);
    jsonrpc_call_result(call, result);
    return JSONRPC_DONE;
}

int
method_rpc_discover(struct jsonrpc_call *call, void *ctx)
{
    struct exchange *x = ctx;
    json_object *copy = NULL;

    json_object_deep_copy(x->fe->openrpc, &copy, NULL);
    jsonrpc_call_result(call, copy);
    return JSONRPC_DONE;
}

/* ---------------------------------------------------------------------- */
/* metrics.delete                                                          */
/* ---------------------------------------------------------------------- */

/* A metrics.delete in flight: it needs the broker's confirm of the
 * tombstone and the owner's announcement (or its timeout). */
struct query_delete {
    struct exchange *x;
    struct jsonrpc_call *call;
    struct inbox_watch *watch;
    char name[EVENT_NAME_MAX + 1];
    pthread_mutex_t lock;
    int pending;                    /* 2: confirm and announcement */
    int queued, seen;
    char reason[PUBLISHER_REASON_MAX];
};

static void
query_delete_step(struct query_delete *d)
{
    struct frontend *fe = d->x->fe;
    json_object *result;
    int last;

    pthread_mutex_lock(&d->lock);
    last = --d->pending == 0;
    pthread_mutex_unlock(&d->lock);
    if (!last)
        return;
    meta_forget(fe->meta, d->name, strlen(d->name));
    if (!d->queued) {
        exchange_complete(d->x, d->call, NULL, FRONTEND_ERR_NOT_QUEUED,
                          "Delete not queued; retry",
                          json_object_new_string(d->reason));
    } else {
        result = json_object_new_object();
        json_object_object_add(result, "name",
                               json_object_new_string(d->name));
        json_object_object_add(result, "applied",
                               json_object_new_boolean(d->seen));
        exchange_complete(d->x, d->call, result, 0, NULL, NULL);
    }
    inbox_watch_free(d->watch);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

static void
query_delete_announced(void *ctx, int seen)
{
    struct query_delete *d = ctx;

    d->seen = seen;
    query_delete_step(d);
}

static void
query_delete_queued(void *ctx, int ok, const char *reason)
{
    struct query_delete *d = ctx;
    struct frontend *fe = d->x->fe;

    d->queued = ok;
    if (!ok)
        snprintf(d->reason, sizeof(d->reason), "%s", reason);
    inbox_watch_start(fe->inbox, d->watch, ok ? fe->opts.rpc_timeout_ms : 0);
    query_delete_step(d);
}

int
method_metrics_delete(struct jsonrpc_call *call, void *ctx)
{
    static const char *const allowed[] = {"name", NULL};
    struct exchange *x = ctx;
    struct frontend *fe = x->fe;
    json_object *params = jsonrpc_call_params(call), *name;
    struct query_delete *d;
    struct meta_info info;
    struct codec_encoder enc;
    struct codec_subbatch sb;
    struct buf_writer out;
    const char *s;
    size_t len, data_len;
    uint16_t slot;
    int64_t now = daemon_now_us();
    uint8_t *data;

    if (jsonrpc_params_object(call) != 0
        || frontend_known_params(call, allowed) != 0)
        return JSONRPC_DONE;
    if (!json_object_object_get_ex(params, "name", &name)
        || !query_name_valid(name)) {
        jsonrpc_call_invalid_params(call, "name must be a metric name");
        return JSONRPC_DONE;
    }
    s = json_object_get_string(name);
    len = (size_t)json_object_get_string_len(name);
    slot = slotmap_slot(s, len);
    meta_forget(fe->meta, s, len);
    meta_lookup(fe, s, len, &info);

    frontend_subbatch(fe, &sb, frontend_map(fe)->version, now);
    buf_writer_create(&out, 256);
    codec_message_begin(&enc, &out);
    codec_subbatch_begin(&enc, &sb);
    codec_put_tombstone(&enc, slot, CODEC_TYPE_ANY, info.generation, s, len,
                        now);
    codec_subbatch_end(&enc);
    codec_message_end(&enc);
    data = buf_writer_release(&out, &data_len);

    d = xcalloc(1, sizeof(*d));
    d->x = x;
    d->call = call;
    memcpy(d->name, s, len);
    pthread_mutex_init(&d->lock, NULL);
    d->pending = 2;
    exchange_expect(x);
    d->watch = inbox_watch_deleted(fe->inbox, d->name, info.generation + 1,
                                   query_delete_announced, d);
    publisher_submit(fe->publisher,
                     publisher_item_events(slotmap_owner(frontend_map(fe),
                                                         slot), data,
                                           data_len, query_delete_queued, d));
    return JSONRPC_PENDING;
}
