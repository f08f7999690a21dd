/*
 * http: the HTTP side of the daemons, on libmicrohttpd (epoll, internal
 * thread pool). It owns everything HTTP: reading the whole body, limits,
 * content type, CORS, health endpoints, and answering a request later from
 * another thread. It knows nothing of JSON-RPC.
 *
 *   POST /rpc     Content-Type application/json -> rpc handler(body)
 *                 body over body_max -> 413 (early, from Content-Length
 *                 when given); other content type -> 415
 *   OPTIONS /rpc  CORS preflight -> 204
 *   GET /healthz  200 {"status":"ok"}
 *   GET /readyz   200 {"ready":true} or 503 {"ready":false,"reason":"..."}
 *   other paths   404; other methods on a known path 405 with Allow
 *   any request on a connection beyond per_ip_limit from its address
 *                 429 and the connection is closed
 *
 * HTTP-level errors carry a JSON-RPC error body with "id": null and the
 * codes of schema/errors.md (1102 body too large, 1103 content type, 1104
 * not found, 1105 method not allowed, 1106 too many connections).
 *
 * The rpc handler runs on an MHD thread with the whole body. It answers
 * with http_request_respond, at once or later from any thread: a request
 * not answered when the handler returns is suspended
 * (MHD_suspend_connection) and resumed when the answer comes, so waiting
 * on a broker confirm holds no thread.
 *
 * With a certificate and a key (PEM files, read once at start) the server
 * speaks only HTTPS (GnuTLS inside libmicrohttpd); see schema/tls.md.
 */
#ifndef TALLY_HTTP_H
#define TALLY_HTTP_H

#include <stddef.h>

#define HTTP_ERR_MAX 256
#define HTTP_BODY_MAX_DEFAULT (1024 * 1024)

/* Error codes of HTTP-level rejections (schema/errors.md). */
#define HTTP_ERR_BODY_TOO_LARGE 1102
#define HTTP_ERR_CONTENT_TYPE 1103
#define HTTP_ERR_NOT_FOUND 1104
#define HTTP_ERR_METHOD 1105
#define HTTP_ERR_CONNECTIONS 1106

struct http_config {
    const char *address;        /* "127.0.0.1"; borrowed */
    int port;                   /* 0 = any free port (see http_server_port) */
    size_t body_max;            /* bytes; 0 = HTTP_BODY_MAX_DEFAULT */
    unsigned threads;           /* pool size; 0 = 2 */
    unsigned connection_limit;  /* 0 = 1024 */
    unsigned per_ip_limit;      /* connections per client IP; 0 = 256; a
                                   request on one beyond gets 429, 1106 */
    unsigned timeout_s;         /* idle connection timeout; 0 = 30 */
    const char *cors_origins;   /* comma-separated allowed origins, "*"
                                   for any; NULL or "" for none */
    const char *tls_cert;       /* PEM certificate file (chain allowed);
                                   with tls_key: HTTPS. NULL or "" for
                                   plain HTTP */
    const char *tls_key;        /* PEM private key file of tls_cert */
};

struct http_request;

/* Called with the whole body (LEN bytes, NUL-terminated, borrowed until
 * the request is answered). Must see to it that REQ is answered exactly
 * once, now or later. */
typedef void (*http_rpc_fn)(struct http_request *req, const char *body,
                            size_t len, void *ctx);
/* 1 if ready; else 0 with a reason in WHY. */
typedef int (*http_ready_fn)(void *ctx, char *why, size_t whylen);

struct http_server;

/* Starts listening. Returns a new server owned by the caller, or NULL with
 * a reason in ERR (e.g. the port is taken, a TLS file is unreadable or
 * only one of tls_cert and tls_key is set). CONFIG and its strings are
 * copied. */
struct http_server *http_server_start(const struct http_config *config,
                                      http_rpc_fn rpc, http_ready_fn ready,
                                      void *ctx, char *err, size_t errlen);
/* The port actually bound. */
int http_server_port(const struct http_server *s);
/* Stops accepting, waits for the threads, frees S. Requests still
 * unanswered are answered 503 first (waiting at most a few seconds for
 * the answers to go out). Whatever answers requests later must be stopped
 * before: a request may be freed once stop has begun. */
void http_server_stop(struct http_server *s);

/* Answers REQ with STATUS and BODY (LEN bytes, copied; Content-Type
 * application/json), or with no body when BODY is NULL (e.g. 204 for a
 * batch of notifications). Safe from any thread; REQ must not be used
 * afterwards. */
void http_request_respond(struct http_request *req, unsigned status,
                          const char *body, size_t len);
/* Value of request header NAME (case-insensitive), borrowed until the
 * request is answered; NULL when absent. Only from the rpc handler's
 * thread, before answering. */
const char *http_request_header(struct http_request *req, const char *name);
/* The client's address as text (e.g. "127.0.0.1") into OUT; "unknown"
 * when MHD cannot tell. Same thread rule as http_request_header. */
void http_request_client(struct http_request *req, char *out, size_t outlen);

#endif
