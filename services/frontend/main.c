/*
 * tally-frontend: JSON-RPC 2.0 over HTTP (POST /rpc) in front of the bus
 * and the cache. Stateless: run as many as you like.
 *
 *   HTTP (MHD pool) --jsonrpc_parse--> method table --> record.c, query.c
 *   publisher thread (publisher.c)  inbox thread (inbox.c)
 *
 * A JSON-RPC batch may hold calls that finish on the publisher thread
 * (events.record waits for broker confirms); the HTTP request stays
 * suspended until the last call is done (struct exchange).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend.h"
#include "http.h"
#include "log.h"
#include "qcache.h"
#include "xalloc.h"

#define FRONTEND_HTTP_OK 200
#define FRONTEND_HTTP_NO_CONTENT 204
#define FRONTEND_HTTP_TOO_MANY 429
#define FRONTEND_HTTP_UNAVAILABLE 503

static const char frontend_stopping_body[] =
    "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":"
    "\"Internal error\",\"data\":\"the server is shutting down\"},"
    "\"id\":null}";
#define FRONTEND_TAG_MAX 64
#define FRONTEND_TICK_MS 200
#define FRONTEND_MAP_REFRESH_US (30 * 1000000LL)
#define FRONTEND_MAP_RETRY_US 1000000LL
#define FRONTEND_NO_REFRESH_ENV "TALLY_TEST_NO_MAP_REFRESH"
#define FRONTEND_OPENRPC_MAX (1024 * 1024)

static const struct config_option frontend_table[] = {
    DAEMON_OPTIONS(struct frontend_options, common),
    {"http-port", CONFIG_INT, offsetof(struct frontend_options, http_port),
     "8080", 0, 65535, "HTTP port of /rpc, /healthz and /readyz"},
    {"http-threads", CONFIG_INT,
     offsetof(struct frontend_options, http_threads), "4", 1, 64,
     "HTTP worker threads"},
    {"body-max", CONFIG_INT, offsetof(struct frontend_options, body_max),
     "1048576", 1024, 64 * 1024 * 1024, "largest request body (bytes)"},
    {"batch-max", CONFIG_INT, offsetof(struct frontend_options, batch_max),
     "1000", 1, 100000, "most calls in one JSON-RPC batch"},
    {"events-max", CONFIG_INT, offsetof(struct frontend_options, events_max),
     "10000", 1, 1000000, "most events in one events.record call"},
    {"cors-origins", CONFIG_STRING,
     offsetof(struct frontend_options, cors_origins), "", 0, 0,
     "origins allowed to call from a browser, comma-separated, or *"},
    {"tls-cert", CONFIG_STRING, offsetof(struct frontend_options, tls_cert),
     NULL, 0, 0, "PEM certificate file: serve HTTPS (with --tls-key)"},
    {"tls-key", CONFIG_STRING, offsetof(struct frontend_options, tls_key),
     NULL, 0, 0, "PEM private key file of --tls-cert"},
    {"rpc-timeout-ms", CONFIG_INT,
     offsetof(struct frontend_options, rpc_timeout_ms), "1000", 10, 60000,
     "how long to wait for aggregators' answers"},
    {"confirm-timeout-ms", CONFIG_INT,
     offsetof(struct frontend_options, confirm_timeout_ms), "1000", 10,
     60000, "how long to wait for a broker confirm before giving up"},
    {"meta-ttl-ms", CONFIG_INT, offsetof(struct frontend_options, meta_ttl_ms),
     "1000", 0, 60000, "how long a metric's type is cached locally"},
    {"query-cache", CONFIG_INT,
     offsetof(struct frontend_options, query_cache), "1024", 0, 1000000,
     "metrics whose decoded closed buckets metrics.query keeps between "
     "queries (0 = none: read and decode every bucket each time)"},
    {"query-cache-mb", CONFIG_INT,
     offsetof(struct frontend_options, query_cache_mb), "64", 0, 1048576,
     "at most about this many MiB of cache values decoded for --query-cache "
     "(0 = no limit but the metric count)"},
    {"openrpc", CONFIG_STRING, offsetof(struct frontend_options, openrpc),
     SCHEMA_DIR "/openrpc.json", 0, 0, "the OpenRPC document rpc.discover "
     "returns"},
    {"tokens", CONFIG_STRING, offsetof(struct frontend_options, tokens), "",
     0, 0, "token file (schema/auth.md); without one, auth is off and "
     "--http-address must be loopback"},
    {"rate-limit", CONFIG_INT, offsetof(struct frontend_options, rate_limit),
     "0", 0, 10000000, "requests per second per client: its token, or its "
     "address without one (0 = no limit); a burst of as many is allowed"},
    {"connections-max", CONFIG_INT,
     offsetof(struct frontend_options, connections_max), "1024", 1, 65536,
     "open HTTP connections in all"},
    {"connections-per-ip", CONFIG_INT,
     offsetof(struct frontend_options, connections_per_ip), "256", 1, 65536,
     "open HTTP connections from one client address; a request on one "
     "more gets 429"},
};
#define FRONTEND_TABLE_SIZE (sizeof(frontend_table) / sizeof(frontend_table[0]))

/* The scope each method needs (DESIGN.md, "Security"); 0 for none. */
static const struct frontend_method {
    const char *name;
    unsigned scope;
    int (*handler)(struct jsonrpc_call *call, void *ctx);
} frontend_methods[] = {
    {"events.record", AUTH_WRITE, method_events_record},
    {"metrics.query", AUTH_READ, method_metrics_query},
    {"metrics.list", AUTH_READ, method_metrics_list},
    {"metrics.delete", AUTH_ADMIN, method_metrics_delete},
    {"cluster.status", AUTH_READ, method_cluster_status},
    {"cluster.reshard", AUTH_ADMIN, method_cluster_reshard},
    {"rpc.discover", 0, method_rpc_discover},
};
#define FRONTEND_METHOD_COUNT \
    (sizeof(frontend_methods) / sizeof(frontend_methods[0]))

/* jsonrpc's table: every row goes through frontend_call. */
static struct jsonrpc_method frontend_rpc_table[FRONTEND_METHOD_COUNT];

/* Checks the request's token against the scope CALL's method needs, then
 * runs the method, or answers 1301-1303 (schema/errors.md). */
static int
frontend_call(struct jsonrpc_call *call, void *ctx)
{
    struct exchange *x = ctx;
    const struct frontend_method *m = NULL;
    const char *name = jsonrpc_call_method(call);
    char why[FRONTEND_REASON_MAX];

    for (size_t i = 0; i < FRONTEND_METHOD_COUNT && m == NULL; i++)
        if (strcmp(frontend_methods[i].name, name) == 0)
            m = &frontend_methods[i];
    if (m->scope == 0 || x->fe->auth == NULL)
        return m->handler(call, ctx);
    switch (x->verdict) {
    case AUTH_GRANTED:
        if ((x->token->scopes & m->scope) != 0)
            return m->handler(call, ctx);
        snprintf(why, sizeof(why), "%s needs the %s scope, which token "
                 "\"%s\" does not have", name, auth_scope_name(m->scope),
                 x->token->name);
        jsonrpc_call_error(call, AUTH_ERR_FORBIDDEN, "Forbidden",
                           json_object_new_string(why));
        break;
    case AUTH_MISSING:
        snprintf(why, sizeof(why), "%s needs a token with the %s scope: "
                 "send Authorization: Bearer <token>", name,
                 auth_scope_name(m->scope));
        jsonrpc_call_error(call, AUTH_ERR_MISSING, "Unauthorized",
                           json_object_new_string(why));
        break;
    case AUTH_MALFORMED:
        jsonrpc_call_error(call, AUTH_ERR_INVALID, "Invalid token",
                           json_object_new_string(
                               "the Authorization header must be "
                               "Bearer <token>"));
        break;
    case AUTH_UNKNOWN:
        jsonrpc_call_error(call, AUTH_ERR_INVALID, "Invalid token",
                           json_object_new_string("the token is not known"));
        break;
    }
    return JSONRPC_DONE;
}

/* ---------------------------------------------------------------------- */
/* Exchanges                                                               */
/* ---------------------------------------------------------------------- */

struct exchange_done {
    struct exchange_done *next;
    struct jsonrpc_call *call;
    json_object *result;
    int code;
    char *message;
    json_object *data;
};

/* Applies the late answers, answers X's HTTP request and frees X. Called
 * by the one thread that saw the exchange finish. */
static void
exchange_finish(struct exchange *x)
{
    size_t len;
    char *text;

    while (x->done != NULL) {
        struct exchange_done *d = x->done;

        x->done = d->next;
        if (d->result != NULL)
            jsonrpc_call_result(d->call, d->result);
        else
            jsonrpc_call_error(d->call, d->code, d->message, d->data);
        free(d->message);
        free(d);
    }
    text = jsonrpc_batch_response(x->batch, &len);
    if (text == NULL)
        http_request_respond(x->http, FRONTEND_HTTP_NO_CONTENT, NULL, 0);
    else
        http_request_respond(x->http, FRONTEND_HTTP_OK, text, len);
    free(text);
    jsonrpc_batch_destroy(x->batch);
    pthread_mutex_destroy(&x->lock);
    free(x);
}

void
exchange_expect(struct exchange *x)
{
    pthread_mutex_lock(&x->lock);
    x->outstanding++;
    pthread_mutex_unlock(&x->lock);
}

void
exchange_complete(struct exchange *x, struct jsonrpc_call *call,
                  json_object *result, int code, const char *message,
                  json_object *data)
{
    struct exchange_done *d = xcalloc(1, sizeof(*d));
    int last;

    d->call = call;
    d->result = result;
    d->code = code;
    d->message = message != NULL ? xstrndup(message, strlen(message)) : NULL;
    d->data = data;
    pthread_mutex_lock(&x->lock);
    d->next = x->done;
    x->done = d;
    last = --x->outstanding == 0 && !x->dispatching;
    pthread_mutex_unlock(&x->lock);
    if (last)
        exchange_finish(x);
}

/* Takes one request from the bucket of X's client (its token's name when
 * it has a good one, else its address); when empty, answers 429 with
 * 1107 and returns 0. */
static int
frontend_rate_ok(struct frontend *fe, struct exchange *x)
{
    char key[AUTH_NAME_MAX + 16], data[FRONTEND_REASON_MAX + 64];
    char addr[INET6_ADDRSTRLEN];
    json_object *o, *error;
    const char *text;

    if (x->token != NULL) {
        snprintf(key, sizeof(key), "token:%s", x->token->name);
    } else {
        http_request_client(x->http, addr, sizeof(addr));
        snprintf(key, sizeof(key), "ip:%s", addr);
    }
    if (ratelimit_take(fe->ratelimit, key, daemon_monotonic_us()))
        return 1;
    snprintf(data, sizeof(data), "at most %ld requests per second per "
             "client (%s); retry", fe->opts.rate_limit, key);
    error = json_object_new_object();
    json_object_object_add(error, "code", json_object_new_int(FRONTEND_ERR_RATE));
    json_object_object_add(error, "message",
                           json_object_new_string("Too many requests"));
    json_object_object_add(error, "data", json_object_new_string(data));
    o = json_object_new_object();
    json_object_object_add(o, "jsonrpc", json_object_new_string("2.0"));
    json_object_object_add(o, "error", error);
    json_object_object_add(o, "id", NULL);
    text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN
                                             | JSON_C_TO_STRING_NOSLASHESCAPE);
    http_request_respond(x->http, FRONTEND_HTTP_TOO_MANY, text, strlen(text));
    json_object_put(o);
    return 0;
}

static void
frontend_rpc(struct http_request *req, const char *body, size_t len,
             void *ctx)
{
    struct frontend *fe = ctx;
    struct exchange *x;
    int last, stopping;

    pthread_mutex_lock(&fe->stop_lock);
    stopping = fe->stopping;
    pthread_mutex_unlock(&fe->stop_lock);
    if (stopping) {
        http_request_respond(req, FRONTEND_HTTP_UNAVAILABLE,
                             frontend_stopping_body,
                             sizeof(frontend_stopping_body) - 1);
        return;
    }
    x = xcalloc(1, sizeof(*x));
    x->fe = fe;
    x->http = req;
    if (fe->auth != NULL)
        x->verdict = auth_check(fe->auth,
                                http_request_header(req, "Authorization"),
                                &x->token);
    if (fe->ratelimit != NULL && !frontend_rate_ok(fe, x)) {
        free(x);
        return;
    }
    x->batch = jsonrpc_parse(body, len, &fe->limits);
    x->dispatching = 1;
    pthread_mutex_init(&x->lock, NULL);
    jsonrpc_dispatch(x->batch, frontend_rpc_table, FRONTEND_METHOD_COUNT, x);
    pthread_mutex_lock(&x->lock);
    x->dispatching = 0;
    last = x->outstanding == 0;
    pthread_mutex_unlock(&x->lock);
    if (last)
        exchange_finish(x);
}

static int
frontend_ready(void *ctx, char *why, size_t whylen)
{
    struct frontend *fe = ctx;

    if (!publisher_ready(fe->publisher)) {
        char error[BUS_ERR_MAX];

        publisher_last_error(fe->publisher, error, sizeof(error));
        snprintf(why, whylen, "the publisher is not connected to RabbitMQ%s%s",
                 error[0] != '\0' ? ": " : "", error);
        return 0;
    }
    if (!inbox_ready(fe->inbox)) {
        snprintf(why, whylen, "the consumer is not connected to RabbitMQ");
        return 0;
    }
    return 1;
}

/* 1 if ADDRESS (a numeric address or "localhost") is on loopback. */
static int
frontend_loopback(const char *address)
{
    return strncmp(address, "127.", 4) == 0 || strcmp(address, "::1") == 0
        || strcmp(address, "localhost") == 0;
}

/* Loads the token file, or leaves auth off when there is none, which only
 * a loopback listener may do. */
static int
frontend_auth(struct frontend *fe, char *err, size_t errlen)
{
    const char *address = fe->opts.common.http_address;

    if (fe->opts.tokens[0] == '\0') {
        if (!frontend_loopback(address)) {
            snprintf(err, errlen, "--http-address %s is not loopback: give "
                     "--tokens FILE (auth may be off only on loopback)",
                     address);
            return -1;
        }
        log_info("auth is off: every listener is on loopback (%s)", address);
        return 0;
    }
    fe->auth = auth_load(fe->opts.tokens, err, errlen);
    if (fe->auth == NULL)
        return -1;
    log_info("auth is on: %zu tokens from %s", fe->auth->count,
             fe->opts.tokens);
    return 0;
}

static json_object *
frontend_load_openrpc(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *text;
    size_t len;
    json_object *doc;

    if (f == NULL) {
        snprintf(err, errlen, "cannot open %s", path);
        return NULL;
    }
    text = xmalloc(FRONTEND_OPENRPC_MAX);
    len = fread(text, 1, FRONTEND_OPENRPC_MAX, f);
    fclose(f);
    doc = daemon_parse_json(text, len);
    free(text);
    if (doc == NULL)
        snprintf(err, errlen, "%s is not one JSON document", path);
    return doc;
}

/* Until a stop: takes a newer slot map from the instances as soon as the
 * inbox is connected, when a reshard announces one, and every
 * FRONTEND_MAP_REFRESH_US (a missed announcement, a frontend that was
 * down). */
static void
frontend_watch_map(struct frontend *fe)
{
    int64_t last_us = 0;
    int first = 1;

    /* Test hook: a frontend that keeps routing by an old map. */
    if (getenv(FRONTEND_NO_REFRESH_ENV) != NULL
        && strcmp(getenv(FRONTEND_NO_REFRESH_ENV), "1") == 0) {
        log_warn("%s=1: the slot map is never refreshed (tests only)",
                 FRONTEND_NO_REFRESH_ENV);
        while (!daemon_stopping)
            daemon_sleep_ms(FRONTEND_TICK_MS);
        return;
    }
    while (!daemon_stopping) {
        int64_t now = daemon_monotonic_us();
        uint64_t hint = __atomic_load_n(&fe->map_hint, __ATOMIC_RELAXED);

        if (inbox_ready(fe->inbox)
            && (first || now - last_us >= FRONTEND_MAP_REFRESH_US
                || (hint > frontend_map(fe)->version
                    && now - last_us >= FRONTEND_MAP_RETRY_US))) {
            frontend_map_refresh(fe, 1);
            first = 0;
            last_us = now;
        }
        daemon_sleep_ms(FRONTEND_TICK_MS);
    }
}

int
main(int argc, char **argv)
{
    struct frontend fe;
    struct http_server *http = NULL;
    struct http_config hc = {0};
    char err[DAEMON_ERR_MAX], tag[FRONTEND_TAG_MAX], host[FRONTEND_TAG_MAX];
    int rc, status = 1;

    memset(&fe, 0, sizeof(fe));
    pthread_mutex_init(&fe.stop_lock, NULL);
    pthread_mutex_init(&fe.map_lock, NULL);
    pthread_mutex_init(&fe.reshard_lock, NULL);
    rc = config_parse(frontend_table, FRONTEND_TABLE_SIZE, &fe.opts, argc,
                      argv, stdout, err, sizeof(err));
    if (rc != CONFIG_RUN) {
        if (rc < 0)
            fprintf(stderr, "tally-frontend: %s\n", err);
        config_free(frontend_table, FRONTEND_TABLE_SIZE, &fe.opts);
        return rc < 0 ? 2 : 0;
    }
    snprintf(tag, sizeof(tag), "frontend :%ld", fe.opts.http_port);
    fe.map = daemon_setup(&fe.opts.common, tag, err, sizeof(err));
    if (fe.map == NULL)
        goto fail;
    if (frontend_auth(&fe, err, sizeof(err)) != 0)
        goto fail;
    if (fe.opts.rate_limit > 0)
        fe.ratelimit = ratelimit_create(fe.opts.rate_limit,
                                        fe.opts.rate_limit);
    fe.openrpc = frontend_load_openrpc(fe.opts.openrpc, err, sizeof(err));
    if (fe.openrpc == NULL)
        goto fail;
    for (size_t i = 0; i < FRONTEND_METHOD_COUNT; i++) {
        frontend_rpc_table[i].name = frontend_methods[i].name;
        frontend_rpc_table[i].handler = frontend_call;
    }
    fe.cache = cache_create(fe.opts.common.memcached, CACHE_TIMEOUT_MS_DEFAULT,
                            err, sizeof(err));
    if (fe.cache == NULL)
        goto fail;
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "host");
    host[sizeof(host) - 1] = '\0';
    for (char *p = host; *p != '\0'; p++)
        if (*p <= ' ' || *p > '~')
            *p = '-';
    snprintf(fe.origin, sizeof(fe.origin), "fe-%.40s:%ld", host,
             fe.opts.http_port);
    fe.limits.batch_max = (size_t)fe.opts.batch_max;
    daemon_catch_signals();
    daemon_bus_config(&fe.opts.common, &fe.bus_config);
    fe.meta = meta_create(fe.opts.meta_ttl_ms);
    if (fe.opts.query_cache > 0)
        fe.qcache = qcache_create((size_t)fe.opts.query_cache,
                                  (size_t)fe.opts.query_cache_mb * FRONTEND_MIB);
    fe.publisher = publisher_create(&fe.bus_config, fe.map->instances,
                                    (int)fe.opts.confirm_timeout_ms,
                                    "tally-frontend publisher");
    fe.inbox = inbox_create(&fe);
    hc.address = fe.opts.common.http_address;
    hc.port = (int)fe.opts.http_port;
    hc.body_max = (size_t)fe.opts.body_max;
    hc.threads = (unsigned)fe.opts.http_threads;
    hc.cors_origins = fe.opts.cors_origins;
    hc.connection_limit = (unsigned)fe.opts.connections_max;
    hc.per_ip_limit = (unsigned)fe.opts.connections_per_ip;
    hc.tls_cert = fe.opts.tls_cert;
    hc.tls_key = fe.opts.tls_key;
    http = http_server_start(&hc, frontend_rpc, frontend_ready, &fe, err,
                             sizeof(err));
    if (http == NULL)
        goto stop;
    log_info("serving %s://%s:%d/rpc (%u instances, map version %llu)",
             hc.tls_cert != NULL && hc.tls_cert[0] != '\0' ? "https" : "http",
             hc.address,
             http_server_port(http), frontend_map(&fe)->instances,
             (unsigned long long)frontend_map(&fe)->version);
    frontend_watch_map(&fe);
    log_info("stopping");
    /* New requests get 503; the I/O threads stop (calls in flight settle
     * and are answered) before HTTP goes, and are freed after it. */
    pthread_mutex_lock(&fe.stop_lock);
    fe.stopping = 1;
    pthread_mutex_unlock(&fe.stop_lock);
    inbox_stop(fe.inbox);
    publisher_stop(fe.publisher);
    http_server_stop(http);
    status = 0;
stop:
    inbox_destroy(fe.inbox);
    publisher_destroy(fe.publisher);
    meta_destroy(fe.meta);
    qcache_destroy(fe.qcache);
fail:
    if (status != 0)
        fprintf(stderr, "tally-frontend: %s\n", err);
    if (fe.cache != NULL)
        cache_destroy(fe.cache);
    json_object_put(fe.openrpc);
    auth_free(fe.auth);
    ratelimit_destroy(fe.ratelimit);
    frontend_maps_free(&fe);
    pthread_mutex_destroy(&fe.map_lock);
    pthread_mutex_destroy(&fe.reshard_lock);
    config_free(frontend_table, FRONTEND_TABLE_SIZE, &fe.opts);
    pthread_mutex_destroy(&fe.stop_lock);
    return status;
}
