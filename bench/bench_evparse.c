/*
 * bench_evparse: how fast the frontend turns one events.record body into
 * events, the json-c way and the evparse way, on the same bodies in one
 * run. A program that prints figures, never a test: nothing here asserts
 * on a timing.
 *
 *   bodies (fixed seed): BENCH_BODIES bodies of 1,000 events shaped as
 *   bench/loadgen makes them: 40% counter, 30% percentile, 15% unique,
 *   10% gauge, 5% recent over 10,000 names ("bench.c.1234"), times within
 *   the last 50 s as fractional seconds with 3 decimals
 *        |
 *        +--> tree      jsonrpc_parse("[" body "]") (the json-c path: the
 *        |              body is one call of a batch, so evparse stays out),
 *        |              event_from_json per element, jsonrpc_batch_destroy
 *        +--> evparse   jsonrpc_parse(body) (evparse decodes it),
 *        |              evparse_record_stamp, jsonrpc_batch_destroy
 *        +--> decoder   evparse_record_parse + destroy alone
 *        v
 *   events/s per core (thread CPU time) of each, and the ratio
 *
 * Every figure is the best of BENCH_RUNS runs; a run repeats over the
 * bodies until BENCH_MIN_SECONDS of CPU time have passed.
 *
 * Usage: bench_evparse [--quick]
 */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "event.h"
#include "evparse.h"
#include "jsonrpc.h"
#include "../tests/testrand.h"
#include "xalloc.h"

#define BENCH_EVENTS 1000
#define BENCH_BODIES 16
#define BENCH_RUNS 5
#define BENCH_MIN_SECONDS 1.0
#define BENCH_QUICK_SECONDS 0.1
#define BENCH_SEED 8
#define BENCH_NAMES 10000
#define BENCH_SPREAD_S 50.0
#define BENCH_COUNTER_MAX 10
#define BENCH_UNIQUE_POOL 1000000
#define BENCH_SOURCES 8
#define BENCH_LOGNORMAL_MU 3.0
#define BENCH_GAUGE_MEAN 50.0
#define BENCH_GAUGE_STDDEV 10.0
#define BENCH_TEXT_INITIAL 65536
#define BENCH_MESSAGE_MAX 160
#define NS_PER_S 1e9
#define PERCENT 100

struct bench_type {
    const char *name;
    char tag;
    int share;           /* percent of events and of names */
};

static const struct bench_type bench_types[] = {
    { .name = "counter", .tag = 'c', .share = 40 },
    { .name = "percentile", .tag = 'p', .share = 30 },
    { .name = "unique", .tag = 'u', .share = 15 },
    { .name = "gauge", .tag = 'g', .share = 10 },
    { .name = "recent", .tag = 'r', .share = 5 },
};
#define BENCH_TYPES (sizeof(bench_types) / sizeof(bench_types[0]))

struct text {
    char *p;
    size_t len, cap;
};

static void
text_add(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
text_add(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            fprintf(stderr, "bench_evparse: vsnprintf failed\n");
            exit(1);
        }
        if ((size_t)n < t->cap - t->len)
            break;
        t->cap = t->cap * 2 + (size_t)n;
        t->p = xrealloc(t->p, t->cap);
    }
    t->len += (size_t)n;
}

static double
wall_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / NS_PER_S;
}

static double
cpu_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / NS_PER_S;
}

/* One body of BENCH_EVENTS events made at WALL, as loadgen makes them. */
static void
make_body(struct text *t, struct testrand *r, double wall, unsigned id)
{
    text_add(t, "{\"jsonrpc\":\"2.0\",\"id\":%u,\"method\":\"events.record\","
             "\"params\":{\"events\":[", id);
    for (int i = 0; i < BENCH_EVENTS; i++) {
        int pick = (int)testrand_below(r, PERCENT), k = 0;
        const struct bench_type *type;
        int names;

        while (k < (int)BENCH_TYPES - 1 && pick >= bench_types[k].share)
            pick -= bench_types[k++].share;
        type = &bench_types[k];
        names = BENCH_NAMES / PERCENT * type->share;
        text_add(t, "%s{\"name\":\"bench.%c.%d\",\"type\":\"%s\",",
                 i > 0 ? "," : "", type->tag,
                 (int)testrand_below(r, (uint64_t)names), type->name);
        switch (type->tag) {
        case 'c':
            text_add(t, "\"value\":%d",
                     1 + (int)testrand_below(r, BENCH_COUNTER_MAX));
            break;
        case 'p':
            text_add(t, "\"value\":%.3f",
                     exp(BENCH_LOGNORMAL_MU + testrand_normal(r)));
            break;
        case 'u':
            text_add(t, "\"value\":\"u%u\"",
                     (unsigned)testrand_below(r, BENCH_UNIQUE_POOL));
            break;
        default:
            text_add(t, "\"value\":%.2f,\"source\":\"h%u\"",
                     BENCH_GAUGE_MEAN
                         + BENCH_GAUGE_STDDEV * testrand_normal(r),
                     (unsigned)testrand_below(r, BENCH_SOURCES));
            break;
        }
        text_add(t, ",\"time\":%.3f}",
                 wall - testrand_unit(r) * BENCH_SPREAD_S);
    }
    text_add(t, "]}}");
}

struct bench_body {
    char *text;          /* the body */
    size_t len;
    char *wrapped;       /* "[" body "]" */
};

static volatile double bench_sink;

/* The json-c path: the tree, event_from_json per element, the free. */
static size_t
decode_tree(const struct bench_body *b, int64_t now_us)
{
    struct jsonrpc_batch *batch = jsonrpc_parse(b->wrapped, b->len + 2, NULL);
    json_object *events = NULL;
    size_t n;
    double sum = 0;

    json_object_object_get_ex(jsonrpc_call_params(jsonrpc_batch_call(batch,
                                                                     0)),
                              "events", &events);
    n = json_object_array_length(events);
    for (size_t i = 0; i < n; i++) {
        char msg[BENCH_MESSAGE_MAX];
        struct event ev;

        if (event_from_json(&ev, json_object_array_get_idx(events, i), now_us,
                            msg, sizeof(msg)) != EVENT_OK) {
            fprintf(stderr, "bench_evparse: event %zu rejected: %s\n", i, msg);
            exit(1);
        }
        sum += ev.value + (double)ev.time_us;
    }
    jsonrpc_batch_destroy(batch);
    bench_sink = sum;
    return n;
}

/* The evparse path, through jsonrpc_parse as the frontend runs it. */
static size_t
decode_fast(const struct bench_body *b, int64_t now_us)
{
    struct jsonrpc_batch *batch = jsonrpc_parse(b->text, b->len, NULL);
    struct evparse_record *rec = jsonrpc_call_events(jsonrpc_batch_call(batch,
                                                                        0));
    size_t n;
    double sum = 0;

    if (rec == NULL || evparse_record_stamp(rec, now_us) != 0) {
        fprintf(stderr, "bench_evparse: the fast path fell back\n");
        exit(1);
    }
    n = rec->count;
    for (size_t i = 0; i < n; i++)
        sum += rec->events[i].value + (double)rec->events[i].time_us;
    jsonrpc_batch_destroy(batch);
    bench_sink = sum;
    return n;
}

/* The decoder alone. */
static size_t
decode_only(const struct bench_body *b, int64_t now_us)
{
    struct evparse_record rec;
    size_t n;

    (void)now_us;
    if (evparse_record_parse(&rec, b->text, b->len, NULL, 0) != 0) {
        fprintf(stderr, "bench_evparse: the decoder fell back\n");
        exit(1);
    }
    n = rec.count;
    bench_sink = rec.events[n - 1].value;
    evparse_record_destroy(&rec);
    return n;
}

/* Best events/s per core of DECODE over BODIES. */
static double
measure(size_t (*decode)(const struct bench_body *, int64_t),
        const struct bench_body *bodies, int64_t now_us, double seconds)
{
    double best = 0;

    for (int run = 0; run < BENCH_RUNS; run++) {
        double start = cpu_seconds(), elapsed;
        size_t events = 0;

        do {
            for (int i = 0; i < BENCH_BODIES; i++)
                events += decode(&bodies[i], now_us);
            elapsed = cpu_seconds() - start;
        } while (elapsed < seconds);
        if ((double)events / elapsed > best)
            best = (double)events / elapsed;
    }
    return best;
}

int
main(int argc, char **argv)
{
    double seconds = argc > 1 && strcmp(argv[1], "--quick") == 0
                         ? BENCH_QUICK_SECONDS
                         : BENCH_MIN_SECONDS;
    struct bench_body bodies[BENCH_BODIES];
    double wall = wall_seconds(), tree, fast, decoder;
    int64_t now_us = (int64_t)(wall * EVENT_US_PER_SECOND);
    struct testrand r;
    size_t bytes = 0;

    testrand_seed(&r, BENCH_SEED);
    for (int i = 0; i < BENCH_BODIES; i++) {
        struct text t = { .p = xmalloc(BENCH_TEXT_INITIAL),
                          .cap = BENCH_TEXT_INITIAL };

        make_body(&t, &r, wall, (unsigned)i);
        bodies[i].text = t.p;
        bodies[i].len = t.len;
        bodies[i].wrapped = xmalloc(t.len + 2);
        bodies[i].wrapped[0] = '[';
        memcpy(bodies[i].wrapped + 1, t.p, t.len);
        bodies[i].wrapped[t.len + 1] = ']';
        bytes += t.len;
        if (decode_tree(&bodies[i], now_us) != decode_fast(&bodies[i], now_us))
            return 1;
    }
    tree = measure(decode_tree, bodies, now_us, seconds);
    fast = measure(decode_fast, bodies, now_us, seconds);
    decoder = measure(decode_only, bodies, now_us, seconds);
    printf("bench_evparse: %d bodies of %d events, %.0f bytes each on "
           "average; events/s per core, best of %d runs\n",
           BENCH_BODIES, BENCH_EVENTS, (double)bytes / BENCH_BODIES,
           BENCH_RUNS);
    printf("%-44s %12.0f\n", "json-c tree + event_from_json (jsonrpc_parse)",
           tree);
    printf("%-44s %12.0f  %.1fx\n", "evparse (jsonrpc_parse + stamp)", fast,
           fast / tree);
    printf("%-44s %12.0f  %.1fx\n", "evparse_record_parse alone", decoder,
           decoder / tree);
    for (int i = 0; i < BENCH_BODIES; i++) {
        free(bodies[i].text);
        free(bodies[i].wrapped);
    }
    return 0;
}
