/*
 * mkcorpus: writes the binary seed corpora of tests/fuzz (codec, state,
 * wal) with tally's own encoders, so every seed is a valid encoding the
 * fuzzer can mutate from. The JSON seeds (jsonrpc, event) are written by
 * hand. Run it again only when an encoding changes:
 *
 *   gcc -std=gnu99 -Isrc tests/fuzz/mkcorpus.c src/{xalloc,errmsg,buf,sum,\
 *     hash,crc32c,number,event,window,state,counter,gauge,ddsketch,\
 *     percentile,hll,unique,recent,metric,codec,cacheval,wal,dedup}.c \
 *     $(pkg-config --cflags --libs json-c) -lm -o /tmp/mkcorpus
 *   /tmp/mkcorpus tests/fuzz/corpus
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "cacheval.h"
#include "codec.h"
#include "dedup.h"
#include "metric.h"
#include "state.h"
#include "wal.h"
#include "window.h"

/* Same clock as fuzz.h. */
#define SEED_NOW_US (1700000000LL * 1000000LL)
#define SEED_US 1000000LL
#define SEED_PATH_MAX 1024
#define SEED_STATE 0      /* fuzz_state selector bytes */
#define SEED_METRIC 1
#define SEED_CACHEVAL 2
#define SEED_DEDUP 3

static const char *seed_root;

static void
die(const char *what)
{
    fprintf(stderr, "mkcorpus: %s\n", what);
    exit(1);
}

/* Writes PREFIX (if PREFIX_LEN > 0) then LEN bytes at P to ROOT/DIR/NAME. */
static void
seed_write(const char *dir, const char *name, const void *prefix,
           size_t prefix_len, const void *p, size_t len)
{
    char path[SEED_PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", seed_root, dir);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/%s", seed_root, dir, name);
    f = fopen(path, "wb");
    if (f == NULL)
        die(path);
    if ((prefix_len > 0 && fwrite(prefix, 1, prefix_len, f) != prefix_len)
        || (len > 0 && fwrite(p, 1, len, f) != len) || fclose(f) != 0)
        die(path);
}

static struct event
seed_event(enum event_type type, int i)
{
    static char strs[64][16];
    static const char *const sources[] = { "", "web-1", "web-2", "db" };
    struct event ev = {
        .type = type,
        .name = "api.latency",
        .name_len = 11,
        .value = (double)(i * 37 % 101) - 20.5,
        .time_us = SEED_NOW_US - (int64_t)(i % 8) * 15 * SEED_US,
        .source = sources[i % 4],
    };

    ev.source_len = strlen(ev.source);
    if (type == EVENT_UNIQUE) {
        snprintf(strs[i % 64], sizeof(strs[0]), "user-%d", i);
        ev.value = 0;
        ev.str = strs[i % 64];
        ev.str_len = strlen(ev.str);
    }
    return ev;
}

/* ---- state ------------------------------------------------------------ */

static void
seed_states(void)
{
    static const uint8_t sel = SEED_STATE;
    static const int counts[] = { 0, 1, 5, 40 };

    for (int t = EVENT_TYPE_MIN; t <= EVENT_TYPE_MAX; t++) {
        const struct state_ops *ops = state_ops_for((enum event_type)t);

        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
            struct state_config cfg = { .recent_keep = 8 };
            void *st = ops->create(&cfg);
            struct buf_writer w;
            char name[64];

            for (int i = 0; i < counts[c]; i++) {
                struct event ev = seed_event((enum event_type)t, i);

                ops->fold(st, &ev);
            }
            buf_writer_create(&w, 64);
            ops->encode(st, &w);
            snprintf(name, sizeof(name), "state-%s-%d",
                     event_type_name((enum event_type)t), counts[c]);
            seed_write("state", name, &sel, 1, w.data, w.len);
            buf_writer_destroy(&w);
            ops->destroy(st);
        }
    }
}

/* A unique state of more than HLL_SPARSE_MAX registers: the dense form. */
static void
seed_unique_dense(void)
{
    static const uint8_t sel = SEED_STATE;
    void *st = unique_ops.create(NULL);
    struct buf_writer w;

    for (int i = 0; i < 20000; i++) {
        char s[32];
        struct event ev = seed_event(EVENT_UNIQUE, 0);

        snprintf(s, sizeof(s), "dense-%d", i);
        ev.str = s;
        ev.str_len = strlen(s);
        unique_ops.fold(st, &ev);
    }
    buf_writer_create(&w, 16384);
    unique_ops.encode(st, &w);
    seed_write("state", "state-unique-dense", &sel, 1, w.data, w.len);
    buf_writer_destroy(&w);
    unique_ops.destroy(st);
}

static struct metric *
seed_metric(enum event_type type, int events)
{
    struct metric *m = metric_create(type, 3, NULL);

    for (int i = 0; i < events; i++) {
        struct event ev = seed_event(type, i);

        metric_fold(m, &ev, SEED_NOW_US);
    }
    return m;
}

static void
seed_metrics(void)
{
    static const uint8_t sel = SEED_METRIC;

    for (int t = EVENT_TYPE_MIN; t <= EVENT_TYPE_MAX; t++) {
        for (int events = 0; events <= 12; events += 12) {
            struct metric *m = seed_metric((enum event_type)t, events);
            struct buf_writer w;
            char name[64];

            buf_writer_create(&w, 256);
            metric_encode(m, &w);
            snprintf(name, sizeof(name), "metric-%s-%d",
                     event_type_name((enum event_type)t), events);
            seed_write("state", name, &sel, 1, w.data, w.len);
            buf_writer_destroy(&w);
            metric_destroy(m);
        }
    }
}

/* fuzz_state's cacheval input: selector, u16 LE open length, open value,
 * closed value. */
static void
seed_cacheval_pair(const char *name, const struct buf_writer *open,
                   const struct buf_writer *closed)
{
    uint8_t prefix[3] = { SEED_CACHEVAL, (uint8_t)open->len,
                          (uint8_t)(open->len >> 8) };
    struct buf_writer all;

    buf_writer_create(&all, open->len + 64);
    buf_put_bytes(&all, open->data, open->len);
    if (closed != NULL)
        buf_put_bytes(&all, closed->data, closed->len);
    seed_write("state", name, prefix, sizeof(prefix), all.data, all.len);
    buf_writer_destroy(&all);
}

static void
seed_cachevals(void)
{
    for (int t = EVENT_TYPE_MIN; t <= EVENT_TYPE_MAX; t++) {
        struct metric *m = seed_metric((enum event_type)t, 12);
        struct codec_cache_header h = { .generation = 3, .map_version = 1,
                                        .sequence = 9 };
        struct buf_writer open, closed;
        char name[64];
        int64_t start = window_align(SEED_NOW_US - 60 * SEED_US, 10);
        /* version 2: the open value also holds that closed bucket */
        struct cacheval_bucket held = { RING_10S, start };

        buf_writer_create(&open, 256);
        buf_writer_create(&closed, 64);
        cacheval_encode_open(m, &h, SEED_NOW_US, &held, 1, &open);
        h.sequence = 10;
        if (t == EVENT_RECENT
            || cacheval_encode_closed(m, &h, RING_10S, start, &closed) != 0) {
            snprintf(name, sizeof(name), "cacheval-%s-open",
                     event_type_name((enum event_type)t));
            seed_cacheval_pair(name, &open, NULL);
        } else {
            snprintf(name, sizeof(name), "cacheval-%s-open-closed",
                     event_type_name((enum event_type)t));
            seed_cacheval_pair(name, &open, &closed);
        }
        buf_writer_destroy(&open);
        buf_writer_destroy(&closed);
        metric_destroy(m);
    }
    {
        struct codec_cache_header h = { .generation = 4, .sequence = 1 };
        struct buf_writer w;

        buf_writer_create(&w, 64);
        cacheval_encode_tombstone(&h, &w);
        seed_cacheval_pair("cacheval-tombstone", &w, NULL);
        buf_writer_destroy(&w);
    }
}

static void
seed_dedup(void)
{
    static const uint8_t sel = SEED_DEDUP;

    for (int n = 0; n <= 20; n += 10) {
        struct dedup *d = dedup_create(600 * SEED_US);
        struct buf_writer w;
        char name[64];

        for (int i = 0; i < n; i++) {
            uint8_t key[DEDUP_KEY_SIZE];

            for (int b = 0; b < DEDUP_KEY_SIZE; b++)
                key[b] = (uint8_t)(i * 31 + b * 7);
            dedup_seen(d, key, SEED_NOW_US - i * SEED_US, SEED_NOW_US);
        }
        buf_writer_create(&w, 64);
        dedup_encode(d, &w);
        snprintf(name, sizeof(name), "dedup-%d", n);
        seed_write("state", name, &sel, 1, w.data, w.len);
        buf_writer_destroy(&w);
        dedup_destroy(d);
    }
}

/* ---- codec ------------------------------------------------------------ */

static void
seed_subbatch(struct codec_encoder *enc, uint8_t flags, const char *origin)
{
    struct codec_subbatch sb = {
        .flags = flags,
        .origin = origin,
        .origin_len = strlen(origin),
        .map_version = 2,
        .hop_count = (flags & CODEC_SB_FORWARDED) ? 1 : 0,
        .created_us = SEED_NOW_US,
    };

    memset(sb.dedup_key, 0x5a, sizeof(sb.dedup_key));
    memset(sb.batch_key, 0xa5, sizeof(sb.batch_key));
    if (codec_subbatch_begin(enc, &sb) != 0)
        die(enc->err);
}

static void
seed_codec_end(struct codec_encoder *enc, struct buf_writer *out,
               const char *name)
{
    if (codec_subbatch_end(enc) != 0 || codec_message_end(enc) != 0)
        die(enc->err);
    seed_write("codec", name, NULL, 0, out->data, out->len);
}

static void
seed_codec(void)
{
    struct codec_encoder enc;
    struct buf_writer out, st;
    struct metric *m;
    struct codec_dedup_key keys[2];

    /* every event type in one sub-batch */
    buf_writer_create(&out, 512);
    codec_message_begin(&enc, &out);
    seed_subbatch(&enc, 0, "frontend-1");
    for (int t = EVENT_TYPE_MIN; t <= EVENT_TYPE_MAX; t++) {
        struct event ev = seed_event((enum event_type)t, t);

        if (codec_put_event(&enc, (uint16_t)(t * 100), 1, &ev) != 0)
            die(enc.err);
    }
    seed_codec_end(&enc, &out, "events");
    buf_writer_destroy(&out);

    /* a partial, a tombstone, a metric state and dedup keys, forwarded
     * inside a batch-key envelope, after a second sub-batch */
    buf_writer_create(&out, 512);
    buf_writer_create(&st, 64);
    codec_message_begin(&enc, &out);
    seed_subbatch(&enc, CODEC_SB_HAS_BATCH_KEY, "frontend-2");
    {
        void *c = counter_ops.create(NULL);
        struct event ev = seed_event(EVENT_COUNTER, 1);

        counter_ops.fold(c, &ev);
        counter_ops.encode(c, &st);
        counter_ops.destroy(c);
        if (codec_put_partial(&enc, 17, EVENT_COUNTER, 1, "api.hits", 8,
                              1699999990, 1699999990 * SEED_US + 5,
                              1699999990 * SEED_US + 900000, 1, st.data,
                              st.len) != 0)
            die(enc.err);
    }
    if (codec_subbatch_end(&enc) != 0)
        die(enc.err);
    seed_subbatch(&enc, CODEC_SB_HAS_BATCH_KEY | CODEC_SB_ENVELOPE
                            | CODEC_SB_FORWARDED,
                  "aggregator-0");
    if (codec_put_tombstone(&enc, 4095, CODEC_TYPE_ANY, 2, "old.metric", 10,
                            SEED_NOW_US) != 0)
        die(enc.err);
    m = seed_metric(EVENT_GAUGE, 6);
    buf_writer_reset(&st);
    metric_encode(m, &st);
    metric_destroy(m);
    if (codec_put_metric_state(&enc, 9, EVENT_GAUGE, 3, "disk.free", 9,
                               st.data, st.len) != 0)
        die(enc.err);
    memset(keys, 0, sizeof(keys));
    keys[0].key[0] = 1;
    keys[0].created_us = SEED_NOW_US;
    keys[1].key[0] = 2;
    keys[1].created_us = -5;
    if (codec_put_dedup_keys(&enc, 9, keys, 2) != 0)
        die(enc.err);
    seed_codec_end(&enc, &out, "mixed");
    buf_writer_destroy(&st);
    buf_writer_destroy(&out);

    /* a cache value header alone */
    {
        struct codec_cache_header h = { .kind = CODEC_CACHE_CLOSED_BUCKET,
                                        .type = EVENT_PERCENTILE,
                                        .generation = 7, .map_version = 2,
                                        .sequence = 11 };

        buf_writer_create(&out, 32);
        codec_cache_header_encode(&h, &out);
        seed_write("codec", "cache-header", NULL, 0, out.data, out.len);
        buf_writer_destroy(&out);
    }
}

/* ---- wal -------------------------------------------------------------- */

static int
seed_replay(void *ctx, const uint8_t *data, size_t len,
            const struct wal_position *pos, char *err, size_t errlen)
{
    (void)ctx;
    (void)data;
    (void)len;
    (void)pos;
    (void)err;
    (void)errlen;
    return 0;
}

/* Reads segment NUMBER of DIR into W (appended). */
static void
seed_read_segment(const char *dir, unsigned number, struct buf_writer *w)
{
    char path[SEED_PATH_MAX];
    uint8_t chunk[4096];
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/wal-%016x.log", dir, number);
    f = fopen(path, "rb");
    if (f == NULL)
        die(path);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        buf_put_bytes(w, chunk, n);
    fclose(f);
    unlink(path);
}

static void
seed_wal(void)
{
    static const struct wal_options fast = { .no_fsync = 1 };
    char dir[] = "/tmp/tally-mkcorpus-XXXXXX";
    char err[WAL_ERR_MAX];
    struct buf_writer one, two;
    size_t split;
    struct wal *w;
    uint8_t prefix[3];

    if (mkdtemp(dir) == NULL)
        die("mkdtemp");
    w = wal_open(dir, NULL, &fast, seed_replay, NULL, NULL, err, sizeof(err));
    if (w == NULL)
        die(err);
    for (int i = 0; i < 3; i++) {
        char rec[64];

        snprintf(rec, sizeof(rec), "record %d of the first segment", i);
        if (wal_append(w, rec, strlen(rec), NULL, err, sizeof(err)) != 0)
            die(err);
    }
    if (wal_rotate(w, err, sizeof(err)) != 0
        || wal_append(w, "second", 6, NULL, err, sizeof(err)) != 0)
        die(err);
    wal_close(w);
    buf_writer_create(&one, 256);
    buf_writer_create(&two, 256);
    seed_read_segment(dir, 1, &one);
    seed_read_segment(dir, 2, &two);
    rmdir(dir);

    /* mode 0: as written (the fuzzer must keep the CRCs) */
    prefix[0] = 0;
    prefix[1] = prefix[2] = 0;
    seed_write("wal", "one-segment", prefix, 3, one.data, one.len);
    /* mode 7: every CRC fixed up; a torn last record */
    prefix[0] = 0x07;
    seed_write("wal", "torn-tail", prefix, 3, one.data, one.len - 5);
    /* mode 15: two segments split where the first one ends */
    split = one.len;
    prefix[0] = 0x0f;
    prefix[1] = (uint8_t)split;
    prefix[2] = (uint8_t)(split >> 8);
    buf_put_bytes(&one, two.data, two.len);
    seed_write("wal", "two-segments", prefix, 3, one.data, one.len);
    /* mode 0x1f: two segments, replay from segment 1, offset 24 + record */
    prefix[0] = 0x1f;
    seed_write("wal", "two-segments-from", prefix, 3, one.data, one.len);
    buf_writer_destroy(&one);
    buf_writer_destroy(&two);
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mkcorpus CORPUS-DIR\n");
        return 2;
    }
    seed_root = argv[1];
    mkdir(seed_root, 0755);
    seed_states();
    seed_unique_dense();
    seed_metrics();
    seed_cachevals();
    seed_dedup();
    seed_codec();
    seed_wal();
    return 0;
}
