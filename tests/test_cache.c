/*
 * test_cache: the memcached layer against real memcached servers. The
 * group setup starts two private servers on 127.0.0.1 (ports below 32768
 * that the test bound first, each in its own temp dir); the group teardown
 * stops them, also after failed tests. A guard process per server kills it
 * if the test dies any other way (crash, SIGKILL).
 *
 *   keys        exact key text, lengths within memcached's limit
 *   put / mget  bytes round trip, missing keys not reported, indexes right
 *   forward     higher sequence or generation replaces, anything else is
 *               refused and leaves the stored value as it was; a stored
 *               value that is not a cache value is replaced
 *   errors      invalid VALUE header, bad server lists, a server that is
 *               down or silent: -1 with the reason, quickly
 *   group key   every key of a metric sits on the metric's one server
 *   threads     concurrent writers leave the highest sequence stored
 *   many        cache_mget_many and cache_put_many over metrics on both
 *               servers: the same servers as the one-metric calls, the
 *               same forward-only outcomes per write, more keys than one
 *               multi-get takes, a server down, concurrent batches
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libmemcached-1.0/memcached.h>

#include "buf.h"
#include "cache.h"
#include "codec.h"
#include "hash.h"

#define SERVER_COUNT 2
#define PORT_FIRST 20000             /* test ports: below the ephemeral */
#define PORT_SPAN 12000              /* range, which starts at 32768 */
#define PORT_TRIES 50
#define START_TRIES 5
#define START_WAIT_MS 5000
#define POLL_MS 10
#define NS_PER_MS 1000000L
#define MS_PER_S 1000
#define SERVER_MEMORY_MB "64"
#define MAP_VERSION 7                /* any: not part of the rule */
#define TIMEOUT_MS 250
#define DOWN_LIMIT_MS 2000           /* "fails fast" */
#define SILENT_TIMEOUT_MS 100
#define FOUND_MAX 16
#define VALUE_MAX 64
#define MGET_KEYS 5
#define NAME_LONG 200
#define MEMCACHED_KEY_LIMIT 250
#define THREADS 4
#define PUTS_PER_THREAD 50
#define GROUP_METRICS 20
#define BUCKETS_PER_METRIC 3
#define HEX_LEN 32                   /* hex digits of hash_128 */
#define MANY_METRICS 300
#define MANY_KEYS_PER_METRIC 2       /* the open key and one bucket */
#define BIG_BATCH 1500               /* more than CACHE_MGET_KEYS_MAX */
#define BATCH_KEYS 10                /* keys of the concurrent batches */
#define BATCH_ROUNDS 20
#define TEXT_MAX 128                 /* server lists, dirs, names */
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- private memcached servers ---------------------------------------- */

/* Each server has a guard: a child of the test that waits for its end of
 * a pipe to close and then kills the server. The test holds the other end,
 * so however the test ends (a failed assertion, a crash, SIGKILL from a
 * harness timeout) the server goes with it. */
struct server {
    pid_t pid;                 /* memcached; 0 when not running */
    pid_t guard;               /* 0 when not running */
    int guard_fd;              /* the test's end of the guard's pipe */
    int port;
    char dir[TEXT_MAX];        /* temp dir; holds the server's log */
};

static struct server servers[SERVER_COUNT];

static long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * MS_PER_S + ts.tv_nsec / NS_PER_MS;
}

static void
sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / MS_PER_S,
                           .tv_nsec = (ms % MS_PER_S) * NS_PER_MS };

    nanosleep(&ts, NULL);
}

static void
loopback(struct sockaddr_in *sa, int port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

/* A socket bound to a free port below 32768 on 127.0.0.1 (the caller
 * closes it, or listens on it), or -1. */
static int
bind_free_port(int *port)
{
    struct sockaddr_in sa;

    for (int i = 0; i < PORT_TRIES; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        if (fd < 0)
            return -1;
        *port = PORT_FIRST + rand() % PORT_SPAN;
        loopback(&sa, *port);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return fd;
        close(fd);
    }
    return -1;
}

static int
accepts_connections(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int ok;

    if (fd < 0)
        return 0;
    loopback(&sa, port);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

static void
kill_and_wait(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        *pid = 0;
    }
}

/* Stops the guard first, so that it never signals a reaped pid. */
static void
server_kill(struct server *s)
{
    kill_and_wait(&s->guard);
    if (s->guard_fd >= 0) {
        close(s->guard_fd);
        s->guard_fd = -1;
    }
    kill_and_wait(&s->pid);
}

static void
server_stop(struct server *s)
{
    char log[sizeof(s->dir) + sizeof("/memcached.log")];

    server_kill(s);
    if (s->dir[0] != '\0') {
        snprintf(log, sizeof(log), "%s/memcached.log", s->dir);
        unlink(log);
        rmdir(s->dir);
        s->dir[0] = '\0';
    }
}

static void
server_exec(const struct server *s)
{
    char port[TEXT_MAX];
    int fd;

    snprintf(port, sizeof(port), "%d", s->port);
    if (chdir(s->dir) != 0)
        _exit(127);
    fd = open("memcached.log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
    execlp("memcached", "memcached", "-u", "nobody", "-l", "127.0.0.1", "-p",
           port, "-m", SERVER_MEMORY_MB, "-U", "0", (char *)NULL);
    _exit(127);
}

static void
guard_run(pid_t server, int fd)
{
    char byte;
    ssize_t n;

    do
        n = read(fd, &byte, 1);
    while (n < 0 && errno == EINTR);
    kill(server, SIGKILL);
    _exit(0);
}

/* Starts memcached and its guard. The test's end of the pipe is
 * close-on-exec, so no later memcached holds it open. */
static int
server_spawn(struct server *s)
{
    int fds[2];

    s->pid = fork();
    if (s->pid < 0) {
        s->pid = 0;
        return -1;
    }
    if (s->pid == 0)
        server_exec(s);
    if (pipe(fds) != 0)
        return -1;
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    s->guard = fork();
    if (s->guard < 0) {
        s->guard = 0;
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (s->guard == 0) {
        close(fds[1]);
        guard_run(s->pid, fds[0]);
    }
    close(fds[0]);
    s->guard_fd = fds[1];
    return 0;
}

/* Starts memcached on a port the test bound first, and waits until it
 * accepts connections. Another port is tried if the server dies (the port
 * was taken between the check and the start). */
static int
server_start(struct server *s)
{
    s->guard_fd = -1;
    snprintf(s->dir, sizeof(s->dir), "/tmp/test_cache.XXXXXX");
    if (mkdtemp(s->dir) == NULL) {
        s->dir[0] = '\0';
        return -1;
    }
    chmod(s->dir, 0755);   /* memcached runs as nobody */
    for (int attempt = 0; attempt < START_TRIES; attempt++) {
        int fd = bind_free_port(&s->port);
        long deadline = now_ms() + START_WAIT_MS;

        if (fd < 0)
            return -1;
        close(fd);
        if (server_spawn(s) != 0)
            return -1;
        while (now_ms() < deadline) {
            if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
                s->pid = 0;
                break;
            }
            if (accepts_connections(s->port))
                return 0;
            sleep_ms(POLL_MS);
        }
        server_kill(s);
    }
    return -1;
}

static void
servers_stop(void)
{
    for (size_t i = 0; i < SERVER_COUNT; i++)
        server_stop(&servers[i]);
}

static int
group_setup(void **state)
{
    (void)state;
    srand((unsigned)getpid() ^ (unsigned)time(NULL));
    atexit(servers_stop);
    for (size_t i = 0; i < SERVER_COUNT; i++) {
        if (server_start(&servers[i]) != 0) {
            fprintf(stderr, "cannot start memcached\n");
            servers_stop();
            return -1;
        }
    }
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    servers_stop();
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static void
server_list(char *out, size_t len, size_t first, size_t count)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = first; i < first + count; i++)
        used += (size_t)snprintf(out + used, len - used, "%s127.0.0.1:%d",
                                 used == 0 ? "" : ",", servers[i].port);
}

static struct cache *
cache_on(size_t first, size_t count)
{
    char list[TEXT_MAX], err[CACHE_ERR_MAX] = "";
    struct cache *c;

    server_list(list, sizeof(list), first, count);
    c = cache_create(list, TIMEOUT_MS, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(err, "");
    return c;
}

/* A plain libmemcached client on one server: the test's way to look at
 * and to plant raw values. */
static memcached_st *
direct_client(const struct server *s)
{
    memcached_st *mc = memcached_create(NULL);

    assert_non_null(mc);
    assert_int_equal(memcached_server_add(mc, "127.0.0.1", (in_port_t)s->port),
                     MEMCACHED_SUCCESS);
    return mc;
}

/* A cache value: a closed percentile bucket header and BODY. */
static void
make_value(struct buf_writer *w, uint64_t generation, uint64_t sequence,
           const char *body)
{
    struct codec_cache_header h = {
        .kind = CODEC_CACHE_CLOSED_BUCKET,
        .type = EVENT_PERCENTILE,
        .generation = generation,
        .map_version = MAP_VERSION,
        .sequence = sequence,
    };

    buf_writer_create(w, CODEC_CACHE_HEADER_SIZE + strlen(body));
    assert_int_equal(codec_cache_header_encode(&h, w), 0);
    buf_put_bytes(w, body, strlen(body));
}

static int
put_value(struct cache *c, const char *name, const char *key,
          uint64_t generation, uint64_t sequence, const char *body,
          char *err)
{
    struct buf_writer w;
    int rc;

    make_value(&w, generation, sequence, body);
    rc = cache_put(c, name, strlen(name), key, strlen(key), w.data, w.len, 0,
                   err, CACHE_ERR_MAX);
    buf_writer_destroy(&w);
    return rc;
}

struct found_log {
    size_t count;
    size_t index[FOUND_MAX];
    size_t len[FOUND_MAX];
    uint8_t value[FOUND_MAX][VALUE_MAX];
};

static void
log_found(void *ctx, size_t index, const uint8_t *value, size_t len)
{
    struct found_log *log = ctx;

    assert_true(log->count < FOUND_MAX);
    assert_true(len <= VALUE_MAX);
    log->index[log->count] = index;
    log->len[log->count] = len;
    memcpy(log->value[log->count], value, len);
    log->count++;
}

static int
get_keys(struct cache *c, const char *name, const char *const *keys,
         size_t n, struct found_log *log, char *err)
{
    size_t lens[FOUND_MAX];

    assert_true(n <= FOUND_MAX);
    for (size_t i = 0; i < n; i++)
        lens[i] = strlen(keys[i]);
    memset(log, 0, sizeof(*log));
    return cache_mget(c, name, strlen(name), keys, lens, n, log_found, log,
                      err, CACHE_ERR_MAX);
}

/* Asserts that KEY holds exactly the value (GENERATION, SEQUENCE, BODY). */
static void
assert_stored(struct cache *c, const char *name, const char *key,
              uint64_t generation, uint64_t sequence, const char *body)
{
    struct found_log log;
    struct buf_writer w;
    char err[CACHE_ERR_MAX] = "";

    assert_int_equal(get_keys(c, name, &key, 1, &log, err), 0);
    assert_string_equal(err, "");
    assert_int_equal(log.count, 1);
    assert_int_equal(log.index[0], 0);
    make_value(&w, generation, sequence, body);
    assert_int_equal(log.len[0], w.len);
    assert_memory_equal(log.value[0], w.data, w.len);
    buf_writer_destroy(&w);
}

static void
hex_of_name(char out[HEX_LEN + 1], const char *name)
{
    struct hash128 h = hash_128(name, strlen(name));

    snprintf(out, HEX_LEN + 1, "%016" PRIx64 "%016" PRIx64, h.hi, h.lo);
}

/* ---- keys ----------------------------------------------------------------- */

static void
test_keys(void **state)
{
    char key[CACHE_KEY_MAX], expect[CACHE_KEY_MAX], hex[HEX_LEN + 1];
    char name[NAME_LONG + 1];
    size_t len;

    (void)state;
    len = cache_key_open(key, "api.requests", strlen("api.requests"));
    assert_string_equal(key, "tly1:o:d1db3f12f6f0fc8b56ddd3fdcdea5097");
    assert_int_equal(len, strlen(key));

    len = cache_key_bucket(key, "api.requests", strlen("api.requests"),
                           0x1a2bu, RING_15MIN, 1700000100);
    assert_string_equal(key, "tly1:b:d1db3f12f6f0fc8b56ddd3fdcdea5097:1a2b:2:"
                             "1700000100");
    assert_int_equal(len, strlen(key));

    /* Whatever the name's length, the longest key stays short. */
    memset(name, 'n', NAME_LONG);
    name[NAME_LONG] = '\0';
    hex_of_name(hex, name);
    len = cache_key_open(key, name, NAME_LONG);
    snprintf(expect, sizeof(expect), "tly1:o:%s", hex);
    assert_string_equal(key, expect);
    assert_int_equal(len, strlen("tly1:o:") + HEX_LEN);
    len = cache_key_bucket(key, name, NAME_LONG, UINT64_MAX, RING_10S,
                           INT64_MIN);
    snprintf(expect, sizeof(expect),
             "tly1:b:%s:ffffffffffffffff:0:-9223372036854775808", hex);
    assert_string_equal(key, expect);
    assert_int_equal(len, strlen(expect));
    assert_true(len < MEMCACHED_KEY_LIMIT);
    assert_true(len < CACHE_KEY_MAX);
}

/* ---- put and mget ----------------------------------------------------------- */

static void
test_put_then_mget(void **state)
{
    struct cache *c = cache_on(0, 1);
    char key[CACHE_KEY_MAX], err[CACHE_ERR_MAX] = "";
    const char *name = "test.put_then_mget";

    (void)state;
    cache_key_open(key, name, strlen(name));
    assert_int_equal(put_value(c, name, key, 1, 1, "open buckets", err), 1);
    assert_string_equal(err, "");
    assert_stored(c, name, key, 1, 1, "open buckets");
    cache_destroy(c);
}

static void
test_mget_reports_present_keys(void **state)
{
    struct cache *c = cache_on(0, 1);
    const char *name = "test.mget_some_missing";
    char keys[MGET_KEYS][CACHE_KEY_MAX], err[CACHE_ERR_MAX] = "";
    const char *key_ptrs[MGET_KEYS], *twice[3];
    char body[VALUE_MAX];
    struct found_log log;
    struct buf_writer w;

    (void)state;
    for (size_t i = 0; i < MGET_KEYS; i++) {
        cache_key_bucket(keys[i], name, strlen(name), 1, RING_1MIN,
                         60 * (int64_t)i);
        key_ptrs[i] = keys[i];
    }
    for (size_t i = 0; i < MGET_KEYS; i += 2) {
        snprintf(body, sizeof(body), "bucket %zu", i);
        assert_int_equal(put_value(c, name, keys[i], 1, 1, body, err), 1);
    }
    assert_int_equal(get_keys(c, name, key_ptrs, MGET_KEYS, &log, err), 0);
    assert_string_equal(err, "");
    assert_int_equal(log.count, 3);
    for (size_t j = 0; j < log.count; j++) {
        size_t i = log.index[j];

        assert_true(i == 0 || i == 2 || i == 4);
        for (size_t k = 0; k < j; k++)
            assert_int_not_equal(log.index[k], i);
        snprintf(body, sizeof(body), "bucket %zu", i);
        make_value(&w, 1, 1, body);
        assert_int_equal(log.len[j], w.len);
        assert_memory_equal(log.value[j], w.data, w.len);
        buf_writer_destroy(&w);
    }

    /* A key asked twice is reported at both of its indexes. */
    twice[0] = twice[2] = keys[0];
    twice[1] = keys[1];
    assert_int_equal(get_keys(c, name, twice, ARRAY_LEN(twice), &log, err), 0);
    assert_int_equal(log.count, 2);
    assert_int_equal(log.index[0] + log.index[1], 0 + 2);
    assert_int_not_equal(log.index[0], log.index[1]);
    assert_int_equal(log.len[0], log.len[1]);
    assert_memory_equal(log.value[0], log.value[1], log.len[0]);

    /* Nothing present: nothing reported, no error. */
    assert_int_equal(get_keys(c, name, &key_ptrs[1], 1, &log, err), 0);
    assert_int_equal(log.count, 0);
    /* No keys at all. */
    assert_int_equal(get_keys(c, name, key_ptrs, 0, &log, err), 0);
    assert_int_equal(log.count, 0);
    assert_string_equal(err, "");
    cache_destroy(c);
}

/* ---- forward-only writes ------------------------------------------------------ */

static void
test_forward_only(void **state)
{
    struct cache *c = cache_on(0, 1);
    const char *name = "test.forward_only";
    char key[CACHE_KEY_MAX], err[CACHE_ERR_MAX] = "";

    (void)state;
    cache_key_bucket(key, name, strlen(name), 3, RING_10S, 1700000000);
    assert_int_equal(put_value(c, name, key, 3, 5, "first", err), 1);
    assert_int_equal(put_value(c, name, key, 3, 6, "second", err), 1);
    assert_stored(c, name, key, 3, 6, "second");

    /* The same header again, or a lower sequence: refused, unchanged. */
    assert_int_equal(put_value(c, name, key, 3, 6, "same again", err), 0);
    assert_int_equal(put_value(c, name, key, 3, 2, "older", err), 0);
    assert_stored(c, name, key, 3, 6, "second");

    /* An older generation loses whatever its sequence. */
    assert_int_equal(put_value(c, name, key, 2, UINT64_MAX, "old gen", err), 0);
    assert_stored(c, name, key, 3, 6, "second");

    /* A newer generation wins with a lower sequence. */
    assert_int_equal(put_value(c, name, key, 4, 1, "new gen", err), 1);
    assert_stored(c, name, key, 4, 1, "new gen");
    assert_int_equal(put_value(c, name, key, 4, 1, "new gen", err), 0);
    assert_string_equal(err, "");
    cache_destroy(c);
}

static void
test_undecodable_value_is_replaced(void **state)
{
    static const char *const garbage[] = {
        "not a cache value at all, and long enough to hold a header",
        "TC",
    };
    struct cache *c = cache_on(0, 1);
    memcached_st *direct = direct_client(&servers[0]);
    const char *name = "test.garbage";
    char key[CACHE_KEY_MAX], err[CACHE_ERR_MAX] = "";

    (void)state;
    cache_key_open(key, name, strlen(name));
    for (size_t i = 0; i < ARRAY_LEN(garbage); i++) {
        assert_int_equal(memcached_set(direct, key, strlen(key), garbage[i],
                                       strlen(garbage[i]), 0, 0),
                         MEMCACHED_SUCCESS);
        assert_int_equal(put_value(c, name, key, 1, 1, "good", err), 1);
        assert_string_equal(err, "");
        assert_stored(c, name, key, 1, 1, "good");
    }
    memcached_free(direct);
    cache_destroy(c);
}

static void
test_invalid_value_header(void **state)
{
    struct cache *c = cache_on(0, 1);
    const char *name = "test.invalid_header";
    char key[CACHE_KEY_MAX], err[CACHE_ERR_MAX] = "", expect[CACHE_ERR_MAX];
    uint8_t value[CODEC_CACHE_HEADER_SIZE + 1];
    struct found_log log;
    const char *key_ptr = key;
    struct buf_writer w;

    (void)state;
    cache_key_open(key, name, strlen(name));
    make_value(&w, 1, 1, "x");
    memcpy(value, w.data, sizeof(value));
    buf_writer_destroy(&w);

    value[2] = 3;   /* version */
    assert_int_equal(cache_put(c, name, strlen(name), key, strlen(key), value,
                               sizeof(value), 0, err, sizeof(err)), -1);
    snprintf(expect, sizeof(expect),
             "cache value for %s: unsupported cache version 3", key);
    assert_string_equal(err, expect);

    value[2] = 1;
    assert_int_equal(cache_put(c, name, strlen(name), key, strlen(key), value,
                               CODEC_CACHE_HEADER_SIZE - 1, 0, err,
                               sizeof(err)), -1);
    snprintf(expect, sizeof(expect), "cache value for %s: truncated cache header",
             key);
    assert_string_equal(err, expect);

    /* Nothing was written. */
    assert_int_equal(get_keys(c, name, &key_ptr, 1, &log, err), 0);
    assert_int_equal(log.count, 0);
    cache_destroy(c);
}

/* ---- configuration and failures ------------------------------------------------ */

static void
test_create_errors(void **state)
{
    static const struct {
        const char *servers;
        int timeout_ms;
        const char *reason;
    } cases[] = {
        { "", TIMEOUT_MS, "memcached server \"\" is not host:port" },
        { "127.0.0.1", TIMEOUT_MS,
          "memcached server \"127.0.0.1\" is not host:port" },
        { "127.0.0.1:", TIMEOUT_MS,
          "memcached server \"127.0.0.1:\" is not host:port" },
        { ":11211", TIMEOUT_MS, "memcached server \":11211\" is not host:port" },
        { "127.0.0.1:0", TIMEOUT_MS,
          "memcached server \"127.0.0.1:0\" is not host:port" },
        { "127.0.0.1:65536", TIMEOUT_MS,
          "memcached server \"127.0.0.1:65536\" is not host:port" },
        { "127.0.0.1:11211x", TIMEOUT_MS,
          "memcached server \"127.0.0.1:11211x\" is not host:port" },
        { "127.0.0.1:11211,", TIMEOUT_MS,
          "memcached server \"\" is not host:port" },
        { "127.0.0.1:11211, 127.0.0.1:11212", TIMEOUT_MS,
          "memcached server \" 127.0.0.1:11212\" is not host:port" },
        { "127.0.0.1:11211", 0, "memcached timeout 0 ms out of range 1..60000" },
        { "127.0.0.1:11211", 60001,
          "memcached timeout 60001 ms out of range 1..60000" },
    };
    char err[CACHE_ERR_MAX];
    struct cache *c;

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        err[0] = '\0';
        c = cache_create(cases[i].servers, cases[i].timeout_ms, err,
                         sizeof(err));
        assert_null(c);
        assert_string_equal(err, cases[i].reason);
    }
    c = cache_create("localhost:11211,127.0.0.1:11212", 1, err, sizeof(err));
    assert_non_null(c);
    cache_destroy(c);
}

/* cache_mget, then cache_put, against C fail within DOWN_LIMIT_MS each,
 * with "memcached 127.0.0.1:PORT: " and MGET_REASON, PUT_REASON. */
static void
assert_calls_fail(struct cache *c, int port, const char *mget_reason,
                  const char *put_reason)
{
    const char *name = "test.down";
    char key[CACHE_KEY_MAX], err[CACHE_ERR_MAX], expect[CACHE_ERR_MAX];
    const char *key_ptr = key;
    struct found_log log;
    long start;

    cache_key_open(key, name, strlen(name));

    err[0] = '\0';
    start = now_ms();
    assert_int_equal(get_keys(c, name, &key_ptr, 1, &log, err), -1);
    assert_true(now_ms() - start < DOWN_LIMIT_MS);
    assert_int_equal(log.count, 0);
    snprintf(expect, sizeof(expect), "memcached 127.0.0.1:%d: %s", port,
             mget_reason);
    assert_string_equal(err, expect);

    err[0] = '\0';
    start = now_ms();
    assert_int_equal(put_value(c, name, key, 1, 1, "lost", err), -1);
    assert_true(now_ms() - start < DOWN_LIMIT_MS);
    snprintf(expect, sizeof(expect), "memcached 127.0.0.1:%d: %s", port,
             put_reason);
    assert_string_equal(err, expect);
}

static void
test_server_down(void **state)
{
    char list[TEXT_MAX], err[CACHE_ERR_MAX] = "";
    struct cache *c;
    int port = 0, fd;

    (void)state;
    fd = bind_free_port(&port);   /* bound, never listening: refused */
    assert_true(fd >= 0);
    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    c = cache_create(list, TIMEOUT_MS, err, sizeof(err));
    assert_non_null(c);
    /* The failed connect puts the server in its retry timeout, so the
     * second call does not even try. */
    assert_calls_fail(c, port, "CONNECTION FAILURE",
                      "SERVER HAS FAILED AND IS DISABLED UNTIL TIMED RETRY");
    cache_destroy(c);
    close(fd);
}

static void
test_server_silent(void **state)
{
    char list[TEXT_MAX], err[CACHE_ERR_MAX] = "";
    struct cache *c;
    int port = 0, fd;

    (void)state;
    fd = bind_free_port(&port);   /* listening, never answering */
    assert_true(fd >= 0);
    assert_int_equal(listen(fd, SOMAXCONN), 0);
    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    c = cache_create(list, SILENT_TIMEOUT_MS, err, sizeof(err));
    assert_non_null(c);
    assert_calls_fail(c, port, "A TIMEOUT OCCURRED", "A TIMEOUT OCCURRED");
    cache_destroy(c);
    close(fd);
}

/* ---- distribution ------------------------------------------------------------- */

static int
direct_has(memcached_st *mc, const char *key)
{
    memcached_return_t rc;
    size_t len;
    uint32_t flags;
    char *value = memcached_get(mc, key, strlen(key), &len, &flags, &rc);

    free(value);
    return value != NULL;
}

static void
test_metric_on_one_server(void **state)
{
    struct cache *c = cache_on(0, SERVER_COUNT);
    memcached_st *direct[SERVER_COUNT];
    size_t metrics_on[SERVER_COUNT] = { 0 };
    char name[TEXT_MAX], key[BUCKETS_PER_METRIC + 1][CACHE_KEY_MAX];
    char err[CACHE_ERR_MAX] = "";

    (void)state;
    for (size_t s = 0; s < SERVER_COUNT; s++)
        direct[s] = direct_client(&servers[s]);
    for (int m = 0; m < GROUP_METRICS; m++) {
        snprintf(name, sizeof(name), "test.group.%d", m);
        cache_key_open(key[0], name, strlen(name));
        for (int b = 1; b <= BUCKETS_PER_METRIC; b++)
            cache_key_bucket(key[b], name, strlen(name), 1, RING_10S,
                             10 * (int64_t)b);
        for (int k = 0; k <= BUCKETS_PER_METRIC; k++)
            assert_int_equal(put_value(c, name, key[k], 1, 1, "v", err), 1);
        for (size_t s = 0; s < SERVER_COUNT; s++) {
            int held = 0;

            for (int k = 0; k <= BUCKETS_PER_METRIC; k++)
                held += direct_has(direct[s], key[k]);
            assert_true(held == 0 || held == BUCKETS_PER_METRIC + 1);
            metrics_on[s] += held != 0;
        }
    }
    for (size_t s = 0; s < SERVER_COUNT; s++) {
        assert_true(metrics_on[s] > 0);
        memcached_free(direct[s]);
    }
    assert_int_equal(metrics_on[0] + metrics_on[1], GROUP_METRICS);
    cache_destroy(c);
}

/* ---- threads ---------------------------------------------------------------- */

struct writer {
    struct cache *cache;
    const char *name;
    const char *key;
    int thread;
    int written;
    int failed;
    char err[CACHE_ERR_MAX];
};

static void *
writer_run(void *arg)
{
    struct writer *w = arg;
    char body[VALUE_MAX];

    for (int k = 0; k < PUTS_PER_THREAD; k++) {
        uint64_t sequence = (uint64_t)k * THREADS + (uint64_t)w->thread + 1;
        char err[CACHE_ERR_MAX] = "";
        int rc;

        snprintf(body, sizeof(body), "seq %" PRIu64, sequence);
        rc = put_value(w->cache, w->name, w->key, 1, sequence, body, err);
        if (rc < 0 && w->failed++ == 0)
            memcpy(w->err, err, sizeof(err));
        w->written += rc == 1;
    }
    return NULL;
}

static void
test_concurrent_writers(void **state)
{
    struct cache *c = cache_on(0, 1);
    const char *name = "test.concurrent";
    char key[CACHE_KEY_MAX], body[VALUE_MAX];
    struct writer writers[THREADS];
    pthread_t threads[THREADS];
    int written = 0, started = 0, joined = 0;

    (void)state;
    cache_key_open(key, name, strlen(name));
    for (int t = 0; t < THREADS; t++) {
        writers[t] = (struct writer){ .cache = c, .name = name, .key = key,
                                      .thread = t };
        if (pthread_create(&threads[t], NULL, writer_run, &writers[t]) != 0)
            break;
        started++;
    }
    /* Every thread is joined before any assertion can end the test. */
    for (int t = 0; t < started; t++)
        joined += pthread_join(threads[t], NULL) == 0;
    assert_int_equal(started, THREADS);
    assert_int_equal(joined, THREADS);
    for (int t = 0; t < THREADS; t++) {
        assert_string_equal(writers[t].err, "");
        assert_int_equal(writers[t].failed, 0);
        written += writers[t].written;
    }
    assert_true(written >= 1);
    snprintf(body, sizeof(body), "seq %d", THREADS * PUTS_PER_THREAD);
    assert_stored(c, name, key, 1, THREADS * PUTS_PER_THREAD, body);
    cache_destroy(c);
}

/* ---- many metrics at once ------------------------------------------- */

/* Names, keys and values of a batch: COUNT writes, write i of metric
 * "PREFIX.<i / keys_per_metric>", key open or bucket. */
struct batch {
    size_t count;
    char (*names)[TEXT_MAX];
    char (*keys)[CACHE_KEY_MAX];
    const char **name_ptrs;
    const char **key_ptrs;
    size_t *name_lens;
    size_t *key_lens;
    struct buf_writer *values;
    struct cache_write *writes;
};

static void
batch_create(struct batch *b, const char *prefix, size_t metrics,
             size_t keys_per_metric)
{
    b->count = metrics * keys_per_metric;
    b->names = calloc(b->count, sizeof(*b->names));
    b->keys = calloc(b->count, sizeof(*b->keys));
    b->name_ptrs = calloc(b->count, sizeof(*b->name_ptrs));
    b->key_ptrs = calloc(b->count, sizeof(*b->key_ptrs));
    b->name_lens = calloc(b->count, sizeof(*b->name_lens));
    b->key_lens = calloc(b->count, sizeof(*b->key_lens));
    b->values = calloc(b->count, sizeof(*b->values));
    b->writes = calloc(b->count, sizeof(*b->writes));
    assert_non_null(b->writes);
    for (size_t i = 0; i < b->count; i++) {
        snprintf(b->names[i], TEXT_MAX, "%s.%zu", prefix, i / keys_per_metric);
        b->name_lens[i] = strlen(b->names[i]);
        if (i % keys_per_metric == 0)
            b->key_lens[i] = cache_key_open(b->keys[i], b->names[i],
                                            b->name_lens[i]);
        else
            b->key_lens[i] = cache_key_bucket(b->keys[i], b->names[i],
                                              b->name_lens[i], 1, RING_10S,
                                              10 * (int64_t)(i %
                                                             keys_per_metric));
        b->name_ptrs[i] = b->names[i];
        b->key_ptrs[i] = b->keys[i];
    }
}

/* Sets write I to (GENERATION, SEQUENCE, BODY). */
static void
batch_set(struct batch *b, size_t i, uint64_t generation, uint64_t sequence,
          const char *body)
{
    if (b->values[i].data != NULL)
        buf_writer_destroy(&b->values[i]);
    make_value(&b->values[i], generation, sequence, body);
    b->writes[i] = (struct cache_write){
        .name = b->names[i], .name_len = b->name_lens[i],
        .key = b->keys[i], .key_len = b->key_lens[i],
        .value = b->values[i].data, .len = b->values[i].len,
        .status = 7,         /* must be overwritten */
    };
}

static void
batch_destroy(struct batch *b)
{
    for (size_t i = 0; i < b->count; i++)
        if (b->values[i].data != NULL)
            buf_writer_destroy(&b->values[i]);
    free(b->names);
    free(b->keys);
    free(b->name_ptrs);
    free(b->key_ptrs);
    free(b->name_lens);
    free(b->key_lens);
    free(b->values);
    free(b->writes);
}

/* Which indexes cache_mget_many reported, and their values' sequences. */
struct index_log {
    size_t count;
    size_t *times;             /* per index: how often reported */
    uint64_t *sequence;        /* per index: of the value */
};

static void
log_index(void *ctx, size_t index, const uint8_t *value, size_t len)
{
    struct index_log *log = ctx;
    struct codec_cache_header h;
    struct buf_reader r;

    buf_reader_init(&r, value, len);
    assert_int_equal(codec_cache_header_decode(&r, &h, NULL, 0), 0);
    log->times[index]++;
    log->sequence[index] = h.sequence;
    log->count++;
}

static void
index_log_create(struct index_log *log, size_t n)
{
    log->count = 0;
    log->times = calloc(n, sizeof(*log->times));
    log->sequence = calloc(n, sizeof(*log->sequence));
    assert_non_null(log->sequence);
}

static void
index_log_destroy(struct index_log *log)
{
    free(log->times);
    free(log->sequence);
}

static void
test_many_across_servers(void **state)
{
    struct cache *c = cache_on(0, SERVER_COUNT);
    memcached_st *direct[SERVER_COUNT];
    size_t metrics_on[SERVER_COUNT] = { 0 };
    char err[CACHE_ERR_MAX] = "", body[VALUE_MAX];
    struct index_log log;
    struct batch b;

    (void)state;
    batch_create(&b, "test.many", MANY_METRICS, MANY_KEYS_PER_METRIC);
    for (size_t i = 0; i < b.count; i++) {
        snprintf(body, sizeof(body), "value %zu", i);
        batch_set(&b, i, 1, 10 + i, body);
    }
    assert_int_equal(cache_put_many(c, b.writes, b.count, err, sizeof(err)),
                     0);
    assert_string_equal(err, "");
    for (size_t i = 0; i < b.count; i++)
        assert_int_equal(b.writes[i].status, 1);

    /* Each value where the one-metric calls look for it, and each metric
     * whole on one server: the batch picked the servers they pick. */
    for (size_t s = 0; s < SERVER_COUNT; s++)
        direct[s] = direct_client(&servers[s]);
    for (size_t i = 0; i < b.count; i++) {
        snprintf(body, sizeof(body), "value %zu", i);
        assert_stored(c, b.names[i], b.keys[i], 1, 10 + i, body);
    }
    for (size_t i = 0; i < b.count; i += MANY_KEYS_PER_METRIC) {
        for (size_t s = 0; s < SERVER_COUNT; s++) {
            int held = 0;

            for (size_t k = 0; k < MANY_KEYS_PER_METRIC; k++)
                held += direct_has(direct[s], b.keys[i + k]);
            assert_true(held == 0 || held == MANY_KEYS_PER_METRIC);
            metrics_on[s] += held != 0;
        }
    }
    for (size_t s = 0; s < SERVER_COUNT; s++) {
        assert_true(metrics_on[s] > 0);
        memcached_free(direct[s]);
    }
    assert_int_equal(metrics_on[0] + metrics_on[1], MANY_METRICS);

    /* Writing the same values again: all refused, nothing changes. */
    assert_int_equal(cache_put_many(c, b.writes, b.count, err, sizeof(err)),
                     0);
    for (size_t i = 0; i < b.count; i++)
        assert_int_equal(b.writes[i].status, 0);

    /* One multi-get per server finds every key at its index. */
    index_log_create(&log, b.count);
    assert_int_equal(cache_mget_many(c, b.name_ptrs, b.name_lens, b.key_ptrs,
                                     b.key_lens, b.count, log_index, &log,
                                     err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(log.count, b.count);
    for (size_t i = 0; i < b.count; i++) {
        assert_int_equal(log.times[i], 1);
        assert_int_equal(log.sequence[i], 10 + i);
    }
    assert_int_equal(cache_mget_many(c, b.name_ptrs, b.name_lens, b.key_ptrs,
                                     b.key_lens, 0, log_index, &log, err,
                                     sizeof(err)), 0);
    assert_int_equal(log.count, b.count);
    index_log_destroy(&log);
    batch_destroy(&b);
    cache_destroy(c);
}

static void
test_mget_many_absent_and_twice(void **state)
{
    struct cache *c = cache_on(0, SERVER_COUNT);
    char err[CACHE_ERR_MAX] = "";
    const char *names[5], *keys[5];
    size_t name_lens[5], key_lens[5];
    struct index_log log;
    struct batch b;

    (void)state;
    batch_create(&b, "test.many_absent", 3, 1);
    batch_set(&b, 0, 1, 100, "zero");
    batch_set(&b, 2, 1, 102, "two");
    assert_int_equal(cache_put_many(c, b.writes, 1, err, sizeof(err)), 0);
    assert_int_equal(cache_put_many(c, &b.writes[2], 1, err, sizeof(err)), 0);
    /* Asked: 0, 1 (absent), 2, 0 again, 1 again. */
    for (size_t k = 0; k < 5; k++) {
        size_t i = k % 3;

        names[k] = b.names[i];
        name_lens[k] = b.name_lens[i];
        keys[k] = b.keys[i];
        key_lens[k] = b.key_lens[i];
    }
    index_log_create(&log, 5);
    assert_int_equal(cache_mget_many(c, names, name_lens, keys, key_lens, 5,
                                     log_index, &log, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(log.count, 3);
    assert_int_equal(log.times[0], 1);
    assert_int_equal(log.sequence[0], 100);
    assert_int_equal(log.times[1], 0);
    assert_int_equal(log.times[2], 1);
    assert_int_equal(log.sequence[2], 102);
    assert_int_equal(log.times[3], 1);
    assert_int_equal(log.sequence[3], 100);
    assert_int_equal(log.times[4], 0);
    index_log_destroy(&log);
    batch_destroy(&b);
    cache_destroy(c);
}

/* The outcomes of cache_put in one batch: each write as if alone. */
static void
test_put_many_forward_only(void **state)
{
    enum { NEWER, SAME, LOWER, OLD_GEN, NEW_GEN, ABSENT, GARBAGE, INVALID,
           WRITES };
    struct cache *c = cache_on(0, SERVER_COUNT);
    memcached_st *direct[SERVER_COUNT];
    char err[CACHE_ERR_MAX] = "", expect[CACHE_ERR_MAX];
    const char *garbage = "not a cache value, but long enough for a header";
    struct batch b;

    (void)state;
    batch_create(&b, "test.many_forward", WRITES, 1);
    for (size_t i = 0; i < WRITES; i++)
        if (i != ABSENT && i != GARBAGE)
            assert_int_equal(put_value(c, b.names[i], b.keys[i], 3, 6,
                                       "stored", err), 1);
    for (size_t s = 0; s < SERVER_COUNT; s++) {
        direct[s] = direct_client(&servers[s]);
        /* Planted on both servers: the metric's own one holds it. */
        assert_int_equal(memcached_set(direct[s], b.keys[GARBAGE],
                                       b.key_lens[GARBAGE], garbage,
                                       strlen(garbage), 0, 0),
                         MEMCACHED_SUCCESS);
    }
    batch_set(&b, NEWER, 3, 7, "newer");
    batch_set(&b, SAME, 3, 6, "same again");
    batch_set(&b, LOWER, 3, 2, "lower");
    batch_set(&b, OLD_GEN, 2, UINT64_MAX, "old gen");
    batch_set(&b, NEW_GEN, 4, 1, "new gen");
    batch_set(&b, ABSENT, 1, 1, "first");
    batch_set(&b, GARBAGE, 1, 1, "good");
    batch_set(&b, INVALID, 3, 9, "invalid");
    b.values[INVALID].data[2] = 3;   /* version */

    assert_int_equal(cache_put_many(c, b.writes, WRITES, err, sizeof(err)),
                     -1);
    snprintf(expect, sizeof(expect),
             "cache value for %s: unsupported cache version 3",
             b.keys[INVALID]);
    assert_string_equal(err, expect);
    assert_int_equal(b.writes[NEWER].status, 1);
    assert_int_equal(b.writes[SAME].status, 0);
    assert_int_equal(b.writes[LOWER].status, 0);
    assert_int_equal(b.writes[OLD_GEN].status, 0);
    assert_int_equal(b.writes[NEW_GEN].status, 1);
    assert_int_equal(b.writes[ABSENT].status, 1);
    assert_int_equal(b.writes[GARBAGE].status, 1);
    assert_int_equal(b.writes[INVALID].status, -1);
    assert_stored(c, b.names[NEWER], b.keys[NEWER], 3, 7, "newer");
    assert_stored(c, b.names[SAME], b.keys[SAME], 3, 6, "stored");
    assert_stored(c, b.names[LOWER], b.keys[LOWER], 3, 6, "stored");
    assert_stored(c, b.names[OLD_GEN], b.keys[OLD_GEN], 3, 6, "stored");
    assert_stored(c, b.names[NEW_GEN], b.keys[NEW_GEN], 4, 1, "new gen");
    assert_stored(c, b.names[ABSENT], b.keys[ABSENT], 1, 1, "first");
    assert_stored(c, b.names[GARBAGE], b.keys[GARBAGE], 1, 1, "good");
    assert_stored(c, b.names[INVALID], b.keys[INVALID], 3, 6, "stored");

    /* Nothing to write is no error. */
    err[0] = '\0';
    assert_int_equal(cache_put_many(c, b.writes, 0, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    for (size_t s = 0; s < SERVER_COUNT; s++)
        memcached_free(direct[s]);
    batch_destroy(&b);
    cache_destroy(c);
}

/* One key twice in a batch: the higher write ends up stored, whatever
 * the order. */
static void
test_put_many_key_twice(void **state)
{
    struct cache *c = cache_on(0, 1);
    char err[CACHE_ERR_MAX] = "";
    struct cache_write twice[2];
    struct buf_writer other;
    struct batch b;

    (void)state;
    batch_create(&b, "test.many_twice", 1, 1);
    batch_set(&b, 0, 1, 9, "nine");
    make_value(&other, 1, 5, "five");
    twice[0] = twice[1] = b.writes[0];
    twice[1].value = other.data;
    twice[1].len = other.len;
    assert_int_equal(cache_put_many(c, twice, 2, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_int_equal(twice[0].status, 1);
    assert_int_equal(twice[1].status, 0);
    assert_stored(c, b.names[0], b.keys[0], 1, 9, "nine");
    buf_writer_destroy(&other);

    /* Lower first: both replace nine, the higher one last. */
    batch_set(&b, 0, 1, 12, "twelve");
    make_value(&other, 1, 11, "eleven");
    twice[0] = twice[1] = b.writes[0];
    twice[0].value = other.data;
    twice[0].len = other.len;
    assert_int_equal(cache_put_many(c, twice, 2, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_true(twice[0].status == 0 || twice[0].status == 1);
    assert_int_equal(twice[1].status, 1);
    assert_stored(c, b.names[0], b.keys[0], 1, 12, "twelve");
    buf_writer_destroy(&other);
    batch_destroy(&b);
    cache_destroy(c);
}

/* More keys than one multi-get takes, on both servers. */
static void
test_many_big_batch(void **state)
{
    struct cache *c = cache_on(0, SERVER_COUNT);
    char err[CACHE_ERR_MAX] = "";
    struct index_log log;
    struct batch b;

    (void)state;
    assert_true(BIG_BATCH > CACHE_MGET_KEYS_MAX);
    batch_create(&b, "test.many_big", BIG_BATCH, 1);
    for (size_t i = 0; i < b.count; i++)
        batch_set(&b, i, 2, 1000 + i, "big");
    assert_int_equal(cache_put_many(c, b.writes, b.count, err, sizeof(err)),
                     0);
    assert_string_equal(err, "");
    for (size_t i = 0; i < b.count; i++)
        assert_int_equal(b.writes[i].status, 1);
    index_log_create(&log, b.count);
    assert_int_equal(cache_mget_many(c, b.name_ptrs, b.name_lens, b.key_ptrs,
                                     b.key_lens, b.count, log_index, &log,
                                     err, sizeof(err)), 0);
    assert_int_equal(log.count, b.count);
    for (size_t i = 0; i < b.count; i++)
        assert_int_equal(log.sequence[i], 1000 + i);
    index_log_destroy(&log);
    batch_destroy(&b);
    cache_destroy(c);
}

/* One server of two refuses connections: the other's writes and reads
 * still happen; the failure's reason names the one down. */
static void
test_many_one_server_down(void **state)
{
    char list[TEXT_MAX], err[CACHE_ERR_MAX] = "", expect[CACHE_ERR_MAX];
    size_t written = 0, failed = 0;
    struct index_log log;
    struct cache *c;
    struct batch b;
    int port = 0, fd;

    (void)state;
    fd = bind_free_port(&port);   /* bound, never listening: refused */
    assert_true(fd >= 0);
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", servers[0].port,
             port);
    c = cache_create(list, TIMEOUT_MS, err, sizeof(err));
    assert_non_null(c);
    batch_create(&b, "test.many_down", GROUP_METRICS, 1);
    for (size_t i = 0; i < b.count; i++)
        batch_set(&b, i, 1, 1, "v");
    assert_int_equal(cache_put_many(c, b.writes, b.count, err, sizeof(err)),
                     -1);
    snprintf(expect, sizeof(expect), "memcached 127.0.0.1:%d: ", port);
    assert_memory_equal(err, expect, strlen(expect));
    index_log_create(&log, b.count);
    err[0] = '\0';
    assert_int_equal(cache_mget_many(c, b.name_ptrs, b.name_lens, b.key_ptrs,
                                     b.key_lens, b.count, log_index, &log,
                                     err, sizeof(err)), -1);
    assert_memory_equal(err, expect, strlen(expect));
    for (size_t i = 0; i < b.count; i++) {
        assert_true(b.writes[i].status == 1 || b.writes[i].status == -1);
        /* Read back exactly where written. */
        assert_int_equal(log.times[i], b.writes[i].status == 1);
        written += b.writes[i].status == 1;
        failed += b.writes[i].status == -1;
    }
    assert_true(written > 0);
    assert_true(failed > 0);
    index_log_destroy(&log);
    batch_destroy(&b);
    cache_destroy(c);
    close(fd);
}

struct batch_writer {
    struct cache *cache;
    struct batch *batch;       /* names and keys only; shared */
    int thread;
    int failed;
    char err[CACHE_ERR_MAX];
};

static void *
batch_writer_run(void *arg)
{
    struct batch_writer *bw = arg;
    struct buf_writer values[BATCH_KEYS];
    struct cache_write writes[BATCH_KEYS];

    for (int round = 0; round < BATCH_ROUNDS; round++) {
        uint64_t sequence = (uint64_t)round * THREADS + (uint64_t)bw->thread + 1;
        char err[CACHE_ERR_MAX] = "";

        for (size_t i = 0; i < BATCH_KEYS; i++) {
            make_value(&values[i], 1, sequence, "batch");
            writes[i] = (struct cache_write){
                .name = bw->batch->names[i],
                .name_len = bw->batch->name_lens[i],
                .key = bw->batch->keys[i], .key_len = bw->batch->key_lens[i],
                .value = values[i].data, .len = values[i].len,
            };
        }
        if (cache_put_many(bw->cache, writes, BATCH_KEYS, err, sizeof(err))
            != 0 && bw->failed++ == 0)
            memcpy(bw->err, err, sizeof(err));
        for (size_t i = 0; i < BATCH_KEYS; i++)
            buf_writer_destroy(&values[i]);
    }
    return NULL;
}

static void
test_concurrent_batches(void **state)
{
    struct cache *c = cache_on(0, SERVER_COUNT);
    struct batch_writer writers[THREADS];
    pthread_t threads[THREADS];
    int started = 0, joined = 0;
    struct batch b;

    (void)state;
    batch_create(&b, "test.many_concurrent", BATCH_KEYS, 1);
    for (int t = 0; t < THREADS; t++) {
        writers[t] = (struct batch_writer){ .cache = c, .batch = &b,
                                            .thread = t };
        if (pthread_create(&threads[t], NULL, batch_writer_run,
                           &writers[t]) != 0)
            break;
        started++;
    }
    for (int t = 0; t < started; t++)
        joined += pthread_join(threads[t], NULL) == 0;
    assert_int_equal(started, THREADS);
    assert_int_equal(joined, THREADS);
    for (int t = 0; t < THREADS; t++) {
        assert_string_equal(writers[t].err, "");
        assert_int_equal(writers[t].failed, 0);
    }
    for (size_t i = 0; i < BATCH_KEYS; i++)
        assert_stored(c, b.names[i], b.keys[i], 1, THREADS * BATCH_ROUNDS,
                      "batch");
    batch_destroy(&b);
    cache_destroy(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_put_then_mget),
        cmocka_unit_test(test_mget_reports_present_keys),
        cmocka_unit_test(test_forward_only),
        cmocka_unit_test(test_undecodable_value_is_replaced),
        cmocka_unit_test(test_invalid_value_header),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_server_down),
        cmocka_unit_test(test_server_silent),
        cmocka_unit_test(test_metric_on_one_server),
        cmocka_unit_test(test_concurrent_writers),
        cmocka_unit_test(test_many_across_servers),
        cmocka_unit_test(test_mget_many_absent_and_twice),
        cmocka_unit_test(test_put_many_forward_only),
        cmocka_unit_test(test_put_many_key_twice),
        cmocka_unit_test(test_many_big_batch),
        cmocka_unit_test(test_many_one_server_down),
        cmocka_unit_test(test_concurrent_batches),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
