/*
 * fuzz_state: the decoders of stored and cached state. The first input
 * byte (mod 4) picks one, the rest is its input:
 *
 *   0  state_decode_any   any state type, read from its 2-byte prefix
 *   1  metric_decode      a whole metric (all + rings of buckets)
 *   2  cacheval           u16 LE length L, an open-buckets (or tombstone)
 *                         value of L bytes, then a closed-bucket value
 *   3  dedup_decode       an aggregator's dedup snapshot
 *
 * What decodes must then behave: the encodings are canonical
 * (schema/state-encoding.md, dedup.h; the percentile sketch excepted), so
 * re-encoding gives exactly the bytes consumed, and it is stable (encode,
 * decode, encode gives the same bytes); clone, merge with itself, fold one event, render and
 * the cacheval queries must not trip a sanitizer; and what the encoder
 * writes after a merge or fold must decode again.
 */
#include <json-c/json.h>
#include <string.h>

#include "buf.h"
#include "cacheval.h"
#include "dedup.h"
#include "fuzz.h"
#include "metric.h"
#include "state.h"
#include "window.h"

#define FUZZ_ERR_MAX 256
#define FUZZ_DEDUP_HORIZON_US (600LL * 1000000LL)

enum fuzz_target {
    FUZZ_STATE = 0,
    FUZZ_METRIC = 1,
    FUZZ_CACHEVAL = 2,
    FUZZ_DEDUP = 3,
};
#define FUZZ_TARGETS 4

/* One valid event of TYPE at FUZZ_NOW_US. */
static struct event
fuzz_event(enum event_type type)
{
    struct event ev = {
        .type = type,
        .name = "fuzz",
        .name_len = 4,
        .value = 1.5,
        .time_us = FUZZ_NOW_US,
        .source = "src",
        .source_len = 3,
    };

    if (type == EVENT_UNIQUE) {
        ev.value = 0;
        ev.str = "u";
        ev.str_len = 1;
    }
    return ev;
}

/* Whether every encoding of TYPE has one form the decoder accepts. The
 * percentile sketch does not: its decoder takes any valid choice of runs
 * and the encoder always makes one (schema/state-percentile.md,
 * "Bridging"), so there the check is that re-encoding is stable. */
static int
fuzz_canonical(enum event_type type)
{
    return type != EVENT_PERCENTILE;
}

/* ENC (LEN bytes) must be exactly what encoding the decoded value gives. */
static void
check_same(const struct buf_writer *w, const uint8_t *enc, size_t len,
           const char *what)
{
    FUZZ_CHECK(w->len == len && memcmp(w->data, enc, len) == 0, what);
}

/* Encodes ST and decodes the result again: the encoder's output must be
 * acceptable to the decoder and encode to the same bytes again. */
static void
check_state_reencodes(const struct state_ops *ops, const void *st)
{
    struct buf_writer w, again;
    struct buf_reader in;
    char err[FUZZ_ERR_MAX];
    void *back;

    buf_writer_create(&w, 64);
    ops->encode(st, &w);
    buf_reader_init(&in, w.data, w.len);
    back = ops->decode(&in, err, sizeof(err));
    FUZZ_CHECK(back != NULL, err);
    FUZZ_CHECK(buf_remaining(&in) == 0, "decode left bytes of an encoding");
    buf_writer_create(&again, w.len);
    ops->encode(back, &again);
    check_same(&again, w.data, w.len, "state encoding not stable");
    buf_writer_destroy(&again);
    ops->destroy(back);
    buf_writer_destroy(&w);
}

static void
fuzz_state(const uint8_t *data, size_t size)
{
    const struct state_ops *ops;
    struct state_render_context ctx = { .span_seconds = 60 };
    struct buf_reader in;
    struct buf_writer w;
    enum event_type type;
    struct event ev;
    char err[FUZZ_ERR_MAX];
    void *st, *copy;

    buf_reader_init(&in, data, size);
    st = state_decode_any(&in, &type, err, sizeof(err));
    if (st == NULL)
        return;
    ops = state_ops_for(type);
    buf_writer_create(&w, size);
    ops->encode(st, &w);
    if (fuzz_canonical(type))
        check_same(&w, data, in.pos, "state encoding not canonical");
    buf_writer_destroy(&w);
    check_state_reencodes(ops, st);

    json_object_put(ops->render(st, &ctx));
    (void)ops->empty(st);
    copy = ops->clone(st);
    FUZZ_CHECK(ops->merge(copy, st) == 0, "a state does not merge with itself");
    check_state_reencodes(ops, copy);
    json_object_put(ops->render(copy, NULL));
    ev = fuzz_event(type);
    ops->fold(copy, &ev);
    check_state_reencodes(ops, copy);
    ops->destroy(copy);
    ops->destroy(st);
}

static void
render_windows(const struct metric *m)
{
    for (int w = 0; w < WINDOW_COUNT; w++) {
        void *st = metric_window_state(m, (enum window)w, FUZZ_NOW_US);

        state_ops_for(metric_type(m))->destroy(st);
        json_object_put(metric_render(m, (enum window)w, FUZZ_NOW_US, 1));
    }
}

/* Encodes M and decodes the result again, which must encode the same. */
static void
check_metric_reencodes(const struct metric *m)
{
    struct buf_writer w, again;
    struct buf_reader in;
    char err[FUZZ_ERR_MAX];
    struct metric *back;

    buf_writer_create(&w, 256);
    metric_encode(m, &w);
    buf_reader_init(&in, w.data, w.len);
    back = metric_decode(&in, err, sizeof(err));
    FUZZ_CHECK(back != NULL, err);
    FUZZ_CHECK(buf_remaining(&in) == 0, "decode left bytes of an encoding");
    buf_writer_create(&again, w.len);
    metric_encode(back, &again);
    check_same(&again, w.data, w.len, "metric encoding not stable");
    buf_writer_destroy(&again);
    metric_destroy(back);
    buf_writer_destroy(&w);
}

static void
fuzz_metric(const uint8_t *data, size_t size)
{
    struct buf_reader in;
    struct buf_writer w;
    struct metric *m, *copy;
    struct event ev;
    char err[FUZZ_ERR_MAX];

    buf_reader_init(&in, data, size);
    m = metric_decode(&in, err, sizeof(err));
    if (m == NULL)
        return;
    buf_writer_create(&w, size);
    metric_encode(m, &w);
    if (fuzz_canonical(metric_type(m)))
        check_same(&w, data, in.pos, "metric encoding not canonical");
    buf_writer_destroy(&w);
    check_metric_reencodes(m);

    render_windows(m);
    copy = metric_clone(m);
    FUZZ_CHECK(metric_merge(copy, m) == 0, "a metric does not merge with itself");
    check_metric_reencodes(copy);
    ev = fuzz_event(metric_type(m));
    metric_fold(copy, &ev, FUZZ_NOW_US);
    check_metric_reencodes(copy);
    render_windows(copy);
    metric_destroy(copy);
    metric_destroy(m);
}

static void
fuzz_cacheval(const uint8_t *data, size_t size)
{
    struct cacheval_open open;
    char err[FUZZ_ERR_MAX];
    size_t open_len;
    int rc;

    if (size < 2)
        return;
    open_len = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2;
    size -= 2;
    if (open_len > size)
        open_len = size;
    if (cacheval_decode_open(data, open_len, &open, err, sizeof(err)) != 0)
        return;
    if (size > open_len) {
        rc = cacheval_apply_closed(&open, data + open_len, size - open_len,
                                   err, sizeof(err));
        FUZZ_CHECK(rc >= -1 && rc <= 1, "apply_closed status");
    }
    if (open.metric != NULL) {
        FUZZ_CHECK(metric_type(open.metric) == open.header.type,
                   "metric of another type than its header");
        for (int w = 0; w < WINDOW_COUNT; w++)
            (void)cacheval_complete(&open, (enum window)w, FUZZ_NOW_US);
        render_windows(open.metric);
    }
    cacheval_open_release(&open);
}

static void
fuzz_dedup(const uint8_t *data, size_t size)
{
    static const uint8_t key[DEDUP_KEY_SIZE] = { 0xfe, 0xed };
    struct buf_reader in;
    struct buf_writer w;
    struct dedup *d;
    char err[DEDUP_ERR_MAX];
    size_t count;
    int added;

    buf_reader_init(&in, data, size);
    d = dedup_decode(&in, FUZZ_DEDUP_HORIZON_US, err, sizeof(err));
    if (d == NULL)
        return;
    buf_writer_create(&w, size);
    dedup_encode(d, &w);
    check_same(&w, data, in.pos, "dedup encoding not canonical");
    buf_writer_destroy(&w);

    count = dedup_count(d);
    added = dedup_seen(d, key, FUZZ_NOW_US, FUZZ_NOW_US) == 0;
    FUZZ_CHECK(dedup_count(d) == count + (size_t)added,
               "dedup count after a new key");
    FUZZ_CHECK(dedup_seen(d, key, FUZZ_NOW_US, FUZZ_NOW_US) == 1,
               "a key just seen is not a duplicate");
    dedup_expire(d, FUZZ_NOW_US);
    if (added)
        FUZZ_CHECK(dedup_seen(d, key, FUZZ_NOW_US, FUZZ_NOW_US) == 1,
                   "a fresh key expired");
    (void)dedup_memory(d);
    dedup_destroy(d);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    switch (data[0] % FUZZ_TARGETS) {
    case FUZZ_STATE:
        fuzz_state(data + 1, size - 1);
        break;
    case FUZZ_METRIC:
        fuzz_metric(data + 1, size - 1);
        break;
    case FUZZ_CACHEVAL:
        fuzz_cacheval(data + 1, size - 1);
        break;
    default:
        fuzz_dedup(data + 1, size - 1);
        break;
    }
    return 0;
}
