/*
 * bench_core: throughput and size figures for the core library (the state
 * types of state.h and the metric of metric.h). A program that prints
 * figures, never a test: nothing here asserts on a timing.
 *
 *   per type: generate events (fixed seeds, testrand.h), untimed
 *        |
 *        +--> fold      ops->fold into ONE state, passes over the array
 *        +--> metric    metric_fold into a struct metric (all + 3 rings)
 *        +--> merge     merge(clone of bucket A, bucket B), batches
 *        +--> encode    ops->encode of bucket A, batches
 *        +--> decode    ops->decode of bucket A's bytes, batches
 *        +--> sizes     bucket A's encoding; a metric holding 1 h of traffic
 *        |
 *        v
 *   one table, then the targets marked "met" / "NOT met"
 *
 * Every timed figure is the best of BENCH_RUNS runs; a run repeats its work
 * until at least BENCH_MIN_SECONDS of timed work have passed. Setup (state
 * creation, clones, destroys) is kept out of the timed regions. Results
 * feed a volatile sink so the compiler cannot drop the work.
 *
 * Usage: bench_core [--quick]   (--quick scales every size down 10x)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "event.h"
#include "metric.h"
#include "state.h"
#include "../tests/testrand.h"
#include "window.h"
#include "xalloc.h"

/* ---- sizes and parameters ------------------------------------------- */

#define BENCH_QUICK_DIVISOR 10
#define BENCH_RUNS 3
#define BENCH_MIN_SECONDS 0.3
#define BENCH_FOLD_EVENTS 1000000      /* events per fold pass */
#define BENCH_FOLD_SPAN_S 60           /* fold events cover the last minute */
#define BENCH_BUCKET_EVENTS 60000      /* 10 s of traffic at 6k events/s */
#define BENCH_BUCKET_SPAN_S 10
#define BENCH_BATCH 1000               /* merges/encodes/decodes per batch */
#define BENCH_METRIC_RATE 100          /* events/s for the 1-hour metric */
#define BENCH_METRIC_SPAN_S 3600
#define BENCH_UNIQUE_POOL 1000000      /* distinct "user-<n>" ids */
#define BENCH_UNIQUE_ID_STRIDE 16      /* bytes per pre-formatted id */
#define BENCH_SOURCES 8                /* gauge and recent sources */
#define BENCH_RECENT_KEEP 100          /* K */
#define BENCH_COUNTER_VALUE_MAX 10     /* counter values are 1..10 */
#define BENCH_GAUGE_MEAN 50.0
#define BENCH_GAUGE_STDDEV 10.0
#define BENCH_LOGNORMAL_MU 3.0
#define BENCH_LOGNORMAL_SIGMA 1.0
#define BENCH_RECENT_VALUE_MAX 100.0
#define BENCH_METRIC_GENERATION 1
#define BENCH_ERRLEN 256
#define BENCH_MEGA 1e6
#define BENCH_MICRO 1e6

/* A fixed "now": 2026-11-22 (UTC), 7 s into a 10-second bucket. */
#define BENCH_NOW_S 1795392007LL
#define BENCH_NOW_US (BENCH_NOW_S * EVENT_US_PER_SECOND)

/* Seeds, one per generated data set. */
#define BENCH_SEED_FOLD 1001
#define BENCH_SEED_BUCKET_A 2002
#define BENCH_SEED_BUCKET_B 3003
#define BENCH_SEED_METRIC 4004

/* The targets. */
#define TARGET_COUNTER_FOLD 20e6          /* events/s/core */
#define TARGET_PERCENTILE_FOLD 10e6       /* events/s/core */
#define TARGET_PERCENTILE_BUCKET_BYTES 1024   /* encoded, strictly below */
#define TARGET_COUNTER_PAYLOAD_BYTES 16   /* encoded minus the prefix */
#define STATE_PREFIX_BYTES 2              /* type byte, version byte */

#define BENCH_METRIC_NAME "bench.metric"

static const char *const bench_sources[BENCH_SOURCES] = {
    "web-01", "web-02", "web-03", "web-04",
    "web-05", "web-06", "web-07", "web-08",
};

/* Consumed results; volatile so no measured work can be optimized away. */
static volatile uint64_t bench_sink;

/* ---- sizes after --quick -------------------------------------------- */

struct bench_sizes {
    size_t fold_events;
    size_t bucket_events;
    size_t batch;
    size_t metric_events;
    size_t unique_pool;
    double min_seconds;
};

/* ---- the "user-<n>" pool -------------------------------------------- */

struct id_pool {
    char *ids;          /* owned; COUNT ids, BENCH_UNIQUE_ID_STRIDE apart */
    uint8_t *lens;      /* owned */
    size_t count;
};

static void
id_pool_create(struct id_pool *pool, size_t count)
{
    pool->ids = xmalloc(count * BENCH_UNIQUE_ID_STRIDE);
    pool->lens = xmalloc(count);
    pool->count = count;
    for (size_t i = 0; i < count; i++) {
        int n = snprintf(pool->ids + i * BENCH_UNIQUE_ID_STRIDE,
                         BENCH_UNIQUE_ID_STRIDE, "user-%zu", i);

        pool->lens[i] = (uint8_t)n;
    }
}

static void
id_pool_destroy(struct id_pool *pool)
{
    free(pool->ids);
    free(pool->lens);
}

/* ---- event generation (untimed) ------------------------------------- */

/* Fills EVS[0..N) with events of TYPE whose times rise evenly over
 * [T0_US, T0_US + SPAN_US). Strings are borrowed from static tables and
 * from POOL, which must outlive the events. */
static void
bench_generate(enum event_type type, uint64_t seed, struct event *evs,
               size_t n, int64_t t0_us, int64_t span_us,
               const struct id_pool *pool)
{
    struct testrand r;

    testrand_seed(&r, seed);
    for (size_t i = 0; i < n; i++) {
        struct event *ev = &evs[i];
        const char *src;

        memset(ev, 0, sizeof(*ev));
        ev->type = type;
        ev->name = BENCH_METRIC_NAME;
        ev->name_len = sizeof(BENCH_METRIC_NAME) - 1;
        ev->time_us = t0_us + (int64_t)((double)span_us * (double)i / (double)n);
        ev->source = "";
        switch (type) {
        case EVENT_COUNTER:
            ev->value = (double)(1 + testrand_below(&r, BENCH_COUNTER_VALUE_MAX));
            break;
        case EVENT_GAUGE:
            src = bench_sources[testrand_below(&r, BENCH_SOURCES)];
            ev->source = src;
            ev->source_len = strlen(src);
            ev->value = BENCH_GAUGE_MEAN + BENCH_GAUGE_STDDEV * testrand_normal(&r);
            break;
        case EVENT_PERCENTILE:
            ev->value = exp(BENCH_LOGNORMAL_MU +
                            BENCH_LOGNORMAL_SIGMA * testrand_normal(&r));
            break;
        case EVENT_UNIQUE: {
            size_t id = (size_t)testrand_below(&r, pool->count);

            ev->str = pool->ids + id * BENCH_UNIQUE_ID_STRIDE;
            ev->str_len = pool->lens[id];
            break;
        }
        case EVENT_RECENT:
            src = bench_sources[testrand_below(&r, BENCH_SOURCES)];
            ev->source = src;
            ev->source_len = strlen(src);
            ev->value = BENCH_RECENT_VALUE_MAX * testrand_unit(&r);
            break;
        }
    }
}

/* ---- one type's data ------------------------------------------------ */

struct bench_case {
    const struct state_ops *ops;
    struct state_config config;
    const struct bench_sizes *sizes;
    struct event *fold_events;      /* owned array */
    size_t fold_count;
    void *bucket_a;                 /* owned states */
    void *bucket_b;
    uint8_t *encoded;               /* owned; bucket A's encoding */
    size_t encoded_len;
    void **scratch;                 /* owned; BATCH state pointers */
};

/* What one row of the table holds. */
struct bench_row {
    enum event_type type;
    double fold_rate;        /* events/s */
    double metric_rate;      /* events/s */
    double merge_us;         /* microseconds per merge */
    double encode_mbs;       /* MB/s of encoded bytes */
    double decode_mbs;
    size_t bucket_bytes;     /* encoded bucket state, prefix included */
    size_t metric_bytes;     /* encoded 1-hour metric */
    uint64_t metric_expired; /* ring placements refused in that metric */
};

static double
bench_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *
bench_fold_new(const struct bench_case *c, const struct event *evs, size_t n)
{
    void *st = c->ops->create(&c->config);

    for (size_t i = 0; i < n; i++)
        c->ops->fold(st, &evs[i]);
    return st;
}

/* ---- timed passes: each returns the seconds of timed work ----------- */

/* Folds every pre-generated event into one fresh state. */
static double
pass_fold(struct bench_case *c)
{
    void *st = c->ops->create(&c->config);
    const struct event *evs = c->fold_events;
    size_t n = c->fold_count;
    double t0, t1;

    t0 = bench_seconds();
    for (size_t i = 0; i < n; i++)
        c->ops->fold(st, &evs[i]);
    t1 = bench_seconds();
    bench_sink += (uint64_t)c->ops->empty(st);
    c->ops->destroy(st);
    return t1 - t0;
}

/* Folds every pre-generated event into one fresh metric, at a fixed now. */
static double
pass_metric_fold(struct bench_case *c)
{
    struct metric *m = metric_create(c->ops->type, BENCH_METRIC_GENERATION,
                                     &c->config);
    const struct event *evs = c->fold_events;
    size_t n = c->fold_count;
    double t0, t1;

    t0 = bench_seconds();
    for (size_t i = 0; i < n; i++)
        metric_fold(m, &evs[i], BENCH_NOW_US);
    t1 = bench_seconds();
    bench_sink += metric_expired(m);
    metric_destroy(m);
    return t1 - t0;
}

/* Merges bucket B into BATCH fresh clones of bucket A. */
static double
pass_merge(struct bench_case *c)
{
    size_t batch = c->sizes->batch;
    double t0, t1;
    int failed = 0;

    for (size_t i = 0; i < batch; i++)
        c->scratch[i] = c->ops->clone(c->bucket_a);
    t0 = bench_seconds();
    for (size_t i = 0; i < batch; i++)
        failed |= c->ops->merge(c->scratch[i], c->bucket_b);
    t1 = bench_seconds();
    for (size_t i = 0; i < batch; i++)
        c->ops->destroy(c->scratch[i]);
    if (failed != 0) {
        fprintf(stderr, "bench_core: %s merge failed\n",
                event_type_name(c->ops->type));
        exit(1);
    }
    return t1 - t0;
}

/* Encodes bucket A BATCH times into a reused writer. */
static double
pass_encode(struct bench_case *c)
{
    struct buf_writer w;
    size_t batch = c->sizes->batch;
    double t0, t1;

    buf_writer_create(&w, c->encoded_len);
    t0 = bench_seconds();
    for (size_t i = 0; i < batch; i++) {
        buf_writer_reset(&w);
        c->ops->encode(c->bucket_a, &w);
        bench_sink += w.len;
    }
    t1 = bench_seconds();
    buf_writer_destroy(&w);
    return t1 - t0;
}

/* Decodes bucket A's bytes BATCH times; the states are freed untimed. */
static double
pass_decode(struct bench_case *c)
{
    size_t batch = c->sizes->batch;
    char err[BENCH_ERRLEN];
    double t0, t1;
    int failed = 0;

    err[0] = '\0';
    t0 = bench_seconds();
    for (size_t i = 0; i < batch; i++) {
        struct buf_reader r;

        buf_reader_init(&r, c->encoded, c->encoded_len);
        c->scratch[i] = c->ops->decode(&r, err, sizeof(err));
        failed |= c->scratch[i] == NULL;
    }
    t1 = bench_seconds();
    for (size_t i = 0; i < batch; i++)
        if (c->scratch[i] != NULL) {
            bench_sink += (uint64_t)c->ops->empty(c->scratch[i]);
            c->ops->destroy(c->scratch[i]);
        }
    if (failed) {
        fprintf(stderr, "bench_core: %s decode failed: %s\n",
                event_type_name(c->ops->type), err);
        exit(1);
    }
    return t1 - t0;
}

/* Best of BENCH_RUNS runs of PASS, as units per second; a run repeats PASS
 * (UNITS units each) until its timed work reaches the minimum. */
static double
bench_best_rate(double (*pass)(struct bench_case *), struct bench_case *c,
                double units)
{
    double best = 0.0;

    for (int run = 0; run < BENCH_RUNS; run++) {
        double elapsed = 0.0, done = 0.0;

        while (elapsed < c->sizes->min_seconds) {
            elapsed += pass(c);
            done += units;
        }
        if (done / elapsed > best)
            best = done / elapsed;
    }
    return best;
}

/* ---- sizes (untimed) ------------------------------------------------ */

/* Encoded bytes of a metric holding BENCH_METRIC_SPAN_S seconds of traffic
 * at BENCH_METRIC_RATE events/s, ending at the fixed now. */
static size_t
bench_metric_bytes(const struct bench_case *c, const struct id_pool *pool,
                   uint64_t *expired)
{
    size_t n = c->sizes->metric_events;
    struct event *evs = xmalloc(n * sizeof(*evs));
    int64_t span_us = BENCH_METRIC_SPAN_S * EVENT_US_PER_SECOND;
    struct metric *m = metric_create(c->ops->type, BENCH_METRIC_GENERATION,
                                     &c->config);
    struct buf_writer w;
    size_t len;

    bench_generate(c->ops->type, BENCH_SEED_METRIC, evs, n,
                   BENCH_NOW_US - span_us, span_us, pool);
    for (size_t i = 0; i < n; i++)
        metric_fold(m, &evs[i], BENCH_NOW_US);
    buf_writer_create(&w, 0);
    metric_encode(m, &w);
    len = w.len;
    *expired = metric_expired(m);
    buf_writer_destroy(&w);
    metric_destroy(m);
    free(evs);
    return len;
}

/* ---- one row -------------------------------------------------------- */

static void
bench_type(const struct state_ops *ops, const struct bench_sizes *sizes,
           const struct id_pool *pool, struct bench_row *row)
{
    struct bench_case c;
    struct event *bucket_evs;
    struct buf_writer w;
    int64_t fold_span_us = BENCH_FOLD_SPAN_S * EVENT_US_PER_SECOND;
    int64_t bucket_span_us = BENCH_BUCKET_SPAN_S * EVENT_US_PER_SECOND;
    int64_t bucket_start_us = (window_align(BENCH_NOW_US, WINDOW_GRANULE_S) -
                               WINDOW_GRANULE_S) * EVENT_US_PER_SECOND;

    memset(&c, 0, sizeof(c));
    memset(row, 0, sizeof(*row));
    row->type = ops->type;
    c.ops = ops;
    c.config.recent_keep = BENCH_RECENT_KEEP;
    c.sizes = sizes;
    c.scratch = xcalloc(sizes->batch, sizeof(*c.scratch));

    /* Events for the fold passes: the last minute before now. */
    c.fold_count = sizes->fold_events;
    c.fold_events = xmalloc(c.fold_count * sizeof(*c.fold_events));
    bench_generate(ops->type, BENCH_SEED_FOLD, c.fold_events, c.fold_count,
                   BENCH_NOW_US - fold_span_us, fold_span_us, pool);

    /* Two bucket states: 10 s of traffic each, different seeds. */
    bucket_evs = xmalloc(sizes->bucket_events * sizeof(*bucket_evs));
    bench_generate(ops->type, BENCH_SEED_BUCKET_A, bucket_evs,
                   sizes->bucket_events, bucket_start_us, bucket_span_us, pool);
    c.bucket_a = bench_fold_new(&c, bucket_evs, sizes->bucket_events);
    bench_generate(ops->type, BENCH_SEED_BUCKET_B, bucket_evs,
                   sizes->bucket_events, bucket_start_us, bucket_span_us, pool);
    c.bucket_b = bench_fold_new(&c, bucket_evs, sizes->bucket_events);
    free(bucket_evs);

    buf_writer_create(&w, 0);
    ops->encode(c.bucket_a, &w);
    c.encoded = buf_writer_release(&w, &c.encoded_len);
    row->bucket_bytes = c.encoded_len;

    row->fold_rate = bench_best_rate(pass_fold, &c, (double)c.fold_count);
    row->metric_rate = bench_best_rate(pass_metric_fold, &c,
                                       (double)c.fold_count);
    row->merge_us = BENCH_MICRO /
                    bench_best_rate(pass_merge, &c, (double)sizes->batch);
    row->encode_mbs = bench_best_rate(pass_encode, &c,
                                      (double)(sizes->batch * c.encoded_len)) /
                      BENCH_MEGA;
    row->decode_mbs = bench_best_rate(pass_decode, &c,
                                      (double)(sizes->batch * c.encoded_len)) /
                      BENCH_MEGA;
    row->metric_bytes = bench_metric_bytes(&c, pool, &row->metric_expired);

    free(c.encoded);
    ops->destroy(c.bucket_a);
    ops->destroy(c.bucket_b);
    free(c.fold_events);
    free(c.scratch);
}

/* ---- report --------------------------------------------------------- */

static void
bench_print_machine(int quick, double min_seconds)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[BENCH_ERRLEN];
    const char *model = "unknown";
    char *colon;

    if (f != NULL) {
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strncmp(line, "model name", strlen("model name")) != 0)
                continue;
            colon = strchr(line, ':');
            if (colon != NULL) {
                model = colon + 1 + (colon[1] == ' ');
                line[strcspn(line, "\n")] = '\0';
            }
            break;
        }
        fclose(f);
    }
    printf("tally core benchmark%s\n", quick ? " (--quick: sizes / 10)" : "");
    printf("cpu: %s, %ld cores online; compiler: gcc %s\n", model,
           sysconf(_SC_NPROCESSORS_ONLN), __VERSION__);
#ifndef __OPTIMIZE__
    printf("WARNING: built without optimization; figures are not meaningful\n");
#endif
#ifdef __SANITIZE_ADDRESS__
    printf("WARNING: built with AddressSanitizer; figures are not meaningful\n");
#endif
    printf("note: the machine is shared and noisy; figures are the best of %d "
           "runs of >= %.2f s each and vary run to run\n",
           BENCH_RUNS, min_seconds);
}

static void
bench_print_table(const struct bench_row *rows, size_t n,
                  const struct bench_sizes *sizes)
{
    printf("\nfold/metric: %zu events per pass (single core); bucket: %zu "
           "events in %d s; metric: %zu events over %d s\n",
           sizes->fold_events, sizes->bucket_events, BENCH_BUCKET_SPAN_S,
           sizes->metric_events, BENCH_METRIC_SPAN_S);
    printf("%-10s %10s %10s %10s %9s %9s %9s %10s\n", "type", "fold",
           "metric", "merge", "encode", "decode", "bucket", "metric1h");
    printf("%-10s %10s %10s %10s %9s %9s %9s %10s\n", "", "Mev/s", "Mev/s",
           "us", "MB/s", "MB/s", "bytes", "bytes");
    for (size_t i = 0; i < n; i++)
        printf("%-10s %10.2f %10.2f %10.3f %9.1f %9.1f %9zu %10zu\n",
               event_type_name(rows[i].type), rows[i].fold_rate / BENCH_MEGA,
               rows[i].metric_rate / BENCH_MEGA, rows[i].merge_us,
               rows[i].encode_mbs, rows[i].decode_mbs, rows[i].bucket_bytes,
               rows[i].metric_bytes);
    printf("(metric1h: ring placements refused as older than retention: "
           "%llu per windowed type)\n",
           (unsigned long long)rows[0].metric_expired);
}

static const char *
bench_verdict(int met)
{
    return met ? "met" : "NOT met";
}

static void
bench_print_targets(const struct bench_row *counter,
                    const struct bench_row *percentile, int quick)
{
    size_t payload = counter->bucket_bytes - STATE_PREFIX_BYTES;

    printf("\ntargets%s:\n", quick ? " (--quick sizes; not the real check)"
                                   : "");
    printf("  counter fold >= %.0fM events/s/core: %.2fM  %s\n",
           TARGET_COUNTER_FOLD / BENCH_MEGA, counter->fold_rate / BENCH_MEGA,
           bench_verdict(counter->fold_rate >= TARGET_COUNTER_FOLD));
    printf("  percentile fold >= %.0fM events/s/core: %.2fM  %s\n",
           TARGET_PERCENTILE_FOLD / BENCH_MEGA,
           percentile->fold_rate / BENCH_MEGA,
           bench_verdict(percentile->fold_rate >= TARGET_PERCENTILE_FOLD));
    printf("  percentile bucket (lognormal sigma=%.0f) < %d bytes: %zu bytes  %s\n",
           BENCH_LOGNORMAL_SIGMA, TARGET_PERCENTILE_BUCKET_BYTES,
           percentile->bucket_bytes,
           bench_verdict(percentile->bucket_bytes <
                         TARGET_PERCENTILE_BUCKET_BYTES));
    printf("  counter bucket payload <= %d bytes: %zu bytes (+%d prefix)  %s\n",
           TARGET_COUNTER_PAYLOAD_BYTES, payload, STATE_PREFIX_BYTES,
           bench_verdict(payload <= TARGET_COUNTER_PAYLOAD_BYTES));
}

int
main(int argc, char **argv)
{
    static const struct state_ops *const types[] = {
        &counter_ops, &gauge_ops, &percentile_ops, &unique_ops, &recent_ops,
    };
    enum { TYPE_COUNT = sizeof(types) / sizeof(types[0]) };
    struct bench_row rows[TYPE_COUNT];
    struct bench_sizes sizes;
    struct id_pool pool;
    size_t div = 1;
    int quick = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            return 2;
        }
    }
    if (quick)
        div = BENCH_QUICK_DIVISOR;
    sizes.fold_events = BENCH_FOLD_EVENTS / div;
    sizes.bucket_events = BENCH_BUCKET_EVENTS / div;
    sizes.batch = BENCH_BATCH / div;
    sizes.metric_events = (size_t)BENCH_METRIC_RATE * BENCH_METRIC_SPAN_S / div;
    sizes.unique_pool = BENCH_UNIQUE_POOL / div;
    sizes.min_seconds = BENCH_MIN_SECONDS / (double)div;

    bench_print_machine(quick, sizes.min_seconds);
    id_pool_create(&pool, sizes.unique_pool);
    for (size_t i = 0; i < TYPE_COUNT; i++)
        bench_type(types[i], &sizes, &pool, &rows[i]);
    id_pool_destroy(&pool);

    bench_print_table(rows, TYPE_COUNT, &sizes);
    bench_print_targets(&rows[0], &rows[2], quick);
    printf("(sink %llu)\n", (unsigned long long)bench_sink);
    return 0;
}
