/*
 * loadgen: the load generator of bench/run. It drives a tally frontend (or
 * anything that speaks the same JSON-RPC over HTTP/1.1) from the same
 * machine, and Etsy StatsD over UDP, with one pinned workload, and prints
 * figures. A program that prints figures, never a test of speed.
 *
 *   workload (fixed seed): 10,000 names split 40% counter, 30% percentile,
 *       15% unique, 10% gauge, 5% recent (PREFIX.c.<i>, .p.<i>, .u.<i>,
 *       .g.<i>, .r.<i>); each event picks a type by those shares, then a
 *       name of that type uniformly; event times uniform in the SPREAD s
 *       before the request body was made
 *
 *   record     N keep-alive connections (one request in flight each) over
 *              T threads, each with its own epoll loop, B events per
 *              events.record call, optional --rate (events/s) --> accepted
 *              events/s, latency p50/p99/p99.9; then metrics.query of every
 *              counter and percentile touched: count (and a counter's sum)
 *              must equal what the frontend accepted --> check=PASS/FAIL
 *   single     record with B = 1 and N = 256 --> requests/s, latency
 *   query      metrics.query of one percentile metric, window 1h, at --rate
 *              queries/s over N connections --> latency p50/p99/p99.9
 *   freshness  record at --rate while a probe records one counter event
 *              every 100 ms to its own metric and polls metrics.query until
 *              the count shows it --> acceptance-to-visibility p50/p99
 *   statsd     the same events as StatsD timer lines "name:value|ms" in UDP
 *              packets of at most 1432 bytes, at --rate lines/s
 *
 * Request bodies come from a pool made before the clock starts; a body is
 * remade (new values, new times) once it is REGEN_S old and not in flight,
 * so every event time stays within the last minute. Latency counts from the
 * time a request was due (with --rate) or sent (without), so a server that
 * falls behind a rate shows it in the percentiles.
 *
 * Output: lines of key=value pairs (bench/run reads them), then a human
 * summary on lines starting with "#".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../tests/testrand.h"
#include "xalloc.h"

/* ---- parameters ------------------------------------------------------- */

#define LG_NAMES_DEFAULT 10000
#define LG_SEED_DEFAULT 20261122ULL
#define LG_SPREAD_DEFAULT 50.0       /* event times: the 50 s before a body is made */
#define LG_REGEN_S 10.0              /* bodies older than this are remade */
#define LG_DRAIN_S 10.0              /* wait this long for answers after the end */
#define LG_CHECK_TIMEOUT_DEFAULT 60.0
#define LG_CHECK_CHUNK 100           /* names per metrics.query (the frontend's limit) */
#define LG_CHECK_PAUSE_S 0.5
#define LG_TRIES_MAX 10              /* attempts per call with --batch-ids */
#define LG_IDLE_WAIT_MS 20           /* epoll timeout when nothing is due */
#define LG_RECONNECT_PAUSE_S 0.1
#define LG_READ_CHUNK 65536
#define LG_HEADER_MAX 256
#define LG_UNIQUE_POOL 1000000       /* unique values "u<n>", n below this */
#define LG_SOURCES 8                 /* gauge and recent sources h0..h7 */
#define LG_COUNTER_MAX 10            /* counter values 1..10: sums stay exact */
#define LG_LOGNORMAL_MU 3.0
#define LG_GAUGE_MEAN 50.0
#define LG_GAUGE_STDDEV 10.0
#define LG_UDP_PACKET_MAX 1432
#define LG_UDP_SLICE_NS 1000000L     /* statsd: send what is due every 1 ms */
#define LG_PROBE_INTERVAL_S 0.1
#define LG_PROBE_POLL_PAUSE_S 0.002
#define LG_PROBE_MAX 100000
#define LG_NAME_MAX 256
#define LG_BATCH_ID_MAX 96
#define LG_HTTP_OK 200
#define LG_ERR_RETRY 1201            /* events not queued; retry (schema/errors.md) */
#define LG_NS_PER_S 1e9

/* ---- the workload ------------------------------------------------------- */

enum lg_type { LG_COUNTER, LG_PERCENTILE, LG_UNIQUE, LG_GAUGE, LG_RECENT, LG_TYPES };

static const struct {
    const char *name;
    char tag;            /* PREFIX.<tag>.<i> */
    int share;           /* percent of the names and of the events */
} lg_types[LG_TYPES] = {
    [LG_COUNTER] = {.name = "counter", .tag = 'c', .share = 40},
    [LG_PERCENTILE] = {.name = "percentile", .tag = 'p', .share = 30},
    [LG_UNIQUE] = {.name = "unique", .tag = 'u', .share = 15},
    [LG_GAUGE] = {.name = "gauge", .tag = 'g', .share = 10},
    [LG_RECENT] = {.name = "recent", .tag = 'r', .share = 5},
};

enum lg_mode { MODE_RECORD, MODE_SINGLE, MODE_QUERY, MODE_FRESHNESS, MODE_STATSD };

struct options {
    enum lg_mode mode;
    const char *host;
    int port;
    int conns;
    int threads;
    int batch;
    double rate;             /* events/s (record, freshness), queries/s, lines/s */
    double duration;
    long long total;         /* record: stop after this many events; 0 = none */
    const char *prefix;
    int batch_ids;
    int only;                /* one type (enum lg_type), or -1 for the mix */
    int fresh;               /* remake every body before it is sent */
    int names;
    double spread;           /* 0 = no "time" member (time of receipt) */
    const char *query_name;
    const char *window;
    uint64_t seed;
    double check_timeout;
    int check;
};

static struct options opt = {
    .host = "127.0.0.1",
    .threads = 1,
    .batch = 1000,
    .duration = 10.0,
    .prefix = "bench",
    .only = -1,
    .names = LG_NAMES_DEFAULT,
    .spread = LG_SPREAD_DEFAULT,
    .window = "1h",
    .seed = LG_SEED_DEFAULT,
    .check_timeout = LG_CHECK_TIMEOUT_DEFAULT,
    .check = 1,
};

/* Names per type, from the shares (or all of them for --only). */
static int type_names[LG_TYPES];
static int type_base[LG_TYPES];   /* first index of the type among all names */
static volatile int stopping;

static double
now_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / LG_NS_PER_S;
}

static double
now_wall(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / LG_NS_PER_S;
}

static void
sleep_s(double s)
{
    struct timespec ts;

    if (s <= 0)
        return;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * LG_NS_PER_S);
    nanosleep(&ts, NULL);
}

static int
is_stopping(void)
{
    return __atomic_load_n(&stopping, __ATOMIC_RELAXED);
}

static void
die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void
layout_names(void)
{
    int given = 0, base = 0;

    for (int t = 0; t < LG_TYPES; t++) {
        if (opt.only >= 0)
            type_names[t] = t == opt.only ? opt.names : 0;
        else
            type_names[t] = opt.names * lg_types[t].share / 100;
        given += type_names[t];
    }
    if (opt.only < 0)
        type_names[LG_COUNTER] += opt.names - given;   /* rounding */
    for (int t = 0; t < LG_TYPES; t++) {
        type_base[t] = base;
        base += type_names[t];
    }
}

/* ---- text buffers ------------------------------------------------------ */

struct text {
    char *data;          /* owned */
    size_t len, cap;
};

static void
text_reserve(struct text *t, size_t more)
{
    if (t->len + more + 1 <= t->cap)
        return;
    t->cap = t->cap == 0 ? 256 : t->cap;
    while (t->len + more + 1 > t->cap)
        t->cap *= 2;
    t->data = xrealloc(t->data, t->cap);
}

static void
text_add(struct text *t, const char *s, size_t n)
{
    text_reserve(t, n);
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
}

static void
text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
text_printf(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    text_reserve(t, LG_HEADER_MAX);
    va_start(ap, fmt);
    n = vsnprintf(t->data + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n >= t->cap - t->len) {   /* did not fit: again */
        text_reserve(t, (size_t)n);
        va_start(ap, fmt);
        vsnprintf(t->data + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
    }
    t->len += n > 0 ? (size_t)n : 0;
}

/* ---- events ------------------------------------------------------------- */

struct event {
    int type;
    int name;            /* index within the type */
    double value;        /* counter: integer 1..10 */
    unsigned id;         /* unique: the value's number; gauge/recent: source */
    double time;         /* seconds since the epoch; 0 = none */
};

struct gen {
    struct testrand rng;
    uint32_t *seen;      /* per name: the body stamp that last touched it */
    uint32_t stamp;
};

static void
gen_create(struct gen *g, uint64_t seed)
{
    testrand_seed(&g->rng, seed);
    g->seen = xcalloc((size_t)opt.names, sizeof(*g->seen));
    g->stamp = 0;
}

static void
gen_destroy(struct gen *g)
{
    free(g->seen);
}

static void
gen_event(struct gen *g, struct event *e, double wall)
{
    int pick = (int)testrand_below(&g->rng, 100), t = 0;

    if (opt.only >= 0)
        t = opt.only;
    else
        while (t < LG_TYPES - 1 && pick >= lg_types[t].share)
            pick -= lg_types[t++].share;
    e->type = t;
    e->name = (int)testrand_below(&g->rng, (uint64_t)type_names[t]);
    e->time = opt.spread > 0 ? wall - testrand_unit(&g->rng) * opt.spread : 0;
    e->id = 0;
    switch (t) {
    case LG_COUNTER:
        e->value = (double)(1 + testrand_below(&g->rng, LG_COUNTER_MAX));
        break;
    case LG_PERCENTILE:
        e->value = exp(LG_LOGNORMAL_MU + testrand_normal(&g->rng));
        break;
    case LG_UNIQUE:
        e->id = (unsigned)testrand_below(&g->rng, LG_UNIQUE_POOL);
        e->value = e->id;
        break;
    default:
        e->value = LG_GAUGE_MEAN + LG_GAUGE_STDDEV * testrand_normal(&g->rng);
        e->id = (unsigned)testrand_below(&g->rng, LG_SOURCES);
        break;
    }
}

static void
event_json(struct text *t, const struct event *e)
{
    text_printf(t, "{\"name\":\"%s.%c.%d\",\"type\":\"%s\",", opt.prefix,
                lg_types[e->type].tag, e->name, lg_types[e->type].name);
    switch (e->type) {
    case LG_COUNTER:
        text_printf(t, "\"value\":%.0f", e->value);
        break;
    case LG_UNIQUE:
        text_printf(t, "\"value\":\"u%u\"", e->id);
        break;
    case LG_PERCENTILE:
        text_printf(t, "\"value\":%.3f", e->value);
        break;
    default:
        text_printf(t, "\"value\":%.2f,\"source\":\"h%u\"", e->value, e->id);
        break;
    }
    if (e->time > 0)
        text_printf(t, ",\"time\":%.3f", e->time);
    text_add(t, "}", 1);
}

/* ---- latency histograms -------------------------------------------------
 * Log-linear buckets over nanoseconds: 32 linear sub-buckets per power of
 * two, so a reported percentile is within about 1.6% of the true one. */

#define HIST_SUB_BITS 5
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_BUCKETS (64 * HIST_SUB)

struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t count;
    double max;          /* seconds */
};

static int
hist_index(uint64_t ns)
{
    int e;

    if (ns < HIST_SUB)
        return (int)ns;
    e = 63 - __builtin_clzll(ns);
    return (e - HIST_SUB_BITS + 1) * HIST_SUB
           + (int)((ns >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The middle of bucket I, in seconds. */
static double
hist_value(int i)
{
    int e;
    double low, width;

    if (i < HIST_SUB)
        return (double)i / LG_NS_PER_S;
    e = i / HIST_SUB + HIST_SUB_BITS - 1;
    width = ldexp(1.0, e - HIST_SUB_BITS);
    low = (double)(HIST_SUB + i % HIST_SUB) * width;
    return (low + width / 2) / LG_NS_PER_S;
}

static void
hist_add(struct hist *h, double seconds)
{
    uint64_t ns = seconds <= 0 ? 0 : (uint64_t)(seconds * LG_NS_PER_S);

    h->n[hist_index(ns)]++;
    h->count++;
    if (seconds > h->max)
        h->max = seconds;
}

static void
hist_merge(struct hist *dst, const struct hist *src)
{
    for (int i = 0; i < HIST_BUCKETS; i++)
        dst->n[i] += src->n[i];
    dst->count += src->count;
    if (src->max > dst->max)
        dst->max = src->max;
}

/* The value at nearest rank ceil(Q * count), in milliseconds; 0 if empty. */
static double
hist_ms(const struct hist *h, double q)
{
    uint64_t rank = (uint64_t)ceil(q * (double)h->count), seen = 0;

    if (h->count == 0)
        return 0;
    if (rank == 0)
        rank = 1;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= rank)
            return fmin(hist_value(i), h->max) * 1e3;
    }
    return h->max * 1e3;
}

static void
hist_print(const char *key, const struct hist *h)
{
    printf("%s_ms_p50=%.3f %s_ms_p99=%.3f %s_ms_p999=%.3f %s_ms_max=%.3f "
           "%s_samples=%llu\n", key, hist_ms(h, 0.5), key, hist_ms(h, 0.99),
           key, hist_ms(h, 0.999), key, h->max * 1e3, key,
           (unsigned long long)h->count);
}

/* ---- HTTP ---------------------------------------------------------------- */

static struct sockaddr_in server_addr;

static void
resolve_server(void)
{
    memset(&server_addr, 0, sizeof(server_addr));
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1)
        die("--host must be an IPv4 address, not %s", opt.host);
}

static int
tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) != 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Writes the request line and headers for a JSON body of LEN bytes. */
static void
http_head(struct text *t, size_t len)
{
    text_printf(t, "POST /rpc HTTP/1.1\r\nHost: %s:%d\r\n"
                "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                opt.host, opt.port, len);
}

struct http_answer {
    int status;
    const char *body;    /* points into the read buffer */
    size_t body_len;
    size_t total;        /* bytes of the whole response */
    int close;           /* "Connection: close" */
};

/* 1 with A filled when BUF holds a whole response, 0 if it needs more, -1
 * if it is not a response this client understands (no Content-Length,
 * chunked, garbage). */
static int
http_parse(const char *buf, size_t len, struct http_answer *a)
{
    const char *end = memmem(buf, len, "\r\n\r\n", 4), *line;
    long long content = -1;

    if (end == NULL)
        return len > LG_READ_CHUNK ? -1 : 0;
    if (len < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return -1;
    a->status = atoi(buf + 9);
    a->close = 0;
    for (line = memchr(buf, '\n', (size_t)(end - buf)); line != NULL && line < end;
         line = memchr(line, '\n', (size_t)(end + 2 - line))) {
        line++;
        if (strncasecmp(line, "content-length:", 15) == 0)
            content = strtoll(line + 15, NULL, 10);
        else if (strncasecmp(line, "connection:", 11) == 0
                 && strncasecmp(line + 11 + strspn(line + 11, " "), "close", 5) == 0)
            a->close = 1;
        else if (strncasecmp(line, "transfer-encoding:", 18) == 0)
            return -1;
    }
    if (content < 0)
        return -1;
    a->body = end + 4;
    a->body_len = (size_t)content;
    a->total = (size_t)(end + 4 - buf) + (size_t)content;
    return len >= a->total;
}

/* A blocking client for the probe and the final check. */
struct bclient {
    int fd;
    struct text out, in;
};

static void
bclient_close(struct bclient *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void
bclient_destroy(struct bclient *c)
{
    bclient_close(c);
    free(c->out.data);
    free(c->in.data);
}

/* Posts JSON; 0 with A pointing into C's buffer (valid until the next
 * call), or -1 after a connection or protocol error. */
static int
bclient_call(struct bclient *c, const char *json, size_t len, struct http_answer *a)
{
    size_t off = 0;
    int r = 0;

    if (c->fd < 0 && (c->fd = tcp_connect()) < 0)
        return -1;
    c->out.len = 0;
    http_head(&c->out, len);
    text_add(&c->out, json, len);
    while (off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        off += (size_t)n;
    }
    c->in.len = 0;
    while ((r = c->in.len > 0 ? http_parse(c->in.data, c->in.len, a) : 0) == 0) {
        ssize_t n;

        text_reserve(&c->in, LG_READ_CHUNK);
        n = recv(c->fd, c->in.data + c->in.len, LG_READ_CHUNK, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        c->in.len += (size_t)n;
        c->in.data[c->in.len] = '\0';
    }
    if (r < 0)
        goto fail;
    if (a->close)
        bclient_close(c);
    return 0;
fail:
    bclient_close(c);
    return -1;
}

/* ---- answers -------------------------------------------------------------- */

/* The number after "KEY": in BODY, or -1 if absent. */
static long long
answer_number(const char *body, size_t len, const char *key)
{
    const char *p = memmem(body, len, key, strlen(key));

    return p == NULL ? -1 : strtoll(p + strlen(key), NULL, 10);
}

/* Sets MARK[i] for each rejected event index of an events.record answer
 * (which is not the plain "rejected":[]); returns how many, -1 if the
 * answer cannot be read. */
static int
answer_rejected(const char *body, size_t len, unsigned char *mark, int nevents)
{
    json_tokener *tok = json_tokener_new();
    json_object *root = json_tokener_parse_ex(tok, body, (int)len), *res, *rej;
    int count = -1;

    json_tokener_free(tok);
    if (root != NULL && json_object_object_get_ex(root, "result", &res)
        && json_object_object_get_ex(res, "rejected", &rej)
        && json_object_is_type(rej, json_type_array)) {
        count = 0;
        for (size_t i = 0; i < json_object_array_length(rej); i++) {
            json_object *idx;
            int k;

            if (!json_object_object_get_ex(json_object_array_get_idx(rej, i),
                                           "index", &idx))
                continue;
            k = json_object_get_int(idx);
            if (k >= 0 && k < nevents && !mark[k]) {
                mark[k] = 1;
                count++;
            }
        }
    }
    json_object_put(root);
    return count;
}

/* ---- request bodies ------------------------------------------------------ */

struct tracked {        /* a counter or percentile event of a body */
    uint32_t index;     /* in the call */
    uint8_t type;
    uint32_t name;
    uint32_t value;     /* counters only */
};

struct body {
    struct text events;       /* "{...},{...}" without brackets */
    double made;              /* monotonic */
    int nevents;
    int distinct;             /* distinct names */
    int inflight;
    struct tracked *tracked;
    int ntracked;
};

static void
body_make(struct gen *g, struct body *b, int nevents)
{
    double wall = now_wall();
    struct event e;

    b->events.len = 0;
    b->nevents = nevents;
    b->distinct = 0;
    b->ntracked = 0;
    b->tracked = xrealloc(b->tracked, (size_t)nevents * sizeof(*b->tracked));
    g->stamp++;
    for (int i = 0; i < nevents; i++) {
        gen_event(g, &e, wall);
        if (i > 0)
            text_add(&b->events, ",", 1);
        event_json(&b->events, &e);
        if (g->seen[type_base[e.type] + e.name] != g->stamp) {
            g->seen[type_base[e.type] + e.name] = g->stamp;
            b->distinct++;
        }
        if (e.type == LG_COUNTER || e.type == LG_PERCENTILE) {
            struct tracked *k = &b->tracked[b->ntracked++];

            k->index = (uint32_t)i;
            k->type = (uint8_t)e.type;
            k->name = (uint32_t)e.name;
            k->value = e.type == LG_COUNTER ? (uint32_t)e.value : 0;
        }
    }
    b->made = now_mono();
}

/* ---- statistics --------------------------------------------------------- */

struct stats {
    uint64_t requests;        /* answered, retries included */
    uint64_t ok;              /* calls that succeeded */
    uint64_t events_sent;     /* events of calls sent (first attempts) */
    uint64_t accepted;        /* sum of "accepted" */
    uint64_t rejected;        /* events rejected by index */
    uint64_t failures;        /* calls that failed for good */
    uint64_t retries;         /* attempts again with the same batch id */
    uint64_t lost;            /* calls whose connection broke before the answer */
    uint64_t unanswered;      /* calls still unanswered LG_DRAIN_S after the end */
    uint64_t http_errors;     /* answers other than 200 */
    uint64_t rpc_errors;      /* JSON-RPC error answers */
    uint64_t odd_answers;     /* accepted + rejected != events */
    uint64_t null_results;    /* query: "metrics" with a null result */
    uint64_t connect_errors;
    int min_distinct;
};

static void
stats_merge(struct stats *d, const struct stats *s)
{
    d->requests += s->requests;
    d->ok += s->ok;
    d->events_sent += s->events_sent;
    d->accepted += s->accepted;
    d->rejected += s->rejected;
    d->failures += s->failures;
    d->retries += s->retries;
    d->lost += s->lost;
    d->unanswered += s->unanswered;
    d->http_errors += s->http_errors;
    d->rpc_errors += s->rpc_errors;
    d->odd_answers += s->odd_answers;
    d->null_results += s->null_results;
    d->connect_errors += s->connect_errors;
    if (s->min_distinct > 0 && (d->min_distinct == 0 || s->min_distinct < d->min_distinct))
        d->min_distinct = s->min_distinct;
}

/* What the cluster must show: per counter count and sum, per percentile
 * count. */
struct expected {
    uint64_t *count[LG_TYPES];
    uint64_t *sum;
};

static void
expected_create(struct expected *x)
{
    for (int t = 0; t < LG_TYPES; t++)
        x->count[t] = xcalloc((size_t)type_names[t] + 1, sizeof(uint64_t));
    x->sum = xcalloc((size_t)type_names[LG_COUNTER] + 1, sizeof(uint64_t));
}

static void
expected_destroy(struct expected *x)
{
    for (int t = 0; t < LG_TYPES; t++)
        free(x->count[t]);
    free(x->sum);
}

static void
expected_merge(struct expected *d, const struct expected *s)
{
    for (int t = 0; t < LG_TYPES; t++)
        for (int i = 0; i < type_names[t]; i++)
            d->count[t][i] += s->count[t][i];
    for (int i = 0; i < type_names[LG_COUNTER]; i++)
        d->sum[i] += s->sum[i];
}

/* ---- the epoll engine ---------------------------------------------------- */

struct conn {
    int fd;
    int busy;                 /* a request is in flight */
    int want_out;             /* EPOLLOUT registered */
    struct text out, in;
    size_t out_off;
    double due, sent;         /* monotonic */
    struct body *body;        /* record: the body in flight */
    int tries;
    double retry_at;          /* reconnect not before (after a failure) */
};

struct worker {
    int id;
    pthread_t thread;
    int epfd;
    struct conn *conns;
    int nconns;
    struct gen gen;
    struct body *pool;
    int npool, next_body;
    double interval;          /* s between requests with a rate; 0 = none */
    double next_due;
    long long events_limit;   /* 0 = none */
    uint64_t seq;
    struct stats st;
    struct hist lat;
    struct expected want;
    unsigned char *mark;      /* per event of a call: rejected */
    struct text query;        /* query mode: the fixed JSON */
};

static int
conn_open(struct worker *w, struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN};

    c->fd = tcp_connect();
    if (c->fd < 0) {
        w->st.connect_errors++;
        c->retry_at = now_mono() + LG_RECONNECT_PAUSE_S;
        return -1;
    }
    ev.data.ptr = c;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = 0;
    c->in.len = 0;
    return 0;
}

static void
conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);          /* also leaves the epoll set */
    c->fd = -1;
}

static void
conn_want_out(struct worker *w, struct conn *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0)};

    if (c->want_out == on)
        return;
    ev.data.ptr = c;
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Sends what is left of C's request; -1 if the connection broke. */
static int
conn_flush(struct worker *w, struct conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_want_out(w, c, 1);
            return 0;
        }
        if (n <= 0)
            return -1;
        c->out_off += (size_t)n;
    }
    conn_want_out(w, c, 0);
    return 0;
}

static struct body *
worker_pick_body(struct worker *w)
{
    struct body *b;

    do {
        b = &w->pool[w->next_body];
        w->next_body = (w->next_body + 1) % w->npool;
    } while (b->inflight > 0);     /* the pool is larger than the connections */
    if (opt.fresh || now_mono() - b->made > LG_REGEN_S)
        body_make(&w->gen, b, b->nevents);
    return b;
}

/* Builds C's request (a new call, or the same bytes again for a retry). */
static void
conn_build(struct worker *w, struct conn *c)
{
    static const char record_tail[] = "]}}";
    char head[LG_HEADER_MAX];
    struct body *b;
    int n;

    c->out_off = 0;
    if (c->tries > 0)
        return;                    /* a retry: same bytes, same batch id */
    c->out.len = 0;
    if (opt.mode == MODE_QUERY) {
        http_head(&c->out, w->query.len);
        text_add(&c->out, w->query.data, w->query.len);
        return;
    }
    b = c->body = worker_pick_body(w);
    b->inflight++;
    if (opt.batch_ids)
        n = snprintf(head, sizeof(head), "{\"jsonrpc\":\"2.0\",\"id\":%llu,"
                     "\"method\":\"events.record\",\"params\":{\"batch\":"
                     "\"lg-%llu-%d-%d-%llu\",\"events\":[",
                     (unsigned long long)w->seq, (unsigned long long)opt.seed,
                     (int)getpid(), w->id, (unsigned long long)w->seq);
    else
        n = snprintf(head, sizeof(head), "{\"jsonrpc\":\"2.0\",\"id\":%llu,"
                     "\"method\":\"events.record\",\"params\":{\"events\":[",
                     (unsigned long long)w->seq);
    w->seq++;
    http_head(&c->out, (size_t)n + b->events.len + strlen(record_tail));
    text_add(&c->out, head, (size_t)n);
    text_add(&c->out, b->events.data, b->events.len);
    text_add(&c->out, record_tail, strlen(record_tail));
    w->st.events_sent += (uint64_t)b->nevents;
}

static void
conn_send(struct worker *w, struct conn *c, double due)
{
    if (c->fd < 0 && conn_open(w, c) != 0)
        return;
    conn_build(w, c);
    c->busy = 1;
    c->due = due;
    c->sent = now_mono();
    c->in.len = 0;
    if (conn_flush(w, c) != 0) {
        /* Broke before the server could answer: try again on a fresh one. */
        conn_close(c);
        c->out_off = 0;
        if (conn_open(w, c) != 0 || conn_flush(w, c) != 0) {
            conn_close(c);
            c->busy = 0;
            if (c->body != NULL)
                c->body->inflight--;
            w->st.lost++;
            c->tries = 0;
            c->body = NULL;
        }
    }
}

/* The call on C is over (answered or given up). */
static void
conn_done(struct conn *c)
{
    c->busy = 0;
    c->tries = 0;
    if (c->body != NULL)
        c->body->inflight--;
    c->body = NULL;
}

static void
record_answer(struct worker *w, struct conn *c, const struct http_answer *a)
{
    struct body *b = c->body;
    long long accepted;
    int rejected = 0;

    if (a->status != LG_HTTP_OK) {
        w->st.http_errors++;
        w->st.failures++;
        conn_done(c);
        return;
    }
    if (memmem(a->body, a->body_len, "\"error\"", 7) != NULL) {
        long long code = answer_number(a->body, a->body_len, "\"code\":");

        w->st.rpc_errors++;
        if (opt.batch_ids && code == LG_ERR_RETRY && c->tries + 1 < LG_TRIES_MAX) {
            c->tries++;
            w->st.retries++;
            c->busy = 0;           /* the dispatcher sends it again at once */
            return;
        }
        w->st.failures++;
        conn_done(c);
        return;
    }
    accepted = answer_number(a->body, a->body_len, "\"accepted\":");
    memset(w->mark, 0, (size_t)b->nevents);
    if (memmem(a->body, a->body_len, "\"rejected\":[]", 13) == NULL)
        rejected = answer_rejected(a->body, a->body_len, w->mark, b->nevents);
    if (accepted < 0 || rejected < 0 || accepted + rejected != b->nevents)
        w->st.odd_answers++;
    w->st.ok++;
    w->st.accepted += accepted > 0 ? (uint64_t)accepted : 0;
    w->st.rejected += rejected > 0 ? (uint64_t)rejected : 0;
    for (int i = 0; i < b->ntracked; i++) {
        const struct tracked *k = &b->tracked[i];

        if (w->mark[k->index])
            continue;
        w->want.count[k->type][k->name]++;
        if (k->type == LG_COUNTER)
            w->want.sum[k->name] += k->value;
    }
    conn_done(c);
}

static void
query_answer(struct worker *w, struct conn *c, const struct http_answer *a)
{
    if (a->status != LG_HTTP_OK) {
        w->st.http_errors++;
        w->st.failures++;
    } else if (memmem(a->body, a->body_len, "\"error\"", 7) != NULL) {
        w->st.rpc_errors++;
        w->st.failures++;
    } else {
        w->st.ok++;
        if (memmem(a->body, a->body_len, ":null", 5) != NULL)
            w->st.null_results++;
    }
    conn_done(c);
}

/* A connection broke with a request in flight: its fate is unknown. With
 * batch ids the call is sent again (applied once either way). */
static void
conn_broke(struct worker *w, struct conn *c)
{
    conn_close(c);
    c->retry_at = now_mono() + LG_RECONNECT_PAUSE_S;
    if (!c->busy)
        return;
    if (opt.batch_ids && c->body != NULL && c->tries + 1 < LG_TRIES_MAX) {
        c->tries++;
        w->st.retries++;
        c->busy = 0;
        return;
    }
    w->st.lost++;
    conn_done(c);
}

static void
conn_readable(struct worker *w, struct conn *c)
{
    struct http_answer a;
    int r;

    for (;;) {
        ssize_t n;

        text_reserve(&c->in, LG_READ_CHUNK);
        n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1,
                 MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0 || !c->busy) {
            conn_broke(w, c);
            return;
        }
        c->in.len += (size_t)n;
        c->in.data[c->in.len] = '\0';
    }
    r = http_parse(c->in.data, c->in.len, &a);
    if (r == 0)
        return;
    if (r < 0 || a.total != c->in.len) {
        conn_broke(w, c);
        return;
    }
    w->st.requests++;
    if (c->tries == 0 || a.status == LG_HTTP_OK)
        hist_add(&w->lat, now_mono() - c->due);
    if (opt.mode == MODE_QUERY)
        query_answer(w, c, &a);
    else
        record_answer(w, c, &a);
    c->in.len = 0;
    if (a.close)
        conn_close(c);
}

/* Sends what is due on idle connections; returns the epoll timeout (ms). */
static int
worker_dispatch(struct worker *w)
{
    double now = now_mono();
    int wait_ms = LG_IDLE_WAIT_MS;

    for (int i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        double due = now;

        if (c->busy || (c->fd < 0 && now < c->retry_at))
            continue;
        if (c->tries > 0) {            /* a retry goes out at once */
            conn_send(w, c, c->due);
            continue;
        }
        if (is_stopping())
            continue;
        if (w->events_limit > 0 && (long long)w->st.events_sent >= w->events_limit)
            continue;
        if (w->interval > 0) {
            if (now < w->next_due) {
                int ms = (int)ceil((w->next_due - now) * 1e3);

                wait_ms = ms < wait_ms ? ms : wait_ms;
                break;
            }
            due = w->next_due;
            w->next_due += w->interval;
        }
        conn_send(w, c, due);
    }
    return wait_ms;
}

static int
worker_busy(const struct worker *w)
{
    for (int i = 0; i < w->nconns; i++)
        if (w->conns[i].busy || w->conns[i].tries > 0)
            return 1;
    return 0;
}

static void *
worker_run(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    double drain_end = 0;

    w->next_due = now_mono();
    for (;;) {
        int timeout = worker_dispatch(w), n;

        if (is_stopping() || (w->events_limit > 0
                              && (long long)w->st.events_sent >= w->events_limit)) {
            if (!worker_busy(w))
                break;
            if (drain_end == 0)
                drain_end = now_mono() + LG_DRAIN_S;
            else if (now_mono() > drain_end)
                break;
        }
        n = epoll_wait(w->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;

            if (c->fd < 0)
                continue;
            if ((evs[i].events & EPOLLOUT) && conn_flush(w, c) != 0) {
                conn_broke(w, c);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                conn_readable(w, c);
        }
    }
    for (int i = 0; i < w->nconns; i++) {
        if (w->conns[i].busy || w->conns[i].tries > 0) {
            w->st.unanswered++;
            conn_done(&w->conns[i]);
        }
        conn_close(&w->conns[i]);
    }
    return NULL;
}

static void
worker_create(struct worker *w, int id, int nconns, double rate_share)
{
    int npool = 0;

    memset(w, 0, sizeof(*w));
    w->id = id;
    w->nconns = nconns;
    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    w->conns = xcalloc((size_t)nconns, sizeof(*w->conns));
    gen_create(&w->gen, opt.seed + (uint64_t)id * 7919);
    expected_create(&w->want);
    if (opt.mode == MODE_QUERY) {
        text_printf(&w->query, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
                    "\"metrics.query\",\"params\":{\"names\":[\"%s\"],"
                    "\"window\":\"%s\"}}", opt.query_name, opt.window);
        w->interval = rate_share > 0 ? 1.0 / rate_share : 0;
    } else {
        npool = 2 * nconns + 16;
        w->interval = rate_share > 0 ? opt.batch / rate_share : 0;
        w->mark = xcalloc((size_t)opt.batch, 1);
    }
    w->npool = npool;
    w->pool = xcalloc((size_t)(npool > 0 ? npool : 1), sizeof(*w->pool));
    for (int i = 0; i < npool; i++) {
        body_make(&w->gen, &w->pool[i], opt.batch);
        if (w->st.min_distinct == 0 || w->pool[i].distinct < w->st.min_distinct)
            w->st.min_distinct = w->pool[i].distinct;
    }
    for (int i = 0; i < nconns; i++) {
        w->conns[i].fd = -1;
        conn_open(w, &w->conns[i]);
    }
}

static void
worker_destroy(struct worker *w)
{
    for (int i = 0; i < w->nconns; i++) {
        free(w->conns[i].out.data);
        free(w->conns[i].in.data);
    }
    free(w->conns);
    for (int i = 0; i < w->npool; i++) {
        free(w->pool[i].events.data);
        free(w->pool[i].tracked);
    }
    free(w->pool);
    free(w->mark);
    free(w->query.data);
    expected_destroy(&w->want);
    gen_destroy(&w->gen);
    close(w->epfd);
}

/* ---- the final check ------------------------------------------------------ */

struct check_result {
    int pass;
    int names;                /* checked */
    int mismatched;           /* in the last sweep */
    long long count_diff;     /* cluster minus expected, summed, last sweep */
    double wait_s;            /* from the start of the check to the verdict */
    const char *why;          /* when a query failed */
};

/* One sweep over the names of TYPE; adds mismatches to R. 0, or -1 if a
 * query failed. */
static int
check_type(struct bclient *c, const struct expected *x, int type, struct check_result *r)
{
    struct text call = {0};
    char name[LG_NAME_MAX];
    int status = 0;

    for (int first = 0; first < type_names[type] && status == 0; first += LG_CHECK_CHUNK) {
        int last = first + LG_CHECK_CHUNK < type_names[type]
                   ? first + LG_CHECK_CHUNK : type_names[type];
        struct http_answer a;
        json_object *root = NULL, *res, *metrics;

        call.len = 0;
        text_printf(&call, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"
                    "\"metrics.query\",\"params\":{\"names\":[");
        for (int i = first; i < last; i++)
            text_printf(&call, "%s\"%s.%c.%d\"", i > first ? "," : "", opt.prefix,
                        lg_types[type].tag, i);
        text_add(&call, "]}}", 3);
        if (bclient_call(c, call.data, call.len, &a) != 0 || a.status != LG_HTTP_OK
            || (root = json_tokener_parse(a.body)) == NULL   /* NUL-terminated */
            || !json_object_object_get_ex(root, "result", &res)
            || !json_object_object_get_ex(res, "metrics", &metrics)) {
            r->why = "a metrics.query failed";
            json_object_put(root);
            status = -1;
            break;
        }
        for (int i = first; i < last; i++) {
            json_object *m, *v;
            long long got = 0;

            snprintf(name, sizeof(name), "%s.%c.%d", opt.prefix, lg_types[type].tag, i);
            if (json_object_object_get_ex(metrics, name, &m) && m != NULL
                && json_object_object_get_ex(m, "count", &v))
                got = json_object_get_int64(v);
            r->names++;
            r->count_diff += got - (long long)x->count[type][i];
            if (got != (long long)x->count[type][i]) {
                r->mismatched++;
            } else if (type == LG_COUNTER && got > 0) {
                if (!json_object_object_get_ex(m, "sum", &v)
                    || json_object_get_double(v) != (double)x->sum[i])
                    r->mismatched++;
            }
        }
        json_object_put(root);
    }
    free(call.data);
    return status;
}

/* Sweeps until every counter and percentile matches, or TIMEOUT passes. */
static void
check_totals(const struct expected *x, double timeout, struct check_result *r)
{
    struct bclient c = {.fd = -1};
    double start = now_mono();

    for (;;) {
        int failed = 0;

        r->names = r->mismatched = 0;
        r->count_diff = 0;
        r->why = NULL;
        if (check_type(&c, x, LG_COUNTER, r) != 0 || check_type(&c, x, LG_PERCENTILE, r) != 0)
            failed = 1;
        r->wait_s = now_mono() - start;
        r->pass = !failed && r->mismatched == 0;
        if (r->pass || r->wait_s > timeout)
            break;
        sleep_s(LG_CHECK_PAUSE_S);
    }
    bclient_destroy(&c);
}

/* ---- the freshness probe ---------------------------------------------------- */

struct probe {
    pthread_t thread;
    struct hist fresh;
    uint64_t sent, failed, unseen;
    double *accepted_at;      /* per probe event k (1-based count) */
};

static void *
probe_run(void *arg)
{
    struct probe *p = arg;
    struct bclient rec = {.fd = -1}, qry = {.fd = -1};
    struct text record = {0}, query = {0};
    long long count = 0, seen = 0;
    double next = now_mono(), give_up = 0;

    text_printf(&record, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events.record\","
                "\"params\":{\"events\":[{\"name\":\"%s.fresh\",\"type\":\"counter\","
                "\"value\":1}]}}", opt.prefix);
    text_printf(&query, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"metrics.query\","
                "\"params\":{\"names\":[\"%s.fresh\"]}}", opt.prefix);
    for (;;) {
        double now = now_mono();
        struct http_answer a;

        if (is_stopping()) {
            if (give_up == 0)
                give_up = now + LG_DRAIN_S;
            if (seen >= count || now > give_up)
                break;
        }
        if (!is_stopping() && now >= next && count < LG_PROBE_MAX) {
            next += LG_PROBE_INTERVAL_S;
            p->sent++;
            if (bclient_call(&rec, record.data, record.len, &a) == 0
                && a.status == LG_HTTP_OK
                && answer_number(a.body, a.body_len, "\"accepted\":") == 1)
                p->accepted_at[++count] = now_mono();
            else
                p->failed++;
            continue;
        }
        if (seen < count) {
            long long got;

            if (bclient_call(&qry, query.data, query.len, &a) != 0 || a.status != LG_HTTP_OK) {
                sleep_s(LG_PROBE_POLL_PAUSE_S);
                continue;
            }
            got = answer_number(a.body, a.body_len, "\"count\":");
            now = now_mono();
            for (; seen < got && seen < count; seen++)
                hist_add(&p->fresh, now - p->accepted_at[seen + 1]);
            sleep_s(LG_PROBE_POLL_PAUSE_S);
            continue;
        }
        sleep_s(fmin(next - now, LG_PROBE_INTERVAL_S));
    }
    p->unseen = (uint64_t)(count - seen);
    bclient_destroy(&rec);
    bclient_destroy(&qry);
    free(record.data);
    free(query.data);
    return NULL;
}

/* ---- statsd ----------------------------------------------------------------- */

/* Sends the packet of IN_PACKET lines; counts them as sent or unsent. */
static void
statsd_send(int fd, const char *packet, size_t len, uint64_t in_packet,
            uint64_t *lines, uint64_t *packets, uint64_t *unsent)
{
    if (send(fd, packet, len, 0) == (ssize_t)len) {
        (*packets)++;
        *lines += in_packet;
    } else {
        *unsent += in_packet;
    }
}

/* Lines are made as they fall due and go out in full packets (at most
 * LG_UDP_PACKET_MAX bytes), so the pace is exact to within one packet. */
static void
run_statsd(void)
{
    struct gen g;
    struct event e;
    char packet[LG_UDP_PACKET_MAX], line[LG_NAME_MAX + 64];
    size_t plen = 0;
    uint64_t lines = 0, packets = 0, unsent = 0, in_packet = 0;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    double start, elapsed, wall = now_wall();
    struct timespec tick;

    if (fd < 0 || connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) != 0)
        die("udp socket: %s", strerror(errno));
    gen_create(&g, opt.seed);
    start = now_mono();
    clock_gettime(CLOCK_MONOTONIC, &tick);
    while ((elapsed = now_mono() - start) < opt.duration) {
        uint64_t due = (uint64_t)(elapsed * opt.rate);

        while (lines + unsent + in_packet < due) {
            int n;

            gen_event(&g, &e, wall);
            n = snprintf(line, sizeof(line), "%s.%c.%d:%.3f|ms", opt.prefix,
                         lg_types[e.type].tag, e.name, e.value);
            if (plen > 0 && plen + 1 + (size_t)n > sizeof(packet)) {
                statsd_send(fd, packet, plen, in_packet, &lines, &packets, &unsent);
                plen = 0;
                in_packet = 0;
            }
            if (plen > 0)
                packet[plen++] = '\n';
            memcpy(packet + plen, line, (size_t)n);
            plen += (size_t)n;
            in_packet++;
        }
        tick.tv_nsec += LG_UDP_SLICE_NS;
        if (tick.tv_nsec >= (long)LG_NS_PER_S) {
            tick.tv_nsec -= (long)LG_NS_PER_S;
            tick.tv_sec++;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
    }
    if (plen > 0)
        statsd_send(fd, packet, plen, in_packet, &lines, &packets, &unsent);
    elapsed = now_mono() - start;
    close(fd);
    gen_destroy(&g);
    printf("mode=statsd host=%s port=%d rate=%.0f duration_s=%.3f\n",
           opt.host, opt.port, opt.rate, elapsed);
    printf("sent_lines=%llu packets=%llu unsent_lines=%llu lines_per_s=%.0f "
           "lines_per_packet=%.1f\n", (unsigned long long)lines,
           (unsigned long long)packets, (unsigned long long)unsent,
           (double)lines / elapsed, packets ? (double)lines / (double)packets : 0.0);
    printf("# statsd: %llu timer lines in %llu packets (<= %d bytes) in %.1f s = %.0f lines/s\n",
           (unsigned long long)lines, (unsigned long long)packets,
           LG_UDP_PACKET_MAX, elapsed, (double)lines / elapsed);
}

/* ---- the HTTP modes ------------------------------------------------------------ */

static const char *const mode_names[] = {
    [MODE_RECORD] = "record", [MODE_SINGLE] = "single", [MODE_QUERY] = "query",
    [MODE_FRESHNESS] = "freshness", [MODE_STATSD] = "statsd",
};

static void
print_results(const struct stats *st, const struct hist *lat, double elapsed)
{
    printf("mode=%s host=%s port=%d conns=%d threads=%d batch=%d rate=%.0f "
           "duration_s=%.3f prefix=%s batch_ids=%d\n", mode_names[opt.mode],
           opt.host, opt.port, opt.conns, opt.threads,
           opt.mode == MODE_QUERY ? 0 : opt.batch, opt.rate, elapsed, opt.prefix,
           opt.batch_ids);
    printf("requests=%llu ok=%llu failures=%llu retries=%llu lost=%llu "
           "unanswered=%llu http_errors=%llu rpc_errors=%llu connect_errors=%llu "
           "requests_per_s=%.1f\n", (unsigned long long)st->requests,
           (unsigned long long)st->ok, (unsigned long long)st->failures,
           (unsigned long long)st->retries, (unsigned long long)st->lost,
           (unsigned long long)st->unanswered,
           (unsigned long long)st->http_errors, (unsigned long long)st->rpc_errors,
           (unsigned long long)st->connect_errors, (double)st->ok / elapsed);
    if (opt.mode == MODE_QUERY)
        printf("null_results=%llu queries_per_s=%.1f\n",
               (unsigned long long)st->null_results, (double)st->ok / elapsed);
    else
        printf("events_sent=%llu accepted=%llu rejected=%llu odd_answers=%llu "
               "events_per_s=%.0f min_distinct_names=%d\n",
               (unsigned long long)st->events_sent, (unsigned long long)st->accepted,
               (unsigned long long)st->rejected, (unsigned long long)st->odd_answers,
               (double)st->accepted / elapsed, st->min_distinct);
    hist_print("latency", lat);
}

static void
run_http(void)
{
    int nthreads = opt.threads < opt.conns ? opt.threads : opt.conns;
    struct worker *w = xcalloc((size_t)nthreads, sizeof(*w));
    struct probe probe = {0};
    struct stats st = {0};
    struct hist *lat = xcalloc(1, sizeof(*lat));
    struct expected want;
    double start, elapsed;

    expected_create(&want);
    for (int i = 0; i < nthreads; i++) {
        int share = opt.conns / nthreads + (i < opt.conns % nthreads);

        worker_create(&w[i], i, share, opt.rate * share / opt.conns);
        if (opt.total > 0)
            w[i].events_limit = opt.total * share / opt.conns;
    }
    start = now_mono();
    if (opt.mode == MODE_FRESHNESS) {
        probe.accepted_at = xcalloc(LG_PROBE_MAX + 1, sizeof(double));
        if (pthread_create(&probe.thread, NULL, probe_run, &probe) != 0)
            die("pthread_create failed");
    }
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&w[i].thread, NULL, worker_run, &w[i]) != 0)
            die("pthread_create failed");
    if (opt.total <= 0 || opt.duration > 0) {
        while (now_mono() - start < opt.duration)
            sleep_s(fmin(0.05, opt.duration - (now_mono() - start)));
        __atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(w[i].thread, NULL);
    elapsed = now_mono() - start;
    __atomic_store_n(&stopping, 1, __ATOMIC_RELAXED);
    if (opt.mode == MODE_FRESHNESS)
        pthread_join(probe.thread, NULL);
    for (int i = 0; i < nthreads; i++) {
        stats_merge(&st, &w[i].st);
        hist_merge(lat, &w[i].lat);
        expected_merge(&want, &w[i].want);
        worker_destroy(&w[i]);
    }
    print_results(&st, lat, elapsed);
    if (opt.mode == MODE_FRESHNESS) {
        printf("probes=%llu probe_failed=%llu probe_unseen=%llu\n",
               (unsigned long long)probe.sent, (unsigned long long)probe.failed,
               (unsigned long long)probe.unseen);
        hist_print("fresh", &probe.fresh);
    }
    printf("# %s: %.0f events/s accepted, %.0f calls/s, latency p50 %.2f ms, "
           "p99 %.2f ms, p99.9 %.2f ms; %llu failed, %llu lost, %llu unanswered, "
           "%llu retried\n",
           mode_names[opt.mode], (double)st.accepted / elapsed, (double)st.ok / elapsed,
           hist_ms(lat, 0.5), hist_ms(lat, 0.99), hist_ms(lat, 0.999),
           (unsigned long long)st.failures, (unsigned long long)st.lost,
           (unsigned long long)st.unanswered, (unsigned long long)st.retries);
    if (opt.mode == MODE_FRESHNESS)
        printf("# freshness: %llu probes, acceptance to visibility p50 %.1f ms, "
               "p99 %.1f ms\n", (unsigned long long)probe.fresh.count,
               hist_ms(&probe.fresh, 0.5), hist_ms(&probe.fresh, 0.99));
    if (opt.check && opt.mode != MODE_QUERY) {
        struct check_result r = {0};

        check_totals(&want, opt.check_timeout, &r);
        if (st.lost > 0 || st.unanswered > 0 || st.failures > 0 || st.odd_answers > 0)
            r.pass = 0;        /* some events' fate is unknown */
        printf("check=%s checked_names=%d mismatched=%d count_diff=%lld "
               "check_wait_s=%.2f%s%s\n", r.pass ? "PASS" : "FAIL", r.names,
               r.mismatched, r.count_diff, r.wait_s, r.why ? " why=" : "",
               r.why ? "query_failed" : "");
        printf("# exactness: %s (%d counters and percentiles; %d differ; "
               "counts off by %lld; %.1f s after the load)\n",
               r.pass ? "PASS" : "FAIL", r.names, r.mismatched, r.count_diff, r.wait_s);
    }
    free(probe.accepted_at);
    free(lat);
    expected_destroy(&want);
    free(w);
}

/* ---- options --------------------------------------------------------------------- */

static void
usage(void)
{
    fputs("usage: loadgen MODE --port P [options]\n"
          "modes: record single query freshness statsd\n"
          "  --host A          IPv4 address (127.0.0.1)\n"
          "  --port P          frontend HTTP port, or statsd UDP port\n"
          "  --conns N         connections (record 64, single 256, query 32, freshness 16)\n"
          "  --threads T       client threads (1)\n"
          "  --batch B         events per call (record 1000; single 1)\n"
          "  --rate R          events/s (record, freshness), queries/s (query),\n"
          "                    lines/s (statsd); 0 = as fast as answers come\n"
          "  --duration S      seconds (10)\n"
          "  --total N         record: stop after N events (--duration 0: no time limit)\n"
          "  --prefix P        metric names P.c.<i>, P.p.<i>, ... (bench)\n"
          "  --names N         names in the workload (10000)\n"
          "  --only TYPE       all names and events of one type\n"
          "  --spread S        event times in the S seconds before now (50; 0 = no time)\n"
          "  --batch-ids       give each call a batch id and retry 1201 with it\n"
          "  --name M          query: the metric (PREFIX.p.0)\n"
          "  --window W        query: the window (1h)\n"
          "  --seed N          workload seed\n"
          "  --no-check        skip the exactness check at the end\n"
          "  --fresh           remake every body before it is sent: no event\n"
          "                    repeats, so unique values stay distinct\n"
          "  --check-timeout S how long the check waits for exact totals (60)\n",
          stderr);
    exit(2);
}

static double
arg_number(const char *name, const char *s, double min)
{
    char *end;
    double v = strtod(s, &end);

    if (*s == '\0' || *end != '\0' || !isfinite(v) || v < min)
        die("%s: not a number >= %g: %s", name, min, s);
    return v;
}

static void
parse_options(int argc, char **argv)
{
    int conns = 0, batch = 0;

    if (argc < 2)
        usage();
    for (opt.mode = 0; opt.mode <= MODE_STATSD; opt.mode++)
        if (strcmp(argv[1], mode_names[opt.mode]) == 0)
            break;
    if (opt.mode > MODE_STATSD)
        usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int flag = strcmp(a, "--batch-ids") == 0 || strcmp(a, "--no-check") == 0
                   || strcmp(a, "--fresh") == 0;

        if (!flag && v == NULL)
            usage();
        if (strcmp(a, "--batch-ids") == 0)
            opt.batch_ids = 1;
        else if (strcmp(a, "--no-check") == 0)
            opt.check = 0;
        else if (strcmp(a, "--fresh") == 0)
            opt.fresh = 1;
        else if (strcmp(a, "--host") == 0)
            opt.host = v;
        else if (strcmp(a, "--port") == 0)
            opt.port = (int)arg_number(a, v, 1);
        else if (strcmp(a, "--conns") == 0)
            conns = (int)arg_number(a, v, 1);
        else if (strcmp(a, "--threads") == 0)
            opt.threads = (int)arg_number(a, v, 1);
        else if (strcmp(a, "--batch") == 0)
            batch = (int)arg_number(a, v, 1);
        else if (strcmp(a, "--rate") == 0)
            opt.rate = arg_number(a, v, 0);
        else if (strcmp(a, "--duration") == 0)
            opt.duration = arg_number(a, v, 0);
        else if (strcmp(a, "--total") == 0)
            opt.total = (long long)arg_number(a, v, 0);
        else if (strcmp(a, "--prefix") == 0)
            opt.prefix = v;
        else if (strcmp(a, "--names") == 0)
            opt.names = (int)arg_number(a, v, LG_TYPES);
        else if (strcmp(a, "--spread") == 0)
            opt.spread = arg_number(a, v, 0);
        else if (strcmp(a, "--name") == 0)
            opt.query_name = v;
        else if (strcmp(a, "--window") == 0)
            opt.window = v;
        else if (strcmp(a, "--seed") == 0)
            opt.seed = (uint64_t)arg_number(a, v, 0);
        else if (strcmp(a, "--check-timeout") == 0)
            opt.check_timeout = arg_number(a, v, 0);
        else if (strcmp(a, "--only") == 0) {
            for (opt.only = 0; opt.only < LG_TYPES; opt.only++)
                if (strcmp(v, lg_types[opt.only].name) == 0)
                    break;
            if (opt.only == LG_TYPES)
                die("--only: not a type: %s", v);
        } else
            usage();
        if (!flag)
            i++;
    }
    if (opt.port == 0)
        die("--port is required");
    if (opt.mode == MODE_QUERY && opt.rate <= 0)
        die("query needs --rate");
    if (opt.mode == MODE_STATSD && opt.rate <= 0)
        die("statsd needs --rate");
    if (opt.mode == MODE_SINGLE)
        opt.batch = 1;
    else if (batch > 0)
        opt.batch = batch;
    if (conns > 0)
        opt.conns = conns;
    else
        opt.conns = opt.mode == MODE_SINGLE ? 256 : opt.mode == MODE_QUERY ? 32
                    : opt.mode == MODE_FRESHNESS ? 16 : 64;
    if (opt.mode == MODE_QUERY)
        opt.check = 0;
    if (opt.total <= 0 && opt.duration <= 0)
        die("--duration must be positive without --total");
}

int
main(int argc, char **argv)
{
    static char default_query[LG_NAME_MAX];

    setvbuf(stdout, NULL, _IOLBF, 0);
    parse_options(argc, argv);
    layout_names();
    resolve_server();
    if (opt.query_name == NULL) {
        snprintf(default_query, sizeof(default_query), "%s.p.0", opt.prefix);
        opt.query_name = default_query;
    }
    if (opt.mode == MODE_STATSD)
        run_statsd();
    else
        run_http();
    return 0;
}
