/*
 * bare_mhd: the ceiling for single-event requests on this machine. A
 * libmicrohttpd server with the threading of tally's src/http.c (epoll,
 * internal thread pool, suspend/resume allowed, the same connection
 * limits) that reads each POST body and answers one fixed JSON-RPC result,
 * as events.record would for one accepted event. No JSON parsing, no
 * broker: whatever a client measures against it is HTTP and MHD alone.
 *
 *   bare_mhd [--port P] [--threads N] [--address A]
 *
 * Prints "port=P" once it listens, and stops on SIGINT or SIGTERM.
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "xalloc.h"

/* The defaults of tally-frontend (services/frontend/main.c, src/http.c). */
#define BARE_THREADS_DEFAULT 4
#define BARE_CONNECTION_LIMIT 1024
#define BARE_PER_IP_LIMIT 256
#define BARE_TIMEOUT_S 30
#define BARE_BODY_INITIAL 1024
#define BARE_STATUS_OK 200
#define BARE_STATUS_NOT_FOUND 404

static const char bare_answer[] =
    "{\"jsonrpc\":\"2.0\",\"result\":{\"accepted\":1,\"rejected\":[]},\"id\":1}";

struct bare_request {
    char *body;          /* owned: the body as read so far */
    size_t len, cap;
};

static void
bare_append(struct bare_request *r, const char *data, size_t len)
{
    if (r->len + len > r->cap) {
        r->cap = r->cap == 0 ? BARE_BODY_INITIAL : r->cap;
        while (r->len + len > r->cap)
            r->cap *= 2;
        r->body = xrealloc(r->body, r->cap);
    }
    memcpy(r->body + r->len, data, len);
    r->len += len;
}

static enum MHD_Result
bare_reply(struct MHD_Connection *conn, unsigned status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        sizeof(bare_answer) - 1, (void *)(uintptr_t)bare_answer, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result
bare_access(void *cls, struct MHD_Connection *conn, const char *url,
            const char *method, const char *version, const char *upload_data,
            size_t *upload_data_size, void **con_cls)
{
    struct bare_request *r = *con_cls;

    (void)cls;
    (void)version;
    if (strcmp(method, "POST") != 0 || strcmp(url, "/rpc") != 0)
        return bare_reply(conn, BARE_STATUS_NOT_FOUND);
    if (r == NULL) {
        *con_cls = xcalloc(1, sizeof(*r));
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        bare_append(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    return bare_reply(conn, BARE_STATUS_OK);
}

static void
bare_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
               enum MHD_RequestTerminationCode toe)
{
    struct bare_request *r = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (r != NULL) {
        free(r->body);
        free(r);
        *con_cls = NULL;
    }
}

static long
bare_number(const char *name, const char *s, long max)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (*s == '\0' || *end != '\0' || v < 0 || v > max) {
        fprintf(stderr, "bare_mhd: %s must be 0..%ld, not %s\n", name, max, s);
        exit(2);
    }
    return v;
}

int
main(int argc, char **argv)
{
    struct sockaddr_in addr;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    const char *address = "127.0.0.1";
    long port = 0, threads = BARE_THREADS_DEFAULT;
    sigset_t stop;
    int sig;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = bare_number("--port", argv[i + 1], 65535);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = bare_number("--threads", argv[i + 1], 64);
        else if (strcmp(argv[i], "--address") == 0)
            address = argv[i + 1];
        else
            break;
    }
    if (argc % 2 != 1 || threads == 0) {
        fprintf(stderr, "usage: bare_mhd [--port P] [--threads N] [--address A]\n");
        return 2;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, address, &addr.sin_addr) != 1) {
        fprintf(stderr, "bare_mhd: not an IPv4 address: %s\n", address);
        return 2;
    }
    /* Block the stop signals before MHD starts its threads, so only
     * sigwait below sees them. */
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME,
                         0, NULL, NULL, bare_access, NULL,
                         MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                         MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)BARE_CONNECTION_LIMIT,
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)BARE_PER_IP_LIMIT,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)BARE_TIMEOUT_S,
                         MHD_OPTION_NOTIFY_COMPLETED, bare_completed, NULL,
                         MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "bare_mhd: cannot listen on %s:%ld\n", address, port);
        return 1;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("port=%u\n", info != NULL ? (unsigned)info->port : (unsigned)port);
    fflush(stdout);
    sigwait(&stop, &sig);
    MHD_stop_daemon(d);
    return 0;
}
