/*
 * http: the HTTP side of the daemons on libmicrohttpd (see http.h for the
 * routes). One access handler routes each request on its first call;
 * POST /rpc gets a struct http_request that gathers the body and lives
 * until MHD reports the request completed (on_completed frees it).
 *
 *   first call    route, check Content-Type and Content-Length
 *   data calls    append to the body (or drop it once over body_max)
 *   last call     rpc handler -> answered? queue it
 *                              : MHD_suspend_connection
 *   respond       store the answer; if suspended, MHD_resume_connection
 *   resumed call  queue the stored answer
 *
 * The server lock guards every request's answer and the list of active
 * requests (handler called, not completed), so an answer from another
 * thread cannot slip between the handler's return and the suspension.
 * Stop answers the suspended requests 503 and waits (bounded) until the
 * active ones are delivered, because MHD must not be stopped with
 * suspended connections.
 *
 * HTTPS: the PEM files are read at start and handed to MHD as text. MHD's
 * own log is caught (first message kept), because a certificate GnuTLS
 * rejects shows up only there; it becomes the start error.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hash.h"
#include "xalloc.h"

#define HTTP_THREADS_DEFAULT          2
#define HTTP_CONNECTION_LIMIT_DEFAULT 1024
#define HTTP_PER_IP_LIMIT_DEFAULT     256
#define HTTP_TIMEOUT_S_DEFAULT        30
#define HTTP_PORT_MAX                 65535
#define HTTP_BODY_INITIAL             1024
#define HTTP_STOP_GRACE_S             2
#define HTTP_REASON_MAX               256
#define HTTP_PEM_MAX                  (1024 * 1024)
#define HTTP_JSON_FLAGS  (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define HTTP_MEDIA_JSON  "application/json"
#define HTTP_SPACE       " \t"
#define HTTP_HEALTH_BODY "{\"status\":\"ok\"}"

#define HTTP_STATUS_NO_CONTENT        204
#define HTTP_STATUS_OK                200
#define HTTP_STATUS_NOT_FOUND         404
#define HTTP_STATUS_METHOD            405
#define HTTP_STATUS_TOO_LARGE         413
#define HTTP_STATUS_MEDIA_TYPE        415
#define HTTP_STATUS_TOO_MANY          429
#define HTTP_STATUS_UNAVAILABLE       503

/* JSON-RPC's "Internal error", for requests cut off by a stop. */
#define HTTP_ERR_SHUTDOWN             (-32603)

#define HTTP_IP_BUCKETS   1024
#define HTTP_ADDR_MAX     16          /* an IPv6 address */

#define HTTP_ALLOW_RPC    "POST, OPTIONS"
#define HTTP_ALLOW_HEALTH "GET"

/* Open connections from one client address. */
struct http_ip {
    struct http_ip *next;
    uint8_t addr[HTTP_ADDR_MAX];
    size_t addr_len;
    unsigned connections;
};

struct http_server {
    struct MHD_Daemon *daemon;
    int port;
    size_t body_max;
    unsigned per_ip_limit;
    pthread_mutex_t ip_lock;      /* guards ips */
    struct http_ip *ips[HTTP_IP_BUCKETS];
    char *cors_origins;           /* owned; NULL for none */
    http_rpc_fn rpc;
    http_ready_fn ready;
    void *ctx;
    pthread_mutex_t lock;         /* guards answers, active, stopping */
    pthread_cond_t active_empty;  /* signalled when active becomes NULL */
    struct http_request *active;  /* handler called, request not completed */
    int stopping;
    char *tls_cert;               /* owned PEM text; NULL for plain HTTP */
    char *tls_key;                /* owned PEM text; wiped when freed */
    size_t tls_key_len;
    pthread_mutex_t log_lock;     /* guards mhd_error */
    char mhd_error[HTTP_REASON_MAX];   /* MHD's first log message */
};

struct http_request {
    struct http_server *server;
    struct MHD_Connection *connection;
    const char *origin;        /* allowed Origin to echo or NULL; MHD's */
    char *body;                /* owned; NULL until the first byte */
    size_t len, cap;
    int too_large;             /* body dropped: answer 413 at the end */
    int handled;               /* the rpc handler has been called */
    /* Under server->lock: */
    int answered;
    int suspended;             /* MHD_suspend_connection without resume */
    unsigned status;
    char *answer;              /* owned; NULL for no body */
    size_t answer_len;
    struct http_request *prev, *next;
};

static const char *const preflight_headers[] = {
    "Access-Control-Allow-Methods", "POST",
    "Access-Control-Allow-Headers", "Content-Type, Authorization",
    "Access-Control-Max-Age", "600",
    NULL,
};

/* ---- bodies and replies -------------------------------------------------- */

static char *
format_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *
format_alloc(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *s;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    s = xmalloc((size_t)(n < 0 ? 0 : n) + 1);
    s[0] = '\0';
    va_start(ap, fmt);
    vsnprintf(s, (size_t)(n < 0 ? 0 : n) + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Returns the text of OBJ as a new string owned by the caller; puts OBJ. */
static char *
json_take_text(json_object *obj, size_t *len)
{
    const char *text = json_object_to_json_string_length(obj, HTTP_JSON_FLAGS, len);
    char *copy = xstrndup(text, *len);

    json_object_put(obj);
    return copy;
}

/* A JSON-RPC error body with "id": null, owned by the caller. */
static char *
error_body(int code, const char *message, const char *data, size_t *len)
{
    json_object *root = json_object_new_object();
    json_object *error = json_object_new_object();

    json_object_object_add(error, "code", json_object_new_int(code));
    json_object_object_add(error, "message", json_object_new_string(message));
    json_object_object_add(error, "data", json_object_new_string(data));
    json_object_object_add(root, "jsonrpc", json_object_new_string("2.0"));
    json_object_object_add(root, "error", error);
    json_object_object_add(root, "id", NULL);
    return json_take_text(root, len);
}

/* Queues STATUS with a copy of BODY (NULL for none) as JSON, the CORS
 * headers when ORIGIN is set, and EXTRA name/value pairs (NULL-ended). */
static enum MHD_Result
reply(struct MHD_Connection *conn, const char *origin, unsigned status,
      const char *body, size_t len, const char *const *extra)
{
    char *copy = body != NULL ? xstrndup(body, len) : NULL;
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(copy != NULL ? len : 0, copy,
                                           MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(copy);
        return MHD_NO;
    }
    if (body != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, HTTP_MEDIA_JSON);
    if (origin != NULL) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
    }
    for (; extra != NULL && extra[0] != NULL; extra += 2)
        MHD_add_response_header(resp, extra[0], extra[1]);
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result
reply_error(struct MHD_Connection *conn, const char *origin, unsigned status,
            int code, const char *message, const char *data, const char *const *extra)
{
    size_t len;
    char *body = error_body(code, message, data, &len);
    enum MHD_Result ret = reply(conn, origin, status, body, len, extra);

    free(body);
    return ret;
}

static enum MHD_Result
reply_too_large(struct http_server *s, struct MHD_Connection *conn, const char *origin)
{
    char *data = format_alloc("the body limit is %zu bytes", s->body_max);
    enum MHD_Result ret = reply_error(conn, origin, HTTP_STATUS_TOO_LARGE,
                                      HTTP_ERR_BODY_TOO_LARGE, "Request body too large",
                                      data, NULL);

    free(data);
    return ret;
}

static enum MHD_Result
reply_method(struct MHD_Connection *conn, const char *origin, const char *method,
             const char *url, const char *allow)
{
    const char *const extra[] = { MHD_HTTP_HEADER_ALLOW, allow, NULL };
    char *data = format_alloc("%s is not allowed on %s", method, url);
    enum MHD_Result ret = reply_error(conn, origin, HTTP_STATUS_METHOD, HTTP_ERR_METHOD,
                                      "Method not allowed", data, extra);

    free(data);
    return ret;
}

static enum MHD_Result
reply_not_found(struct MHD_Connection *conn, const char *origin, const char *url)
{
    char *data = format_alloc("no such path: %s", url);
    enum MHD_Result ret = reply_error(conn, origin, HTTP_STATUS_NOT_FOUND,
                                      HTTP_ERR_NOT_FOUND, "Not found", data, NULL);

    free(data);
    return ret;
}

static enum MHD_Result
reply_ready(struct http_server *s, struct MHD_Connection *conn, const char *origin)
{
    char why[HTTP_REASON_MAX] = "";
    json_object *root = json_object_new_object();
    int ready = s->ready == NULL || s->ready(s->ctx, why, sizeof why);
    size_t len;
    char *body;
    enum MHD_Result ret;

    json_object_object_add(root, "ready", json_object_new_boolean(ready));
    if (!ready)
        json_object_object_add(root, "reason", json_object_new_string(why));
    body = json_take_text(root, &len);
    ret = reply(conn, origin, ready ? HTTP_STATUS_OK : HTTP_STATUS_UNAVAILABLE, body, len, NULL);
    free(body);
    return ret;
}

/* ---- request checks ------------------------------------------------------ */

/* The request's Origin when the server allows it, else NULL. */
static const char *
allowed_origin(const struct http_server *s, struct MHD_Connection *conn)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    const char *p = s->cors_origins;

    if (origin == NULL || p == NULL)
        return NULL;
    while (*p != '\0') {
        size_t span, n;

        p += strspn(p, HTTP_SPACE);
        span = strcspn(p, ",");
        for (n = span; n > 0 && strchr(HTTP_SPACE, p[n - 1]) != NULL; n--)
            ;
        if ((n == 1 && p[0] == '*') || (n == strlen(origin) && memcmp(p, origin, n) == 0))
            return origin;
        p += span;
        if (*p == ',')
            p++;
    }
    return NULL;
}

/* 1 if the media type of TYPE is application/json, parameters aside. */
static int
is_json_type(const char *type)
{
    size_t n;

    if (type == NULL)
        return 0;
    type += strspn(type, HTTP_SPACE);
    for (n = strcspn(type, ";"); n > 0 && strchr(HTTP_SPACE, type[n - 1]) != NULL; n--)
        ;
    return n == strlen(HTTP_MEDIA_JSON) && strncasecmp(type, HTTP_MEDIA_JSON, n) == 0;
}

/* 1 if Content-Length (already validated as digits by MHD) exceeds MAX. */
static int
length_over(const char *length, size_t max)
{
    unsigned long long v;

    if (length == NULL)
        return 0;
    errno = 0;
    v = strtoull(length, NULL, 10);
    return errno == ERANGE || v > max;
}

/* ---- the rpc request ----------------------------------------------------- */

static void
body_reserve(struct http_request *req, size_t need)
{
    size_t cap = req->cap == 0 ? HTTP_BODY_INITIAL : req->cap;

    if (need <= req->cap)
        return;
    while (cap < need)
        cap *= 2;
    req->body = xrealloc(req->body, cap);
    req->cap = cap;
}

static void
body_append(struct http_request *req, const char *data, size_t size)
{
    if (req->too_large)
        return;
    if (size > req->server->body_max - req->len) {
        req->too_large = 1;
        free(req->body);
        req->body = NULL;
        req->len = req->cap = 0;
        return;
    }
    body_reserve(req, req->len + size + 1);
    memcpy(req->body + req->len, data, size);
    req->len += size;
}

/* Stores the answer (BODY taken over). Lock held. */
static void
do_answer(struct http_request *req, unsigned status, char *body, size_t len)
{
    req->answered = 1;
    req->status = status;
    req->answer = body;
    req->answer_len = len;
    if (req->suspended) {
        req->suspended = 0;
        MHD_resume_connection(req->connection);
    }
}

/* Answers 503 because the server is stopping. Lock held. */
static void
do_answer_shutdown(struct http_request *req)
{
    size_t len;
    char *body = error_body(HTTP_ERR_SHUTDOWN, "Internal error",
                            "the server is shutting down", &len);

    do_answer(req, HTTP_STATUS_UNAVAILABLE, body, len);
}

static enum MHD_Result
reply_answer(struct http_request *req)
{
    return reply(req->connection, req->origin, req->status, req->answer, req->answer_len,
                 NULL);
}

/* The whole body is in: run the handler, then answer or suspend. */
static enum MHD_Result
rpc_call(struct http_server *s, struct http_request *req)
{
    int answered;

    req->handled = 1;
    body_reserve(req, req->len + 1);
    req->body[req->len] = '\0';
    pthread_mutex_lock(&s->lock);
    req->next = s->active;
    if (s->active != NULL)
        s->active->prev = req;
    s->active = req;
    pthread_mutex_unlock(&s->lock);

    s->rpc(req, req->body, req->len, s->ctx);

    pthread_mutex_lock(&s->lock);
    if (!req->answered && s->stopping)
        do_answer_shutdown(req);
    answered = req->answered;
    if (!answered) {
        req->suspended = 1;
        MHD_suspend_connection(req->connection);
    }
    pthread_mutex_unlock(&s->lock);
    return answered ? reply_answer(req) : MHD_YES;
}

/* First call of POST /rpc: reject early or set up the request. */
static enum MHD_Result
rpc_begin(struct http_server *s, struct MHD_Connection *conn, const char *origin,
          void **con_cls)
{
    struct http_request *req;

    if (!is_json_type(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_CONTENT_TYPE)))
        return reply_error(conn, origin, HTTP_STATUS_MEDIA_TYPE, HTTP_ERR_CONTENT_TYPE,
                           "Unsupported content type",
                           "POST /rpc needs Content-Type: application/json", NULL);
    if (length_over(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_CONTENT_LENGTH),
                    s->body_max))
        return reply_too_large(s, conn, origin);
    req = xcalloc(1, sizeof *req);
    req->server = s;
    req->connection = conn;
    req->origin = origin;
    *con_cls = req;
    return MHD_YES;
}

/* ---- MHD callbacks ------------------------------------------------------- */

/* The client address of CONN (4 or 16 bytes) into ADDR; its length, or 0
 * when unknown. */
static size_t
client_addr(struct MHD_Connection *conn, uint8_t addr[HTTP_ADDR_MAX])
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info != NULL ? info->client_addr : NULL;

    if (sa != NULL && sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 4;
    }
    if (sa != NULL && sa->sa_family == AF_INET6) {
        memcpy(addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return 16;
    }
    return 0;
}

/* Counts connections per client address (MHD_OPTION_NOTIFY_CONNECTION);
 * the entry is the connection's socket context. */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
              enum MHD_ConnectionNotificationCode code)
{
    struct http_server *s = cls;
    uint8_t addr[HTTP_ADDR_MAX];
    size_t len, b;
    struct http_ip *ip, **p;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        len = client_addr(conn, addr);
        if (len == 0)
            return;
        b = (size_t)(hash_fnv1a64(addr, len) % HTTP_IP_BUCKETS);
        pthread_mutex_lock(&s->ip_lock);
        for (ip = s->ips[b]; ip != NULL; ip = ip->next)
            if (ip->addr_len == len && memcmp(ip->addr, addr, len) == 0)
                break;
        if (ip == NULL) {
            ip = xcalloc(1, sizeof(*ip));
            memcpy(ip->addr, addr, len);
            ip->addr_len = len;
            ip->next = s->ips[b];
            s->ips[b] = ip;
        }
        ip->connections++;
        pthread_mutex_unlock(&s->ip_lock);
        *socket_context = ip;
        return;
    }
    ip = *socket_context;
    if (ip == NULL)
        return;
    b = (size_t)(hash_fnv1a64(ip->addr, ip->addr_len) % HTTP_IP_BUCKETS);
    pthread_mutex_lock(&s->ip_lock);
    if (--ip->connections == 0) {
        for (p = &s->ips[b]; *p != ip; p = &(*p)->next)
            ;
        *p = ip->next;
        free(ip);
    }
    pthread_mutex_unlock(&s->ip_lock);
    *socket_context = NULL;
}

/* 1 if CONN's address has more connections open than the limit. */
static int
over_ip_limit(struct http_server *s, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    const struct http_ip *ip = info != NULL ? info->socket_context : NULL;
    int over;

    if (ip == NULL)
        return 0;
    pthread_mutex_lock(&s->ip_lock);
    over = ip->connections > s->per_ip_limit;
    pthread_mutex_unlock(&s->ip_lock);
    return over;
}

static enum MHD_Result
route(struct http_server *s, struct MHD_Connection *conn, const char *url,
      const char *method, void **con_cls)
{
    const char *origin = allowed_origin(s, conn);
    static const char *const close_headers[] = {
        MHD_HTTP_HEADER_CONNECTION, "close", NULL,
    };
    char data[HTTP_REASON_MAX];

    if (over_ip_limit(s, conn)) {
        snprintf(data, sizeof(data), "at most %u connections from one "
                 "client address", s->per_ip_limit);
        return reply_error(conn, origin, HTTP_STATUS_TOO_MANY,
                           HTTP_ERR_CONNECTIONS, "Too many connections", data,
                           close_headers);
    }

    if (strcmp(url, "/rpc") == 0) {
        if (strcmp(method, MHD_HTTP_METHOD_POST) == 0)
            return rpc_begin(s, conn, origin, con_cls);
        if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0)
            return reply(conn, origin, HTTP_STATUS_NO_CONTENT, NULL, 0,
                         origin != NULL ? preflight_headers : NULL);
        return reply_method(conn, origin, method, url, HTTP_ALLOW_RPC);
    }
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0) {
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
            return reply_method(conn, origin, method, url, HTTP_ALLOW_HEALTH);
        if (strcmp(url, "/readyz") == 0)
            return reply_ready(s, conn, origin);
        return reply(conn, origin, HTTP_STATUS_OK, HTTP_HEALTH_BODY,
                     strlen(HTTP_HEALTH_BODY), NULL);
    }
    return reply_not_found(conn, origin, url);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size,
           void **con_cls)
{
    struct http_server *s = cls;
    struct http_request *req = *con_cls;

    (void)version;
    if (req == NULL)
        return route(s, conn, url, method, con_cls);
    if (*upload_data_size != 0) {
        body_append(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->too_large)
        return reply_too_large(s, conn, req->origin);
    if (!req->handled)
        return rpc_call(s, req);
    return reply_answer(req);   /* resumed: the answer is stored */
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode why)
{
    struct http_server *s = cls;
    struct http_request *req = *con_cls;

    (void)conn;
    (void)why;
    if (req == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    if (req->handled) {
        if (req->prev != NULL)
            req->prev->next = req->next;
        else
            s->active = req->next;
        if (req->next != NULL)
            req->next->prev = req->prev;
        if (s->active == NULL)
            pthread_cond_broadcast(&s->active_empty);
    }
    pthread_mutex_unlock(&s->lock);
    free(req->body);
    free(req->answer);
    free(req);
    *con_cls = NULL;
}

static void
on_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* MHD's log: keeps the first message, which says why a start failed (it
 * comes before anything a running server could log). */
static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct http_server *s = cls;
    size_t n;

    pthread_mutex_lock(&s->log_lock);
    if (s->mhd_error[0] == '\0') {
        vsnprintf(s->mhd_error, sizeof s->mhd_error, fmt, ap);
        n = strlen(s->mhd_error);
        while (n > 0 && strchr(" .\r\n", s->mhd_error[n - 1]) != NULL)
            s->mhd_error[--n] = '\0';
    }
    pthread_mutex_unlock(&s->log_lock);
}

/* ---- TLS files ------------------------------------------------------------ */

/* The whole file at PATH as a new NUL-terminated string owned by the
 * caller (*LEN bytes), or NULL with a reason naming WHAT in ERR. */
static char *
read_pem(const char *path, const char *what, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *text;

    if (f == NULL) {
        snprintf(err, errlen, "cannot read the TLS %s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    text = xmalloc(HTTP_PEM_MAX + 2);
    *len = fread(text, 1, HTTP_PEM_MAX + 1, f);
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read the TLS %s %s: %s", what, path, strerror(errno));
        goto fail;
    }
    if (*len == 0 || *len > HTTP_PEM_MAX) {
        snprintf(err, errlen, "the TLS %s %s is %s", what, path,
                 *len == 0 ? "empty" : "over 1 MiB");
        goto fail;
    }
    fclose(f);
    text[*len] = '\0';
    return text;

fail:
    fclose(f);
    explicit_bzero(text, HTTP_PEM_MAX + 2);
    free(text);
    return NULL;
}

/* Reads CONFIG's certificate and key into S when both are set. */
static int
load_tls(struct http_server *s, const struct http_config *config, char *err, size_t errlen)
{
    int has_cert = config->tls_cert != NULL && config->tls_cert[0] != '\0';
    int has_key = config->tls_key != NULL && config->tls_key[0] != '\0';
    size_t len;

    if (!has_cert && !has_key)
        return 0;
    if (!has_cert || !has_key) {
        snprintf(err, errlen, "HTTPS needs both a certificate and a key "
                 "(only the %s is set)", has_cert ? "certificate" : "key");
        return -1;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        snprintf(err, errlen, "this libmicrohttpd is built without TLS support");
        return -1;
    }
    s->tls_cert = read_pem(config->tls_cert, "certificate", &len, err, errlen);
    if (s->tls_cert == NULL)
        return -1;
    s->tls_key = read_pem(config->tls_key, "key", &s->tls_key_len, err, errlen);
    return s->tls_key != NULL ? 0 : -1;
}

/* ---- public API ---------------------------------------------------------- */

static void
server_free(struct http_server *s)
{
    pthread_cond_destroy(&s->active_empty);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->log_lock);
    pthread_mutex_destroy(&s->ip_lock);
    for (size_t i = 0; i < HTTP_IP_BUCKETS; i++) {
        while (s->ips[i] != NULL) {
            struct http_ip *ip = s->ips[i];

            s->ips[i] = ip->next;
            free(ip);
        }
    }
    free(s->cors_origins);
    free(s->tls_cert);
    if (s->tls_key != NULL)
        explicit_bzero(s->tls_key, s->tls_key_len);
    free(s->tls_key);
    free(s);
}

struct http_server *
http_server_start(const struct http_config *config, http_rpc_fn rpc, http_ready_fn ready,
                  void *ctx, char *err, size_t errlen)
{
    struct http_server *s = NULL;
    struct sockaddr_in addr;
    pthread_condattr_t attr;
    const union MHD_DaemonInfo *info;
    struct MHD_OptionItem tls_options[3];
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME
                     | MHD_USE_ERROR_LOG;

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    if (config->port < 0 || config->port > HTTP_PORT_MAX) {
        snprintf(err, errlen, "port %d is out of range", config->port);
        goto fail;
    }
    addr.sin_port = htons((uint16_t)config->port);
    if (config->address == NULL || inet_pton(AF_INET, config->address, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "\"%s\" is not an IPv4 address",
                 config->address != NULL ? config->address : "");
        goto fail;
    }

    s = xcalloc(1, sizeof *s);
    s->body_max = config->body_max != 0 ? config->body_max : HTTP_BODY_MAX_DEFAULT;
    s->per_ip_limit = config->per_ip_limit != 0 ? config->per_ip_limit
                                                : HTTP_PER_IP_LIMIT_DEFAULT;
    if (config->cors_origins != NULL && config->cors_origins[0] != '\0')
        s->cors_origins = xstrndup(config->cors_origins, strlen(config->cors_origins));
    s->rpc = rpc;
    s->ready = ready;
    s->ctx = ctx;
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->log_lock, NULL);
    pthread_mutex_init(&s->ip_lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->active_empty, &attr);
    pthread_condattr_destroy(&attr);
    if (load_tls(s, config, err, errlen) != 0)
        goto fail;
    memset(tls_options, 0, sizeof tls_options);
    tls_options[0].option = MHD_OPTION_END;
    if (s->tls_cert != NULL) {
        flags |= MHD_USE_TLS;
        tls_options[0].option = MHD_OPTION_HTTPS_MEM_CERT;
        tls_options[0].ptr_value = s->tls_cert;
        tls_options[1].option = MHD_OPTION_HTTPS_MEM_KEY;
        tls_options[1].ptr_value = s->tls_key;
        tls_options[2].option = MHD_OPTION_END;
    }

    s->daemon = MHD_start_daemon(
        flags, (uint16_t)config->port, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,   /* first, or MHD warns */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE,
        config->threads != 0 ? config->threads : HTTP_THREADS_DEFAULT,
        MHD_OPTION_CONNECTION_LIMIT,
        config->connection_limit != 0 ? config->connection_limit : HTTP_CONNECTION_LIMIT_DEFAULT,
        MHD_OPTION_CONNECTION_TIMEOUT,
        config->timeout_s != 0 ? config->timeout_s : HTTP_TIMEOUT_S_DEFAULT,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_ARRAY, tls_options,
        MHD_OPTION_END);
    if (s->daemon == NULL) {
        int saved = errno;

        pthread_mutex_lock(&s->log_lock);
        snprintf(err, errlen, "cannot %s on %s:%d: %s",
                 s->tls_cert != NULL ? "serve HTTPS" : "listen", config->address,
                 config->port, s->mhd_error[0] != '\0' ? s->mhd_error : strerror(saved));
        pthread_mutex_unlock(&s->log_lock);
        goto fail;
    }
    info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? info->port : config->port;
    return s;

fail:
    if (s != NULL)
        server_free(s);
    return NULL;
}

int
http_server_port(const struct http_server *s)
{
    return s->port;
}

void
http_server_stop(struct http_server *s)
{
    MHD_socket listener;
    struct http_request *req;
    struct timespec deadline;

    if (s == NULL)
        return;
    listener = MHD_quiesce_daemon(s->daemon);
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += HTTP_STOP_GRACE_S;

    /* Suspended requests are answered now, those still in the handler
     * when it returns; then wait for the answers to go out. */
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    for (req = s->active; req != NULL; req = req->next)
        if (req->suspended)
            do_answer_shutdown(req);
    while (s->active != NULL &&
           pthread_cond_timedwait(&s->active_empty, &s->lock, &deadline) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&s->lock);

    MHD_stop_daemon(s->daemon);
    if (listener != MHD_INVALID_SOCKET)
        close(listener);
    server_free(s);
}

void
http_request_respond(struct http_request *req, unsigned status, const char *body, size_t len)
{
    struct http_server *s = req->server;
    char *copy = body != NULL ? xstrndup(body, len) : NULL;

    pthread_mutex_lock(&s->lock);
    if (req->answered)
        free(copy);        /* a second answer, or the server answered 503 */
    else
        do_answer(req, status, copy, len);
    pthread_mutex_unlock(&s->lock);
}

const char *
http_request_header(struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->connection, MHD_HEADER_KIND, name);
}

void
http_request_client(struct http_request *req, char *out, size_t outlen)
{
    uint8_t addr[HTTP_ADDR_MAX];
    size_t len = client_addr(req->connection, addr);

    if (len == 0 || inet_ntop(len == 4 ? AF_INET : AF_INET6, addr, out,
                              (socklen_t)outlen) == NULL)
        snprintf(out, outlen, "unknown");
}
