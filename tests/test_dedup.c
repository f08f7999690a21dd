/*
 * test_dedup: the dedup key set (dedup.c).
 *
 *   duplicates, the exact horizon boundary, stale keys, extreme times
 *   out-of-order creation times: every key kept exactly its horizon
 *   a million random operations against a reference model (seeded)
 *   count and memory, canonical bytes, round trips
 *   decode: every truncation point and hand-built bad input, exact reasons
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "dedup.h"
#include "testrand.h"
#include "xalloc.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define HORIZON 1000
#define SEED 0x64656475ULL

/* The random property run. */
#define PROP_OPS 1000000
#define PROP_HORIZON 100000
#define PROP_START (2 * PROP_HORIZON)
#define PROP_EXPIRE_EVERY 64
#define PROP_JUMP_EVERY 200000          /* then time leaps 2 horizons */
#define PROP_STEP_MAX 3                 /* time advances 0..2 us per op */
#define PROP_REPEAT_PERCENT 20
#define PROP_NORMAL_PERCENT 75          /* created up to a tenth late */
#define PROP_DELAYED_PERCENT 90         /* up to 1.1 horizons late */
/* Records old enough to fall out of the ring are expired or stale. */
#define PROP_RING (1u << 18)
/* Live creation times span at most 4 horizons (a leap, then future keys). */
#define PROP_HIST (8 * PROP_HORIZON)

#define MEMORY_KEYS 1000
#define ROUND_TRIP_KEYS 5000
#define CANONICAL_KEYS 300
#define CANONICAL_EXTRA 200

/* ---- helpers ------------------------------------------------------------ */

/* A key that depends on every bit of N. */
static void
key_from(uint8_t key[DEDUP_KEY_SIZE], uint64_t n)
{
    for (size_t i = 0; i < DEDUP_KEY_SIZE; i++)
        key[i] = (uint8_t)((n >> (8 * (i % 8))) ^ (i < 8 ? 0 : 0xa5));
}

static void
key_random(uint8_t key[DEDUP_KEY_SIZE], struct testrand *r)
{
    uint64_t a = testrand_next(r), b = testrand_next(r);

    memcpy(key, &a, sizeof(a));
    memcpy(key + sizeof(a), &b, sizeof(b));
}

static void
encode(const struct dedup *d, struct buf_writer *w)
{
    buf_writer_reset(w);
    dedup_encode(d, w);
}

/* Decodes exactly LEN bytes from their own allocation (so ASan sees any
 * read past the end). On failure returns NULL and the reason in ERR. */
static struct dedup *
decode_copy(const uint8_t *data, size_t len, int64_t horizon, char *err,
            size_t errlen)
{
    uint8_t *copy = xmalloc(len);
    struct buf_reader r;
    struct dedup *d;

    if (len > 0)
        memcpy(copy, data, len);
    buf_reader_init(&r, copy, len);
    err[0] = '\0';
    d = dedup_decode(&r, horizon, err, errlen);
    if (d != NULL)
        assert_int_equal(r.pos, len);
    free(copy);
    return d;
}

static void
assert_decode_fails(const uint8_t *data, size_t len, const char *reason)
{
    char err[DEDUP_ERR_MAX];

    assert_null(decode_copy(data, len, HORIZON, err, sizeof(err)));
    assert_string_equal(err, reason);
}

static void
assert_same_encoding(const struct dedup *a, const struct dedup *b)
{
    struct buf_writer wa, wb;

    buf_writer_create(&wa, 64);
    buf_writer_create(&wb, 64);
    encode(a, &wa);
    encode(b, &wb);
    assert_int_equal(wa.len, wb.len);
    assert_memory_equal(wa.data, wb.data, wa.len);
    buf_writer_destroy(&wa);
    buf_writer_destroy(&wb);
}

/* ---- membership and time ------------------------------------------------ */

static void
test_duplicates(void **state)
{
    struct dedup *d = dedup_create(HORIZON);
    uint8_t a[DEDUP_KEY_SIZE], b[DEDUP_KEY_SIZE], c[DEDUP_KEY_SIZE];

    (void)state;
    key_from(a, 1);
    key_from(b, 2);
    memcpy(c, a, sizeof(c));
    c[DEDUP_KEY_SIZE - 1] ^= 1;          /* differs in the last bit only */
    assert_int_equal(dedup_count(d), 0);
    assert_int_equal(dedup_seen(d, a, 500, 1000), 0);
    assert_int_equal(dedup_count(d), 1);
    assert_int_equal(dedup_seen(d, a, 500, 1000), 1);
    /* A known key is a duplicate whatever creation time comes with it. */
    assert_int_equal(dedup_seen(d, a, 999, 1200), 1);
    assert_int_equal(dedup_seen(d, b, 500, 1000), 0);
    assert_int_equal(dedup_seen(d, c, 500, 1000), 0);
    assert_int_equal(dedup_count(d), 3);
    assert_int_equal(dedup_seen(d, b, 500, 1000), 1);
    assert_int_equal(dedup_seen(d, c, 500, 1000), 1);
    assert_int_equal(dedup_count(d), 3);
    assert_int_equal(dedup_stale(d), 0);
    dedup_destroy(d);
    dedup_destroy(NULL);
}

static void
test_horizon_boundary(void **state)
{
    struct dedup *d = dedup_create(HORIZON);
    uint8_t a[DEDUP_KEY_SIZE], b[DEDUP_KEY_SIZE];

    (void)state;
    key_from(a, 1);
    key_from(b, 2);
    /* now - created == horizon: still within it, added. */
    assert_int_equal(dedup_seen(d, a, 5000, 6000), 0);
    assert_int_equal(dedup_count(d), 1);
    assert_int_equal(dedup_stale(d), 0);
    /* One microsecond more: stale, not added, every time. */
    assert_int_equal(dedup_seen(d, b, 4999, 6000), 0);
    assert_int_equal(dedup_stale(d), 1);
    assert_int_equal(dedup_seen(d, b, 4999, 6000), 0);
    assert_int_equal(dedup_stale(d), 2);
    assert_int_equal(dedup_count(d), 1);

    dedup_expire(d, 6000);
    assert_int_equal(dedup_count(d), 1);
    assert_int_equal(dedup_seen(d, a, 5000, 6000), 1);
    /* Not expired yet, so still a duplicate even though it is old. */
    assert_int_equal(dedup_seen(d, a, 5000, 7000), 1);
    dedup_expire(d, 6001);
    assert_int_equal(dedup_count(d), 0);
    assert_int_equal(dedup_seen(d, a, 5000, 6001), 0);
    assert_int_equal(dedup_stale(d), 3);
    assert_int_equal(dedup_count(d), 0);
    dedup_destroy(d);
}

static void
test_extreme_times(void **state)
{
    struct dedup *d = dedup_create(HORIZON);
    struct dedup *wide = dedup_create(INT64_MAX);
    uint8_t a[DEDUP_KEY_SIZE], b[DEDUP_KEY_SIZE];

    (void)state;
    key_from(a, 1);
    key_from(b, 2);
    /* now - horizon below INT64_MIN: nothing is old. */
    assert_int_equal(dedup_seen(d, a, INT64_MAX, INT64_MIN), 0);
    dedup_expire(d, INT64_MIN);
    assert_int_equal(dedup_count(d), 1);
    dedup_expire(d, INT64_MAX);
    assert_int_equal(dedup_count(d), 1);
    assert_int_equal(dedup_seen(d, b, INT64_MIN, INT64_MAX), 0);
    assert_int_equal(dedup_stale(d), 1);

    /* INT64_MAX horizon: at now 0 the cutoff is INT64_MIN + 1. */
    assert_int_equal(dedup_seen(wide, a, INT64_MIN, 0), 0);
    assert_int_equal(dedup_stale(wide), 1);
    assert_int_equal(dedup_count(wide), 0);
    assert_int_equal(dedup_seen(wide, a, INT64_MIN, -1), 0);
    assert_int_equal(dedup_seen(wide, b, INT64_MIN + 1, 0), 0);
    assert_int_equal(dedup_count(wide), 2);
    assert_int_equal(dedup_stale(wide), 1);
    dedup_expire(wide, 0);
    assert_int_equal(dedup_count(wide), 1);
    assert_int_equal(dedup_seen(wide, b, 0, 0), 1);
    dedup_expire(wide, INT64_MAX);
    assert_int_equal(dedup_count(wide), 0);
    dedup_destroy(d);
    dedup_destroy(wide);
}

static void
test_out_of_order(void **state)
{
    /* Inserted in this order, all at about now 10000: in time, future,
     * delayed, in time, delayed, far future, exactly at the horizon. */
    static const int64_t created[] = { 10000, 12000, 9100, 10500, 9500,
                                       20000, 9000 };
    struct dedup *d = dedup_create(HORIZON);
    uint8_t key[DEDUP_KEY_SIZE];
    uint64_t stale = 0;

    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(created); i++) {
        key_from(key, i);
        assert_int_equal(dedup_seen(d, key, created[i], 10000), 0);
    }
    assert_int_equal(dedup_stale(d), 0);
    for (int64_t now = 10000; now <= 20000 + HORIZON + 1; now++) {
        size_t live = 0;

        dedup_expire(d, now);
        for (size_t i = 0; i < ARRAY_LEN(created); i++) {
            int expected = created[i] >= now - HORIZON;

            key_from(key, i);
            /* Present: a duplicate. Gone: stale, so never re-added. */
            assert_int_equal(dedup_seen(d, key, created[i], now), expected);
            live += (size_t)expected;
            stale += (uint64_t)!expected;
        }
        assert_int_equal(dedup_count(d), live);
        assert_int_equal(dedup_stale(d), stale);
    }
    assert_int_equal(dedup_count(d), 0);
    dedup_destroy(d);
}

/* ---- the random property run -------------------------------------------- */

struct prop_record {
    uint8_t key[DEDUP_KEY_SIZE];
    int64_t created;
    int inserted;
};

struct prop_model {
    struct prop_record *ring;       /* the last PROP_RING records */
    uint64_t records;
    uint32_t *hist;                 /* inserted keys per created % PROP_HIST */
    int64_t cutoff;                 /* keys created before it are expired */
    size_t count;
    uint64_t stale;
};

/* What dedup_expire(NOW) must do, by the histogram. */
static void
prop_expire(struct prop_model *m, int64_t now)
{
    for (; m->cutoff < now - PROP_HORIZON; m->cutoff++) {
        uint32_t *slot = &m->hist[(uint64_t)m->cutoff % PROP_HIST];

        m->count -= *slot;
        *slot = 0;
    }
}

/* One of the last PROP_RING records, at random. */
static struct prop_record *
prop_old_record(struct prop_model *m, struct testrand *r)
{
    uint64_t back = m->records < PROP_RING ? m->records : PROP_RING;

    return &m->ring[(m->records - 1 - testrand_below(r, back)) % PROP_RING];
}

/* A new random key; KIND (0..99) picks how its creation time relates to
 * NOW: a little late, up to 1.1 horizons late, or in the future. */
static struct prop_record *
prop_new_record(struct prop_model *m, struct testrand *r, unsigned kind,
                int64_t now)
{
    struct prop_record *rec = &m->ring[m->records++ % PROP_RING];
    uint64_t late_max = PROP_HORIZON + PROP_HORIZON / 10;

    key_random(rec->key, r);
    rec->inserted = 0;
    if (kind < PROP_NORMAL_PERCENT)
        rec->created = now - (int64_t)testrand_below(r, PROP_HORIZON / 10);
    else if (kind < PROP_DELAYED_PERCENT)
        rec->created = now - (int64_t)testrand_below(r, late_max);
    else
        rec->created = now + (int64_t)testrand_below(r, PROP_HORIZON);
    return rec;
}

/* The answer dedup_seen must give for REC at NOW; updates the model. */
static int
prop_offer(struct prop_model *m, struct prop_record *rec, int64_t now)
{
    if (rec->inserted && rec->created >= m->cutoff)
        return 1;
    if (rec->created < now - PROP_HORIZON) {
        m->stale++;
        return 0;
    }
    assert_false(rec->inserted);
    assert_true(rec->created - m->cutoff < PROP_HIST);
    rec->inserted = 1;
    m->hist[(uint64_t)rec->created % PROP_HIST]++;
    m->count++;
    return 0;
}

static int
prop_record_compare(const void *pa, const void *pb)
{
    const struct prop_record *a = pa, *b = pb;

    return memcmp(a->key, b->key, DEDUP_KEY_SIZE);
}

/* The canonical encoding of the model's live keys, built by hand. */
static void
prop_expected_encoding(const struct prop_model *m, struct buf_writer *w)
{
    size_t held = m->records < PROP_RING ? (size_t)m->records : PROP_RING;
    struct prop_record *live = xmalloc(held * sizeof(*live));
    size_t n = 0;

    for (size_t i = 0; i < held; i++) {
        if (m->ring[i].inserted && m->ring[i].created >= m->cutoff)
            live[n++] = m->ring[i];
    }
    assert_int_equal(n, m->count);
    qsort(live, n, sizeof(*live), prop_record_compare);
    buf_writer_reset(w);
    buf_put_varint(w, n);
    for (size_t i = 0; i < n; i++) {
        buf_put_bytes(w, live[i].key, DEDUP_KEY_SIZE);
        buf_put_svarint(w, live[i].created);
    }
    free(live);
}

static void
test_random_against_model(void **state)
{
    struct dedup *d = dedup_create(PROP_HORIZON);
    struct prop_model m = {
        .ring = xcalloc(PROP_RING, sizeof(struct prop_record)),
        .hist = xcalloc(PROP_HIST, sizeof(uint32_t)),
        .cutoff = PROP_START - 2 * PROP_HORIZON,
    };
    struct buf_writer got, want;
    struct testrand r;
    int ops = testrand_scale(PROP_OPS);
    size_t empty = dedup_memory(d), most = 0, memory = empty;
    int64_t now = PROP_START;
    char err[DEDUP_ERR_MAX];
    struct dedup *copy;

    (void)state;
    testrand_seed(&r, SEED);
    for (int op = 1; op <= ops; op++) {
        unsigned kind = (unsigned)testrand_below(&r, 100);
        struct prop_record *rec;

        now += (int64_t)testrand_below(&r, PROP_STEP_MAX);
        if (op % PROP_JUMP_EVERY == 0)
            now += 2 * PROP_HORIZON;
        if (kind < PROP_REPEAT_PERCENT && m.records > 0)
            rec = prop_old_record(&m, &r);
        else
            rec = prop_new_record(&m, &r, kind, now);
        assert_int_equal(dedup_seen(d, rec->key, rec->created, now),
                         prop_offer(&m, rec, now));
        if (op % PROP_EXPIRE_EVERY == 0) {
            dedup_expire(d, now);
            prop_expire(&m, now);
        }
        assert_int_equal(dedup_count(d), m.count);
        if (m.count > most)
            most = m.count;
        /* Memory only grows, and within the stated bound. */
        assert_true(dedup_memory(d) >= memory);
        memory = dedup_memory(d);
        assert_true(memory <= empty + most * DEDUP_ENTRY_BYTES);
    }
    assert_int_equal(dedup_stale(d), m.stale);
    assert_true(most > PROP_HORIZON / 2);     /* the table did grow */
    assert_true(m.stale > 0);

    /* The whole set, byte for byte, then through a round trip. */
    buf_writer_create(&got, 64);
    buf_writer_create(&want, 64);
    dedup_expire(d, now);
    prop_expire(&m, now);
    encode(d, &got);
    prop_expected_encoding(&m, &want);
    assert_int_equal(got.len, want.len);
    assert_memory_equal(got.data, want.data, got.len);
    copy = decode_copy(got.data, got.len, PROP_HORIZON, err, sizeof(err));
    assert_non_null(copy);
    assert_int_equal(dedup_count(copy), m.count);
    assert_same_encoding(d, copy);

    buf_writer_destroy(&got);
    buf_writer_destroy(&want);
    dedup_destroy(copy);
    dedup_destroy(d);
    free(m.ring);
    free(m.hist);
}

/* ---- count and memory --------------------------------------------------- */

static void
test_count_and_memory(void **state)
{
    struct dedup *d = dedup_create(HORIZON);
    uint8_t key[DEDUP_KEY_SIZE];
    size_t empty = dedup_memory(d), full;

    (void)state;
    assert_true(empty > 0);
    for (uint64_t i = 0; i < MEMORY_KEYS; i++) {
        size_t before = dedup_memory(d);

        key_from(key, i);
        assert_int_equal(dedup_seen(d, key, 1000, 1000), 0);
        assert_int_equal(dedup_count(d), i + 1);
        assert_true(dedup_memory(d) >= before);
    }
    full = dedup_memory(d);
    assert_true(full > empty);
    assert_true(full >= MEMORY_KEYS * DEDUP_KEY_SIZE);
    assert_true(full <= empty + MEMORY_KEYS * DEDUP_ENTRY_BYTES);

    /* Expiry keeps the room, and new keys reuse it. */
    dedup_expire(d, 1000 + HORIZON + 1);
    assert_int_equal(dedup_count(d), 0);
    assert_int_equal(dedup_memory(d), full);
    for (uint64_t i = 0; i < MEMORY_KEYS; i++) {
        key_from(key, MEMORY_KEYS + i);
        assert_int_equal(dedup_seen(d, key, 5000, 5000), 0);
    }
    assert_int_equal(dedup_count(d), MEMORY_KEYS);
    assert_int_equal(dedup_memory(d), full);
    dedup_destroy(d);
}

/* ---- encoding ----------------------------------------------------------- */

static void
test_encode_bytes(void **state)
{
    static const uint8_t expected[] = {
        0x02,
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
        0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
        0x0a,                                           /* 5 */
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x01,                                           /* -1 */
    };
    struct dedup *d = dedup_create(HORIZON);
    uint8_t low[DEDUP_KEY_SIZE], high[DEDUP_KEY_SIZE];
    struct buf_writer w;

    (void)state;
    for (size_t i = 0; i < DEDUP_KEY_SIZE; i++)
        low[i] = (uint8_t)i;
    memset(high, 0xff, sizeof(high));
    buf_writer_create(&w, 64);
    encode(d, &w);
    assert_int_equal(w.len, 1);
    assert_int_equal(w.data[0], 0x00);
    assert_int_equal(dedup_seen(d, high, -1, 0), 0);
    assert_int_equal(dedup_seen(d, low, 5, 0), 0);
    encode(d, &w);
    assert_int_equal(w.len, sizeof(expected));
    assert_memory_equal(w.data, expected, sizeof(expected));
    buf_writer_destroy(&w);
    dedup_destroy(d);
}

static void
test_round_trip(void **state)
{
    static const int64_t extremes[] = { INT64_MIN, INT64_MAX, 0, -1 };
    struct dedup *d = dedup_create(INT64_MAX), *back, *narrow;
    uint8_t key[DEDUP_KEY_SIZE];
    struct buf_writer w, again;
    struct buf_reader r;
    struct testrand rng;
    char err[DEDUP_ERR_MAX];
    size_t recent = 0, newest = 0;

    (void)state;
    testrand_seed(&rng, SEED + 1);
    /* At now -1 the INT64_MAX horizon reaches back to INT64_MIN. */
    for (size_t i = 0; i < ROUND_TRIP_KEYS; i++) {
        int64_t created = i < ARRAY_LEN(extremes)
                              ? extremes[i]
                              : (int64_t)testrand_next(&rng);

        key_random(key, &rng);
        assert_int_equal(dedup_seen(d, key, created, -1), 0);
        recent += created >= -HORIZON;
        newest += created >= INT64_MAX - HORIZON;
    }
    buf_writer_create(&w, 64);
    buf_writer_create(&again, 64);
    encode(d, &w);
    back = decode_copy(w.data, w.len, INT64_MAX, err, sizeof(err));
    assert_non_null(back);
    assert_int_equal(dedup_count(back), ROUND_TRIP_KEYS);
    assert_int_equal(dedup_stale(back), 0);
    encode(back, &again);
    assert_int_equal(again.len, w.len);
    assert_memory_equal(again.data, w.data, w.len);

    /* Bytes after the encoding stay in the reader. */
    buf_put_u8(&w, 0xab);
    buf_reader_init(&r, w.data, w.len);
    narrow = dedup_decode(&r, HORIZON, err, sizeof(err));
    assert_non_null(narrow);
    assert_int_equal(r.pos, w.len - 1);
    /* The decoded set has the new horizon: at now 0 it keeps the keys
     * created at -HORIZON or later. */
    dedup_expire(narrow, 0);
    assert_int_equal(dedup_count(narrow), recent);
    dedup_expire(narrow, INT64_MAX);
    assert_int_equal(dedup_count(narrow), newest);
    assert_true(newest >= 1);                       /* created INT64_MAX */

    buf_writer_destroy(&w);
    buf_writer_destroy(&again);
    dedup_destroy(back);
    dedup_destroy(narrow);
    dedup_destroy(d);
}

static void
test_canonical(void **state)
{
    struct dedup *forward = dedup_create(HORIZON);
    struct dedup *reverse = dedup_create(HORIZON);
    struct dedup *churned = dedup_create(HORIZON);
    uint8_t key[DEDUP_KEY_SIZE];
    size_t order[CANONICAL_KEYS];
    struct testrand r;

    (void)state;
    testrand_seed(&r, SEED + 2);
    for (size_t i = 0; i < CANONICAL_KEYS; i++)
        order[i] = i;
    for (size_t i = CANONICAL_KEYS - 1; i > 0; i--) {
        size_t j = (size_t)testrand_below(&r, i + 1), t = order[i];

        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < CANONICAL_KEYS; i++) {
        key_from(key, i);
        dedup_seen(forward, key, 2000 + (int64_t)i, 2000);
        key_from(key, CANONICAL_KEYS - 1 - i);
        dedup_seen(reverse, key, 2000 + (int64_t)(CANONICAL_KEYS - 1 - i),
                   2500);
    }
    /* Shuffled, among keys that expire before the encoding. */
    for (size_t i = 0; i < CANONICAL_KEYS; i++) {
        if (i < CANONICAL_EXTRA) {
            key_from(key, UINT64_MAX - i);
            dedup_seen(churned, key, 1500, 1500);
        }
        key_from(key, order[i]);
        dedup_seen(churned, key, 2000 + (int64_t)order[i], 2999);
    }
    dedup_expire(churned, 2999);
    assert_int_equal(dedup_count(churned), CANONICAL_KEYS);
    assert_same_encoding(forward, reverse);
    assert_same_encoding(forward, churned);
    dedup_destroy(forward);
    dedup_destroy(reverse);
    dedup_destroy(churned);
}

/* ---- decoding bad input ------------------------------------------------- */

struct cut_range {
    size_t last_cut;       /* cuts up to here give REASON */
    const char *reason;    /* "%zu" takes the bytes left after the count */
};

static void
assert_every_cut_fails(const uint8_t *data, size_t len,
                       const struct cut_range *ranges, size_t nranges)
{
    size_t range = 0;

    for (size_t cut = 0; cut < len; cut++) {
        char expected[DEDUP_ERR_MAX];

        while (cut > ranges[range].last_cut)
            range++;
        assert_true(range < nranges);
        /* The reasons are format strings of this test's own table. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(expected, sizeof(expected), ranges[range].reason,
                 cut == 0 ? (size_t)0 : cut - 1);
#pragma GCC diagnostic pop
        assert_decode_fails(data, cut, expected);
    }
    assert_int_equal(ranges[nranges - 1].last_cut, len - 1);
}

static void
test_decode_truncated(void **state)
{
    /* Three keys with 1-, 2- and 3-byte created_us: 55 bytes. */
    static const struct cut_range short_ranges[] = {
        { 0, "dedup: truncated or malformed key count" },
        { 51, "dedup: key count 3 exceeds what %zu bytes can hold" },
        { 54, "dedup: truncated or malformed created_us of key 2" },
    };
    /* Two keys with 10-byte created_us: 53 bytes. */
    static const struct cut_range long_ranges[] = {
        { 0, "dedup: truncated or malformed key count" },
        { 34, "dedup: key count 2 exceeds what %zu bytes can hold" },
        { 42, "dedup: truncated key 1" },
        { 52, "dedup: truncated or malformed created_us of key 1" },
    };
    struct dedup *d = dedup_create(INT64_MAX);
    uint8_t key[DEDUP_KEY_SIZE];
    struct buf_writer w;
    char err[DEDUP_ERR_MAX];
    struct dedup *whole;

    (void)state;
    buf_writer_create(&w, 64);
    key_from(key, 1);
    dedup_seen(d, key, 1, 0);
    key_from(key, 2);
    dedup_seen(d, key, 100, 0);
    key_from(key, 3);
    dedup_seen(d, key, 10000, 0);
    encode(d, &w);
    assert_int_equal(w.len, 55);
    assert_every_cut_fails(w.data, w.len, short_ranges,
                           ARRAY_LEN(short_ranges));
    whole = decode_copy(w.data, w.len, HORIZON, err, sizeof(err));
    assert_non_null(whole);
    dedup_destroy(whole);
    dedup_destroy(d);

    d = dedup_create(INT64_MAX);
    key_from(key, 1);
    dedup_seen(d, key, INT64_MIN, -1);
    key_from(key, 2);
    dedup_seen(d, key, INT64_MAX, -1);
    encode(d, &w);
    assert_int_equal(w.len, 53);
    assert_every_cut_fails(w.data, w.len, long_ranges, ARRAY_LEN(long_ranges));
    buf_writer_destroy(&w);
    dedup_destroy(d);
}

static void
test_decode_rejects(void **state)
{
    uint8_t low[DEDUP_KEY_SIZE], high[DEDUP_KEY_SIZE];
    struct buf_writer w;
    char small[10];

    (void)state;
    memset(low, 0x11, sizeof(low));
    memset(high, 0xee, sizeof(high));
    buf_writer_create(&w, 64);

    /* Out of order. */
    buf_put_varint(&w, 2);
    buf_put_bytes(&w, high, sizeof(high));
    buf_put_svarint(&w, 0);
    buf_put_bytes(&w, low, sizeof(low));
    buf_put_svarint(&w, 0);
    assert_decode_fails(w.data, w.len, "dedup: key 1 sorts before key 0");

    /* A repeat. */
    buf_writer_reset(&w);
    buf_put_varint(&w, 3);
    buf_put_bytes(&w, low, sizeof(low));
    buf_put_svarint(&w, 0);
    buf_put_bytes(&w, high, sizeof(high));
    buf_put_svarint(&w, 7);
    buf_put_bytes(&w, high, sizeof(high));
    buf_put_svarint(&w, 8);
    assert_decode_fails(w.data, w.len, "dedup: key 2 repeats key 1");

    /* A count that no input could back. */
    buf_writer_reset(&w);
    buf_put_varint(&w, UINT64_C(1) << 63);
    buf_put_bytes(&w, low, sizeof(low));
    buf_put_svarint(&w, 0);
    assert_decode_fails(w.data, w.len,
                        "dedup: key count 9223372036854775808 exceeds what "
                        "17 bytes can hold");

    /* Overlong varints: count, then created_us. */
    assert_decode_fails((const uint8_t[]){ 0x80, 0x00 }, 2,
                        "dedup: truncated or malformed key count");
    buf_writer_reset(&w);
    buf_put_varint(&w, 1);
    buf_put_bytes(&w, low, sizeof(low));
    buf_put_u8(&w, 0x80);
    buf_put_u8(&w, 0x00);
    assert_decode_fails(w.data, w.len,
                        "dedup: truncated or malformed created_us of key 0");

    /* A short error buffer gets a cut reason; none is fine too. */
    buf_writer_reset(&w);
    buf_put_varint(&w, 1);
    {
        struct buf_reader r;

        buf_reader_init(&r, w.data, w.len);
        assert_null(dedup_decode(&r, HORIZON, small, sizeof(small)));
        assert_string_equal(small, "dedup: ke");
        buf_reader_init(&r, w.data, w.len);
        assert_null(dedup_decode(&r, HORIZON, NULL, 0));
    }
    buf_writer_destroy(&w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_horizon_boundary),
        cmocka_unit_test(test_extreme_times),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_count_and_memory),
        cmocka_unit_test(test_encode_bytes),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_decode_truncated),
        cmocka_unit_test(test_decode_rejects),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
