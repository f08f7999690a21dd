/*
 * fuzz_codec: bus messages (codec_decode) and cache value headers
 * (codec_cache_header_decode).
 *
 * Each input is decoded twice: as it is, and as a copy whose header is
 * made right (magic, version, zero flags and reserved bytes, body length,
 * CRC-32C), so the fuzzer reaches the body without having to guess a
 * checksum. A message that decodes is re-encoded entry by entry with
 * codec_put_entry; the bytes must be those decoded (every field has one
 * encoding: varints are shortest-form and everything is checked), and
 * codec_message_destroy runs under LeakSanitizer. Then each entry is
 * applied to a metric as the aggregator does (fold an event, decode and
 * merge a partial state or a handed-off metric), the metric is rendered,
 * and its encoding must decode again (a snapshot must load).
 */
#include <json-c/json.h>
#include <string.h>

#include "buf.h"
#include "codec.h"
#include "crc32c.h"
#include "fuzz.h"
#include "metric.h"
#include "state.h"
#include "window.h"
#include "xalloc.h"

/* Header layout of schema/bus-batch.md. */
#define FUZZ_OFF_VERSION 4
#define FUZZ_OFF_BODY_LEN 8
#define FUZZ_OFF_CRC 12

static void
put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Re-encodes MSG and compares with the LEN bytes at DATA it came from. */
static void
check_reencode(const struct codec_message *msg, const uint8_t *data,
               size_t len)
{
    struct codec_encoder enc;
    struct buf_writer out;

    buf_writer_create(&out, len);
    codec_message_begin(&enc, &out);
    for (size_t s = 0; s < msg->subbatch_count; s++) {
        const struct codec_subbatch *sb = &msg->subbatches[s];

        FUZZ_CHECK(codec_subbatch_begin(&enc, sb) == 0, enc.err);
        for (size_t i = 0; i < sb->entry_count; i++)
            FUZZ_CHECK(codec_put_entry(&enc, &sb->entries[i]) == 0, enc.err);
        FUZZ_CHECK(codec_subbatch_end(&enc) == 0, enc.err);
    }
    FUZZ_CHECK(codec_message_end(&enc) == 0, enc.err);
    FUZZ_CHECK(out.len == len && memcmp(out.data, data, len) == 0,
               "re-encoding gives other bytes");
    buf_writer_destroy(&out);
}

/* What a snapshot holds must load again. */
static void
check_metric_snapshot(const struct metric *m)
{
    struct buf_writer w;
    struct buf_reader in;
    struct metric *back;
    char err[256];

    buf_writer_create(&w, 256);
    metric_encode(m, &w);
    buf_reader_init(&in, w.data, w.len);
    back = metric_decode(&in, err, sizeof(err));
    FUZZ_CHECK(back != NULL, err);
    metric_destroy(back);
    buf_writer_destroy(&w);
}

/* Applies E to a new metric the way the aggregator's store does
 * (services/aggregator/store.c, main.c), events validated first, then
 * renders it and checks that its snapshot loads again. */
static void
apply_entry(const struct codec_entry *e)
{
    struct metric *m = NULL, *in_metric;
    struct buf_reader in;
    enum event_type got;
    char err[256];
    void *state;

    switch (e->kind) {
    case CODEC_ENTRY_EVENT:
        /* The codec leaves UTF-8 and the time against a clock to
         * event_validate (schema/bus-batch.md); a time outside
         * [0, EVENT_TIME_MAX_US) folded in makes a metric whose snapshot
         * metric_decode refuses (regress/codec/event-time-out-of-range). */
        if (event_validate(&e->u.event, FUZZ_NOW_US) != EVENT_OK)
            return;
        m = metric_create((enum event_type)e->type, e->generation, NULL);
        metric_fold(m, &e->u.event, FUZZ_NOW_US);
        break;
    case CODEC_ENTRY_PARTIAL:
        buf_reader_init(&in, e->u.partial.state, e->u.partial.state_len);
        state = state_decode_any(&in, &got, err, sizeof(err));
        if (state == NULL)
            return;
        if (got == (enum event_type)e->type) {
            m = metric_create(got, e->generation, NULL);
            (void)metric_merge_partial(m, e->u.partial.bucket_start_s,
                                       e->u.partial.first_us,
                                       e->u.partial.last_us, state,
                                       FUZZ_NOW_US);
        }
        state_ops_for(got)->destroy(state);
        break;
    case CODEC_ENTRY_METRIC_STATE:
        buf_reader_init(&in, e->u.metric_state.metric,
                        e->u.metric_state.metric_len);
        in_metric = metric_decode(&in, err, sizeof(err));
        if (in_metric == NULL)
            return;
        m = metric_create(metric_type(in_metric), e->generation, NULL);
        FUZZ_CHECK(metric_merge(m, in_metric) == 0, "metric merge");
        metric_destroy(in_metric);
        break;
    default:
        return;
    }
    if (m == NULL)
        return;
    for (int w = 0; w < WINDOW_COUNT; w++)
        json_object_put(metric_render(m, (enum window)w, FUZZ_NOW_US, 0));
    check_metric_snapshot(m);
    metric_destroy(m);
}

static void
decode_message(const uint8_t *data, size_t len)
{
    struct codec_message msg;
    char err[CODEC_ERR_MAX];
    size_t entries = 0;

    memset(err, 'x', sizeof(err));
    if (codec_decode(data, len, &msg, err, sizeof(err)) != 0) {
        FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0',
                   "a failure without a reason");
        FUZZ_CHECK(msg.subbatches == NULL && msg.entries == NULL
                       && msg.entry_count == 0,
                   "a failed decode left something to destroy");
        return;
    }
    FUZZ_CHECK(msg.subbatch_count >= 1, "a message of no sub-batch");
    for (size_t s = 0; s < msg.subbatch_count; s++) {
        FUZZ_CHECK(msg.subbatches[s].entries == msg.entries + entries,
                   "sub-batch entries not consecutive");
        entries += msg.subbatches[s].entry_count;
    }
    FUZZ_CHECK(entries == msg.entry_count, "entry counts disagree");
    check_reencode(&msg, data, len);
    for (size_t i = 0; i < msg.entry_count; i++)
        apply_entry(&msg.entries[i]);
    codec_message_destroy(&msg);
}

static void
decode_cache_header(const uint8_t *data, size_t len)
{
    struct codec_cache_header h;
    struct buf_reader in;
    char err[CODEC_ERR_MAX];
    struct buf_writer out;

    buf_reader_init(&in, data, len);
    if (codec_cache_header_decode(&in, &h, err, sizeof(err)) != 0)
        return;
    FUZZ_CHECK(in.pos == CODEC_CACHE_HEADER_SIZE, "header size");
    FUZZ_CHECK(!codec_cache_header_may_replace(&h, &h),
               "a value may replace itself");
    buf_writer_create(&out, CODEC_CACHE_HEADER_SIZE);
    FUZZ_CHECK(codec_cache_header_encode(&h, &out) == 0,
               "a decoded header does not encode");
    FUZZ_CHECK(out.len == CODEC_CACHE_HEADER_SIZE
                   && memcmp(out.data, data, out.len) == 0,
               "header re-encodes to other bytes");
    buf_writer_destroy(&out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *fixed;

    decode_message(data, size);
    decode_cache_header(data, size);
    if (size < CODEC_HEADER_SIZE || size > CODEC_MESSAGE_MAX)
        return 0;

    fixed = xmalloc(size);
    memcpy(fixed, data, size);
    memcpy(fixed, CODEC_MAGIC, CODEC_MAGIC_LEN);
    fixed[FUZZ_OFF_VERSION] = CODEC_VERSION;
    memset(fixed + FUZZ_OFF_VERSION + 1, 0,
           FUZZ_OFF_BODY_LEN - FUZZ_OFF_VERSION - 1);
    put_u32(fixed + FUZZ_OFF_BODY_LEN, (uint32_t)(size - CODEC_HEADER_SIZE));
    put_u32(fixed + FUZZ_OFF_CRC, crc32c(0, fixed + CODEC_HEADER_SIZE,
                                         size - CODEC_HEADER_SIZE));
    decode_message(fixed, size);
    free(fixed);
    return 0;
}
