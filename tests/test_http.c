/*
 * test_http: the HTTP layer end to end. Each test starts a server on
 * 127.0.0.1 port 0 with a small test handler and talks to it over plain
 * TCP with raw HTTP/1.1 requests (Connection: close), reading the whole
 * response and checking status, headers and exact bodies.
 *
 *   test client --raw HTTP--> http server --body--> test_rpc
 *                                                    | "notify" -> 204
 *                                                    | "later*" -> thread,
 *                                                    |   answers in 100 ms
 *                                                    | "never"  -> no answer
 *                                                    | else     -> echo
 *
 * The HTTPS tests make a self-signed certificate with the openssl CLI in a
 * temp dir and ask over TLS with curl (--cacert: the name is verified).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "http.h"
#include "xalloc.h"

#define TEST_BODY_MAX      64
#define TEST_THREADS       2
#define TEST_ORIGINS       "https://a.example, https://b.example"
#define TEST_ORIGIN_OK     "https://b.example"
#define TEST_ORIGIN_BAD    "https://evil.example"
#define TEST_DELAY_NS      (100 * 1000 * 1000L)
#define TEST_PAUSE_NS      (50 * 1000 * 1000L)
#define TEST_PARALLEL      8
#define TEST_LATER_MAX     32
#define TEST_WAIT_S        5
#define RESPONSE_MAX       8192
#define REQUEST_MAX        1024
#define HEADERS_MAX        32
#define DIR_MAX_TEST       64
#define PATH_MAX_TEST      256
#define COMMAND_MAX        1024

/* A P-256 certificate for 127.0.0.1, valid for a day. */
#define TEST_OPENSSL_REQ \
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes " \
    "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"

#define JSON_HEADER "Content-Type: application/json\r\n"

/* ---- the server under test ----------------------------------------------- */

struct fixture {
    struct http_server *server;
    int port;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    pthread_t later[TEST_LATER_MAX];
    size_t later_count;
    int never_seen;              /* the "never" request reached the handler */
    int ready;
    const char *reason;
};

struct later {
    struct http_request *req;
    const char *body;
    size_t len;
};

static void *
later_main(void *arg)
{
    struct later *l = arg;
    struct timespec delay = { .tv_sec = 0, .tv_nsec = TEST_DELAY_NS };

    nanosleep(&delay, NULL);
    http_request_respond(l->req, 200, l->body, l->len);
    free(l);
    return NULL;
}

static void
test_rpc(struct http_request *req, const char *body, size_t len, void *ctx)
{
    struct fixture *f = ctx;

    if (strcmp(body, "notify") == 0) {
        http_request_respond(req, 204, NULL, 0);
    } else if (strncmp(body, "later", strlen("later")) == 0) {
        struct later *l = xmalloc(sizeof *l);

        l->req = req;
        l->body = body;   /* borrowed until the request is answered */
        l->len = len;
        pthread_mutex_lock(&f->lock);
        /* on an MHD thread: cmocka's asserts belong to the test thread */
        if (f->later_count == TEST_LATER_MAX ||
            pthread_create(&f->later[f->later_count++], NULL, later_main, l) != 0)
            abort();
        pthread_mutex_unlock(&f->lock);
    } else if (strcmp(body, "never") == 0) {
        pthread_mutex_lock(&f->lock);
        f->never_seen = 1;
        pthread_cond_broadcast(&f->changed);
        pthread_mutex_unlock(&f->lock);
    } else {
        http_request_respond(req, 200, body, len);
    }
}

static int
test_ready(void *ctx, char *why, size_t whylen)
{
    struct fixture *f = ctx;

    if (!f->ready)
        snprintf(why, whylen, "%s", f->reason);
    return f->ready;
}

static int
setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    struct http_config config = {
        .address = "127.0.0.1",
        .port = 0,
        .body_max = TEST_BODY_MAX,
        .threads = TEST_THREADS,
        .cors_origins = TEST_ORIGINS,
    };
    char err[HTTP_ERR_MAX] = "";

    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->changed, NULL);
    f->ready = 1;
    f->server = http_server_start(&config, test_rpc, test_ready, f, err, sizeof err);
    if (f->server == NULL) {
        fprintf(stderr, "http_server_start: %s\n", err);
        return -1;
    }
    f->port = http_server_port(f->server);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fixture *f = *state;
    size_t i;

    http_server_stop(f->server);
    for (i = 0; i < f->later_count; i++)
        pthread_join(f->later[i], NULL);
    pthread_cond_destroy(&f->changed);
    pthread_mutex_destroy(&f->lock);
    free(f);
    return 0;
}

/* ---- HTTPS: certificate files and a server using them ------------------- */

struct tls_fixture {
    struct fixture base;         /* first: the plain tests' handlers take it */
    char dir[DIR_MAX_TEST];
    char cert[PATH_MAX_TEST];
    char key[PATH_MAX_TEST];
    char junk[PATH_MAX_TEST];    /* not PEM */
};

static int
tls_setup(void **state)
{
    struct tls_fixture *t = xcalloc(1, sizeof *t);
    char command[COMMAND_MAX], err[HTTP_ERR_MAX] = "";
    struct http_config config = {
        .address = "127.0.0.1",
        .port = 0,
        .body_max = TEST_BODY_MAX,
        .threads = TEST_THREADS,
    };
    FILE *f;

    snprintf(t->dir, sizeof t->dir, "/tmp/test_http.XXXXXX");
    if (mkdtemp(t->dir) == NULL)
        return -1;
    snprintf(t->cert, sizeof t->cert, "%s/cert.pem", t->dir);
    snprintf(t->key, sizeof t->key, "%s/key.pem", t->dir);
    snprintf(t->junk, sizeof t->junk, "%s/junk.pem", t->dir);
    snprintf(command, sizeof command, TEST_OPENSSL_REQ " -keyout %s -out %s 2>/dev/null",
             t->key, t->cert);
    if (system(command) != 0) {
        fprintf(stderr, "failed: %s\n", command);
        return -1;
    }
    f = fopen(t->junk, "w");
    if (f == NULL)
        return -1;
    fputs("not a certificate\n", f);
    fclose(f);

    pthread_mutex_init(&t->base.lock, NULL);
    pthread_cond_init(&t->base.changed, NULL);
    t->base.ready = 1;
    config.tls_cert = t->cert;
    config.tls_key = t->key;
    t->base.server = http_server_start(&config, test_rpc, test_ready, &t->base, err,
                                       sizeof err);
    if (t->base.server == NULL) {
        fprintf(stderr, "http_server_start: %s\n", err);
        return -1;
    }
    t->base.port = http_server_port(t->base.server);
    *state = t;
    return 0;
}

static int
tls_teardown(void **state)
{
    struct tls_fixture *t = *state;

    unlink(t->cert);
    unlink(t->key);
    unlink(t->junk);
    rmdir(t->dir);
    return teardown(state);   /* frees T: base is its first member */
}

/* Runs curl on PATH over HTTPS trusting only T's certificate, with EXTRA
 * arguments; returns curl's exit code, its output (body and " <status>")
 * in OUT. */
static int
curl_https(const struct tls_fixture *t, const char *extra, const char *path, char *out,
     size_t outlen)
{
    char command[COMMAND_MAX];
    size_t len;
    FILE *p;
    int status;

    snprintf(command, sizeof command,
             "curl -sS --max-time %d --cacert %s -w ' %%{http_code}' %s "
             "https://127.0.0.1:%d%s 2>/dev/null",
             TEST_WAIT_S, t->cert, extra, t->base.port, path);
    p = popen(command, "r");
    assert_non_null(p);
    len = fread(out, 1, outlen - 1, p);
    out[len] = '\0';
    status = pclose(p);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* ---- the raw HTTP client ------------------------------------------------- */

struct response {
    char raw[RESPONSE_MAX + 1];
    int status;
    const char *names[HEADERS_MAX];
    const char *values[HEADERS_MAX];
    size_t header_count;
    const char *body;
    size_t body_len;
};

static int
client_send(int port, const char *request)
{
    struct sockaddr_in addr = { .sin_family = AF_INET };
    struct timeval timeout = { .tv_sec = TEST_WAIT_S };
    size_t len = strlen(request), sent = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout), 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    while (sent < len) {
        ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);

        assert_true(n > 0);
        sent += (size_t)n;
    }
    return fd;
}

/* Reads until the server closes, then splits status, headers and body. */
static void
client_receive(int fd, struct response *r)
{
    size_t len = 0;
    char *line, *end;
    ssize_t n;

    memset(r, 0, sizeof *r);
    while (len < RESPONSE_MAX && (n = recv(fd, r->raw + len, RESPONSE_MAX - len, 0)) > 0)
        len += (size_t)n;
    close(fd);
    r->raw[len] = '\0';
    end = strstr(r->raw, "\r\n\r\n");
    assert_non_null(end);
    *end = '\0';
    r->body = end + strlen("\r\n\r\n");
    r->body_len = len - (size_t)(r->body - r->raw);
    assert_int_equal(sscanf(r->raw, "HTTP/1.1 %d ", &r->status), 1);
    line = strstr(r->raw, "\r\n");
    while (line != NULL) {
        char *colon;

        *line = '\0';
        line += strlen("\r\n");
        colon = strchr(line, ':');
        assert_non_null(colon);
        assert_true(r->header_count < HEADERS_MAX);
        *colon = '\0';
        r->names[r->header_count] = line;
        r->values[r->header_count++] = colon + 1 + strspn(colon + 1, " ");
        line = strstr(colon + 1, "\r\n");
    }
}

static const char *
header(const struct response *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->header_count; i++)
        if (strcasecmp(r->names[i], name) == 0)
            return r->values[i];
    return NULL;
}

static void
exchange(int port, const char *request, struct response *r)
{
    client_receive(client_send(port, request), r);
}

static char *
post_request(const char *headers, const char *body)
{
    static char request[REQUEST_MAX];
    int n = snprintf(request, sizeof request,
                     "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "%sContent-Length: %zu\r\n\r\n%s", headers, strlen(body), body);

    assert_true(n > 0 && (size_t)n < sizeof request);
    return request;
}

static void
post(int port, const char *headers, const char *body, struct response *r)
{
    exchange(port, post_request(headers, body), r);
}

static void
assert_body(const struct response *r, const char *expected)
{
    assert_int_equal(r->body_len, strlen(expected));
    assert_string_equal(r->body, expected);
}

/* ---- tests ---------------------------------------------------------------- */

static void
test_echo(void **state)
{
    struct fixture *f = *state;
    struct response r;

    post(f->port, JSON_HEADER, "{\"x\":[1,2]}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type"), "application/json");
    assert_body(&r, "{\"x\":[1,2]}");

    /* case-insensitive media type with a parameter */
    post(f->port, "Content-Type: Application/JSON ; charset=utf-8\r\n", "[]", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "[]");

    /* exactly body_max bytes is still accepted */
    post(f->port, JSON_HEADER,
         "0123456789012345678901234567890123456789012345678901234567890123", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, TEST_BODY_MAX);
}

static void
test_delayed(void **state)
{
    struct fixture *f = *state;
    struct response r;
    int fds[TEST_PARALLEL];
    char body[TEST_BODY_MAX + 1];
    int i;

    post(f->port, JSON_HEADER, "later", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type"), "application/json");
    assert_body(&r, "later");

    /* all sent before any is read: suspended requests hold no thread */
    for (i = 0; i < TEST_PARALLEL; i++) {
        snprintf(body, sizeof body, "later-%d", i);
        fds[i] = client_send(f->port, post_request(JSON_HEADER, body));
    }
    for (i = 0; i < TEST_PARALLEL; i++) {
        client_receive(fds[i], &r);
        snprintf(body, sizeof body, "later-%d", i);
        assert_int_equal(r.status, 200);
        assert_body(&r, body);
    }
}

static void
test_no_body(void **state)
{
    struct fixture *f = *state;
    struct response r;

    post(f->port, JSON_HEADER, "notify", &r);
    assert_int_equal(r.status, 204);
    assert_null(header(&r, "Content-Type"));
    assert_int_equal(r.body_len, 0);
}

static void
test_content_type(void **state)
{
    static const char expected[] =
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1103,\"message\":\"Unsupported content type\","
        "\"data\":\"POST /rpc needs Content-Type: application/json\"},\"id\":null}";
    struct fixture *f = *state;
    struct response r;

    post(f->port, "Content-Type: text/plain\r\n", "{}", &r);
    assert_int_equal(r.status, 415);
    assert_string_equal(header(&r, "Content-Type"), "application/json");
    assert_body(&r, expected);

    post(f->port, "", "{}", &r);
    assert_int_equal(r.status, 415);
    assert_body(&r, expected);

    post(f->port, "Content-Type: application/jsonx\r\n", "{}", &r);
    assert_int_equal(r.status, 415);
}

static void
test_too_large(void **state)
{
    static const char expected[] =
        "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1102,\"message\":\"Request body too large\","
        "\"data\":\"the body limit is 64 bytes\"},\"id\":null}";
    struct fixture *f = *state;
    struct response r;

    /* refused from Content-Length alone: the body is never sent */
    exchange(f->port,
             "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" JSON_HEADER
             "Content-Length: 65\r\n\r\n", &r);
    assert_int_equal(r.status, 413);
    assert_body(&r, expected);

    /* chunked: 3 x 30 bytes grows past 64 */
    exchange(f->port,
             "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" JSON_HEADER
             "Transfer-Encoding: chunked\r\n\r\n"
             "1e\r\n012345678901234567890123456789\r\n"
             "1e\r\n012345678901234567890123456789\r\n"
             "1e\r\n012345678901234567890123456789\r\n"
             "0\r\n\r\n", &r);
    assert_int_equal(r.status, 413);
    assert_body(&r, expected);

    /* chunked under the limit is read whole */
    exchange(f->port,
             "POST /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" JSON_HEADER
             "Transfer-Encoding: chunked\r\n\r\n"
             "3\r\n[1,\r\n" "2\r\n2]\r\n" "0\r\n\r\n", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "[1,2]");
}

static void
test_not_found(void **state)
{
    struct fixture *f = *state;
    struct response r;

    exchange(f->port, "GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    assert_body(&r, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1104,\"message\":\"Not found\","
                    "\"data\":\"no such path: /x\"},\"id\":null}");

    /* the path is escaped inside the JSON string */
    exchange(f->port, "POST /a\"b HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
             "Content-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.status, 404);
    assert_body(&r, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1104,\"message\":\"Not found\","
                    "\"data\":\"no such path: /a\\\"b\"},\"id\":null}");
}

static void
test_method(void **state)
{
    struct fixture *f = *state;
    struct response r;

    exchange(f->port, "GET /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(header(&r, "Allow"), "POST, OPTIONS");
    assert_body(&r, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1105,\"message\":"
                    "\"Method not allowed\",\"data\":\"GET is not allowed on /rpc\"},"
                    "\"id\":null}");

    exchange(f->port, "POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
             "Content-Length: 0\r\n\r\n", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(header(&r, "Allow"), "GET");
    assert_body(&r, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":1105,\"message\":"
                    "\"Method not allowed\",\"data\":\"POST is not allowed on /healthz\"},"
                    "\"id\":null}");
}

static void
test_health(void **state)
{
    struct fixture *f = *state;
    struct response r;

    exchange(f->port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type"), "application/json");
    assert_body(&r, "{\"status\":\"ok\"}");

    exchange(f->port, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "{\"ready\":true}");

    f->ready = 0;
    f->reason = "bus \"main\" down";
    exchange(f->port, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             &r);
    assert_int_equal(r.status, 503);
    assert_body(&r, "{\"ready\":false,\"reason\":\"bus \\\"main\\\" down\"}");
}

static void
test_cors(void **state)
{
    struct fixture *f = *state;
    struct response r;

    post(f->port, JSON_HEADER "Origin: " TEST_ORIGIN_OK "\r\n", "[1]", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Access-Control-Allow-Origin"), TEST_ORIGIN_OK);
    assert_string_equal(header(&r, "Vary"), "Origin");
    assert_body(&r, "[1]");

    post(f->port, "Content-Type: text/plain\r\nOrigin: " TEST_ORIGIN_OK "\r\n", "[1]", &r);
    assert_int_equal(r.status, 415);
    assert_string_equal(header(&r, "Access-Control-Allow-Origin"), TEST_ORIGIN_OK);
    assert_string_equal(header(&r, "Vary"), "Origin");

    exchange(f->port, "OPTIONS /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
             "Origin: " TEST_ORIGIN_OK "\r\nAccess-Control-Request-Method: POST\r\n\r\n", &r);
    assert_int_equal(r.status, 204);
    assert_string_equal(header(&r, "Access-Control-Allow-Origin"), TEST_ORIGIN_OK);
    assert_string_equal(header(&r, "Vary"), "Origin");
    assert_string_equal(header(&r, "Access-Control-Allow-Methods"), "POST");
    assert_string_equal(header(&r, "Access-Control-Allow-Headers"),
                        "Content-Type, Authorization");
    assert_string_equal(header(&r, "Access-Control-Max-Age"), "600");
    assert_int_equal(r.body_len, 0);

    post(f->port, JSON_HEADER "Origin: " TEST_ORIGIN_BAD "\r\n", "[1]", &r);
    assert_int_equal(r.status, 200);
    assert_null(header(&r, "Access-Control-Allow-Origin"));
    assert_null(header(&r, "Vary"));

    exchange(f->port, "OPTIONS /rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
             "Origin: " TEST_ORIGIN_BAD "\r\nAccess-Control-Request-Method: POST\r\n\r\n", &r);
    assert_int_equal(r.status, 204);
    assert_null(header(&r, "Access-Control-Allow-Origin"));
    assert_null(header(&r, "Access-Control-Allow-Methods"));
    assert_null(header(&r, "Access-Control-Allow-Headers"));
    assert_null(header(&r, "Access-Control-Max-Age"));
}

static void
test_stop_suspended(void **state)
{
    struct fixture *f = *state;
    struct timespec deadline, pause = { .tv_sec = 0, .tv_nsec = TEST_PAUSE_NS };
    struct response r;
    int fd = client_send(f->port, post_request(JSON_HEADER, "never"));

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += TEST_WAIT_S;
    pthread_mutex_lock(&f->lock);
    while (!f->never_seen &&
           pthread_cond_timedwait(&f->changed, &f->lock, &deadline) == 0)
        ;
    pthread_mutex_unlock(&f->lock);
    assert_true(f->never_seen);
    /* Give the handler time to return so the request is normally
     * suspended; stopping while it is still in the handler must give the
     * same answer. */
    nanosleep(&pause, NULL);

    http_server_stop(f->server);   /* answers the suspended request */
    f->server = NULL;
    client_receive(fd, &r);
    assert_int_equal(r.status, 503);
    assert_body(&r, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32603,\"message\":"
                    "\"Internal error\",\"data\":\"the server is shutting down\"},"
                    "\"id\":null}");
}

static void
test_https(void **state)
{
    struct tls_fixture *t = *state;
    char out[RESPONSE_MAX];

    assert_int_equal(curl_https(t, "", "/healthz", out, sizeof out), 0);
    assert_string_equal(out, "{\"status\":\"ok\"} 200");

    /* an echo, and a late answer (suspend and resume) over TLS */
    assert_int_equal(curl_https(t, "-H 'Content-Type: application/json' --data-binary '[1,2]'",
                          "/rpc", out, sizeof out), 0);
    assert_string_equal(out, "[1,2] 200");
    assert_int_equal(curl_https(t, "-H 'Content-Type: application/json' --data-binary later",
                          "/rpc", out, sizeof out), 0);
    assert_string_equal(out, "later 200");
}

static void
test_https_refuses_plain(void **state)
{
    struct tls_fixture *t = *state;
    char raw[RESPONSE_MAX + 1];
    size_t len = 0;
    ssize_t n;
    int fd = client_send(t->base.port,
                         "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Connection: close\r\n\r\n");

    /* the server hangs up (recv 0, not the receive timeout) without any
     * HTTP answer */
    while (len < RESPONSE_MAX && (n = recv(fd, raw + len, RESPONSE_MAX - len, 0)) > 0)
        len += (size_t)n;
    assert_int_equal(n, 0);
    close(fd);
    raw[len] = '\0';
    assert_null(strstr(raw, "HTTP/"));
}

/* The TLS start errors, on the files of T. */
static void
test_https_start_errors(void **state)
{
    static const char bad_pem[] = "cannot serve HTTPS on 127.0.0.1:0: GnuTLS failed to "
                                  "setup x509 certificate/key: ";
    struct tls_fixture *t = *state;
    struct http_config config = { .address = "127.0.0.1", .port = 0 };
    char err[HTTP_ERR_MAX], expected[HTTP_ERR_MAX + PATH_MAX_TEST];

    config.tls_cert = t->cert;
    assert_null(http_server_start(&config, test_rpc, test_ready, t, err, sizeof err));
    assert_string_equal(err, "HTTPS needs both a certificate and a key "
                             "(only the certificate is set)");

    config.tls_cert = "";
    config.tls_key = t->key;
    assert_null(http_server_start(&config, test_rpc, test_ready, t, err, sizeof err));
    assert_string_equal(err, "HTTPS needs both a certificate and a key "
                             "(only the key is set)");

    config.tls_cert = t->cert;
    config.tls_key = "/nonexistent/key.pem";
    assert_null(http_server_start(&config, test_rpc, test_ready, t, err, sizeof err));
    assert_string_equal(err, "cannot read the TLS key /nonexistent/key.pem: "
                             "No such file or directory");

    config.tls_cert = t->dir;
    config.tls_key = t->key;
    assert_null(http_server_start(&config, test_rpc, test_ready, t, err, sizeof err));
    snprintf(expected, sizeof expected, "cannot read the TLS certificate %s: Is a directory",
             t->dir);
    assert_string_equal(err, expected);

    /* readable but not PEM: GnuTLS' reason, caught from MHD's log */
    config.tls_cert = t->junk;
    assert_null(http_server_start(&config, test_rpc, test_ready, t, err, sizeof err));
    assert_int_equal(strncmp(err, bad_pem, strlen(bad_pem)), 0);
    assert_true(strlen(err) > strlen(bad_pem));

    /* a certificate and a key that are swapped */
    config.tls_cert = t->key;
    config.tls_key = t->cert;
    assert_null(http_server_start(&config, test_rpc, test_ready, t, err, sizeof err));
    assert_int_equal(strncmp(err, bad_pem, strlen(bad_pem)), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_content_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_method, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_suspended, setup, teardown),
        cmocka_unit_test_setup_teardown(test_https, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_https_refuses_plain, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_https_start_errors, tls_setup, tls_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
