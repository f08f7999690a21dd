/*
 * ddsketch: log-bucketed quantile sketch (see ddsketch.h for the mapping
 * and the collapse rule, schema/state-percentile.md for the bytes).
 *
 * A store keeps its counts in one zeroed array, BINS[k] holding the count
 * of index OFFSET + k. Only [MIN_INDEX, MAX_INDEX] (the non-empty range)
 * matters; the rest of the array is zero and is slack for growth, so an
 * add that lands inside the array costs no allocation:
 *
 *   offset                 min_index          max_index        offset+cap-1
 *     |  0 0 0 ... 0  |  c c c 0 c ... c c  |  0 0 ... 0  |
 *
 * An add or merge that widens the range first applies the collapse rule
 * for the new highest index (store_prepare), then makes the array cover
 * the new range (store_reserve).
 */
#include "ddsketch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

/* Bins of slack kept on top of a quarter of the range when an array grows. */
#define STORE_SLACK_BINS 16
/* Runs in one store are separated by at least one empty bin. */
#define STORE_RUNS_MAX ((DDSKETCH_MAX_BINS + 1) / 2)
/* Bytes a varint length prefix can take (buf.h). */
#define VARINT_MAX_BYTES 10
/* Sentinels of an empty store's range (min above max). */
#define STORE_EMPTY_MIN INT32_MAX
#define STORE_EMPTY_MAX INT32_MIN

struct ddsketch_store {
    uint64_t *bins;        /* owned; NULL until the first count */
    int32_t offset;        /* index of bins[0] */
    int32_t cap;           /* length of bins */
    int32_t min_index;     /* lowest non-empty bin, or STORE_EMPTY_MIN */
    int32_t max_index;     /* highest non-empty bin, or STORE_EMPTY_MAX */
    uint64_t total;        /* sum of the bins */
};

struct ddsketch {
    struct ddsketch_store positive;
    struct ddsketch_store negative;    /* by magnitude */
    uint64_t zero_count;
    uint64_t count;                    /* zero_count + both totals */
};

/* ------------------------------------------------------------------ */
/* Mapping                                                              */

int32_t
ddsketch_index(double m)
{
    double y = log(m) * DDSKETCH_INDEX_FACTOR;
    int32_t i;

    if (!(y > DDSKETCH_INDEX_MIN - 1))
        return DDSKETCH_INDEX_MIN;
    if (y > DDSKETCH_INDEX_MAX)
        return DDSKETCH_INDEX_MAX;
    i = (int32_t)y;               /* truncates towards zero */
    return i < y ? i + 1 : i;     /* ceil without a libm call */
}

double
ddsketch_bin_value(int32_t index)
{
    return 2.0 * pow(DDSKETCH_GAMMA, index) / (DDSKETCH_GAMMA + 1.0);
}

/* ------------------------------------------------------------------ */
/* Stores                                                               */

static void
store_init(struct ddsketch_store *st)
{
    st->bins = NULL;
    st->offset = 0;
    st->cap = 0;
    st->min_index = STORE_EMPTY_MIN;
    st->max_index = STORE_EMPTY_MAX;
    st->total = 0;
}

static uint64_t
store_get(const struct ddsketch_store *st, int32_t index)
{
    if (index < st->min_index || index > st->max_index)
        return 0;
    return st->bins[index - st->offset];
}

/* The bin a count of INDEX lands in under the store's current max. */
static int32_t
store_clamp(const struct ddsketch_store *st, int32_t index)
{
    int32_t lowest = st->max_index - DDSKETCH_MAX_BINS + 1;

    return index < lowest ? lowest : index;
}

/* Makes the array cover [LO, HI] (at most DDSKETCH_MAX_BINS wide), keeping
 * the counts of [min_index, max_index], which must lie inside [LO, HI]. */
static void
store_reserve(struct ddsketch_store *st, int32_t lo, int32_t hi)
{
    int32_t width = hi - lo + 1;
    int32_t cap, offset;
    uint64_t *bins;

    if (st->bins != NULL && lo >= st->offset && hi < st->offset + st->cap)
        return;
    cap = width + width / 4 + STORE_SLACK_BINS;
    if (cap < st->cap)
        cap = st->cap;
    offset = lo - (cap - width) / 2;
    bins = xcalloc((size_t)cap, sizeof(*bins));
    if (st->min_index <= st->max_index)
        memcpy(bins + (st->min_index - offset),
               st->bins + (st->min_index - st->offset),
               (size_t)(st->max_index - st->min_index + 1) * sizeof(*bins));
    free(st->bins);
    st->bins = bins;
    st->offset = offset;
    st->cap = cap;
}

/*
 * Prepares ST to receive non-zero counts at (clamped) indexes LO and HI
 * and anywhere between: applies the collapse rule for the new highest
 * index, grows the array, and sets the range to what it will be once the
 * caller has added its counts. Returns the lowest kept index; the caller
 * moves any count below it into it.
 */
static int32_t
store_prepare(struct ddsketch_store *st, int32_t lo, int32_t hi)
{
    int empty = st->total == 0;
    int32_t new_hi = !empty && st->max_index > hi ? st->max_index : hi;
    int32_t new_lo = !empty && st->min_index < lo ? st->min_index : lo;
    int32_t lowest = new_hi - DDSKETCH_MAX_BINS + 1;
    uint64_t moved = 0;

    if (new_lo < lowest)
        new_lo = lowest;
    if (!empty && st->min_index < lowest) {
        int32_t end = st->max_index < lowest ? st->max_index : lowest - 1;

        for (int32_t i = st->min_index; i <= end; i++) {
            moved += st->bins[i - st->offset];
            st->bins[i - st->offset] = 0;
        }
        if (st->max_index < lowest) {
            st->min_index = STORE_EMPTY_MIN;
            st->max_index = STORE_EMPTY_MAX;
        } else {
            st->min_index = lowest;
        }
    }
    store_reserve(st, new_lo, new_hi);
    if (moved != 0)
        st->bins[lowest - st->offset] += moved;   /* lowest == new_lo */
    st->min_index = new_lo;
    st->max_index = new_hi;
    return lowest;
}

static inline void
store_add(struct ddsketch_store *st, int32_t index, uint64_t n)
{
    if (index < st->min_index || index > st->max_index) {
        int32_t lowest = store_prepare(st, index, index);

        if (index < lowest)
            index = lowest;
    }
    st->bins[index - st->offset] += n;
    st->total += n;
}

static void
store_merge(struct ddsketch_store *dst, const struct ddsketch_store *src)
{
    int32_t lowest;

    if (src->total == 0)
        return;
    lowest = store_prepare(dst, src->min_index, src->max_index);
    for (int32_t i = src->min_index; i <= src->max_index; i++) {
        uint64_t c = src->bins[i - src->offset];

        if (c != 0)
            dst->bins[(i < lowest ? lowest : i) - dst->offset] += c;
    }
    dst->total += src->total;
}

static void
store_copy(struct ddsketch_store *dst, const struct ddsketch_store *src)
{
    *dst = *src;
    if (src->bins != NULL) {
        dst->bins = xmalloc((size_t)src->cap * sizeof(*dst->bins));
        memcpy(dst->bins, src->bins, (size_t)src->cap * sizeof(*dst->bins));
    }
}

static int
store_equal(const struct ddsketch_store *a, const struct ddsketch_store *b)
{
    if (a->total != b->total || a->min_index != b->min_index
        || a->max_index != b->max_index)
        return 0;
    for (int32_t i = a->min_index; i <= a->max_index; i++)
        if (store_get(a, i) != store_get(b, i))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Lifecycle, add, merge, queries                                       */

struct ddsketch *
ddsketch_create(void)
{
    struct ddsketch *s = xmalloc(sizeof(*s));

    store_init(&s->positive);
    store_init(&s->negative);
    s->zero_count = 0;
    s->count = 0;
    return s;
}

void
ddsketch_destroy(struct ddsketch *s)
{
    if (s == NULL)
        return;
    free(s->positive.bins);
    free(s->negative.bins);
    free(s);
}

struct ddsketch *
ddsketch_clone(const struct ddsketch *s)
{
    struct ddsketch *c = xmalloc(sizeof(*c));

    store_copy(&c->positive, &s->positive);
    store_copy(&c->negative, &s->negative);
    c->zero_count = s->zero_count;
    c->count = s->count;
    return c;
}

int
ddsketch_add_count(struct ddsketch *s, double x, uint64_t n)
{
    if (!(fabs(x) <= DDSKETCH_VALUE_MAX) || n > DDSKETCH_COUNT_MAX - s->count)
        return -1;
    if (n == 0)
        return 0;
    if (x >= DDSKETCH_MIN_INDEXABLE)
        store_add(&s->positive, ddsketch_index(x), n);
    else if (x <= -DDSKETCH_MIN_INDEXABLE)
        store_add(&s->negative, ddsketch_index(-x), n);
    else
        s->zero_count += n;
    s->count += n;
    return 0;
}

int
ddsketch_add(struct ddsketch *s, double x)
{
    return ddsketch_add_count(s, x, 1);
}

int
ddsketch_merge(struct ddsketch *dst, const struct ddsketch *src)
{
    if (src->count > DDSKETCH_COUNT_MAX - dst->count)
        return -1;
    if (dst == src) {
        struct ddsketch *copy = ddsketch_clone(src);
        int rc = ddsketch_merge(dst, copy);

        ddsketch_destroy(copy);
        return rc;
    }
    store_merge(&dst->positive, &src->positive);
    store_merge(&dst->negative, &src->negative);
    dst->zero_count += src->zero_count;
    dst->count += src->count;
    return 0;
}

uint64_t
ddsketch_count(const struct ddsketch *s)
{
    return s->count;
}

int
ddsketch_empty(const struct ddsketch *s)
{
    return s->count == 0;
}

int
ddsketch_equal(const struct ddsketch *a, const struct ddsketch *b)
{
    return a->count == b->count && a->zero_count == b->zero_count
           && store_equal(&a->positive, &b->positive)
           && store_equal(&a->negative, &b->negative);
}

uint64_t
ddsketch_bin_count(const struct ddsketch *s, int negative, int32_t index)
{
    return store_get(negative ? &s->negative : &s->positive, index);
}

uint64_t
ddsketch_zero_count(const struct ddsketch *s)
{
    return s->zero_count;
}

double
ddsketch_quantile_at_rank(const struct ddsketch *s, uint64_t rank)
{
    const struct ddsketch_store *neg = &s->negative, *pos = &s->positive;
    uint64_t seen = 0;

    if (rank == 0 || rank > s->count)
        return NAN;
    if (rank <= neg->total) {
        for (int32_t i = neg->max_index; i >= neg->min_index; i--) {
            seen += neg->bins[i - neg->offset];
            if (seen >= rank)
                return -ddsketch_bin_value(i);
        }
    }
    rank -= neg->total;
    if (rank <= s->zero_count)
        return 0.0;
    rank -= s->zero_count;
    for (int32_t i = pos->min_index; i <= pos->max_index; i++) {
        seen += pos->bins[i - pos->offset];
        if (seen >= rank)
            return ddsketch_bin_value(i);
    }
    return NAN;   /* unreachable while the totals are consistent */
}

/* -1 negative, 0 zero, 1 positive: where ddsketch_add puts V. */
static int
value_class(double v)
{
    return v >= DDSKETCH_MIN_INDEXABLE ? 1
           : v <= -DDSKETCH_MIN_INDEXABLE ? -1 : 0;
}

int
ddsketch_extremes_consistent(const struct ddsketch *s, double min, double max)
{
    const struct ddsketch_store *neg = &s->negative, *pos = &s->positive;
    int low, high;

    if (s->count == 0 || !(fabs(min) <= DDSKETCH_VALUE_MAX)
        || !(fabs(max) <= DDSKETCH_VALUE_MAX) || min > max
        || (s->count == 1 && min != max))
        return 0;
    low = neg->total != 0 ? -1 : s->zero_count != 0 ? 0 : 1;
    high = pos->total != 0 ? 1 : s->zero_count != 0 ? 0 : -1;
    if (value_class(min) != low || value_class(max) != high)
        return 0;
    if (high == 1 && ddsketch_index(max) != pos->max_index)
        return 0;
    if (low == -1 && ddsketch_index(-min) != neg->max_index)
        return 0;
    if (low == 1 && store_clamp(pos, ddsketch_index(min)) != pos->min_index)
        return 0;
    if (high == -1
        && store_clamp(neg, ddsketch_index(-max)) != neg->min_index)
        return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Encoding                                                             */

static size_t
varint_size(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/*
 * Whether GAP empty bins between a bin of count LAST and the next non-empty
 * bin (count NEXT) cost fewer bytes written as zero counts inside the run
 * than as the start of a new run (gap varint, length varint taken as one
 * byte, first count). Ties bridge.
 */
static int
bridge_cheaper(uint64_t last, int32_t gap, uint64_t next)
{
    size_t bridged = varint_size(buf_zigzag(-(int64_t)last)) + (size_t)gap - 1
                     + varint_size(buf_zigzag((int64_t)next));
    size_t separate = varint_size((uint64_t)gap - 1) + 1 + varint_size(next);

    return bridged <= separate;
}

/* The last bin of the run that starts at non-empty bin START. */
static int32_t
store_run_end(const struct ddsketch_store *st, int32_t start)
{
    int32_t last = start;

    for (int32_t i = start + 1; i <= st->max_index; i++) {
        uint64_t c = store_get(st, i);

        if (c == 0)
            continue;
        if (i != last + 1 && !bridge_cheaper(store_get(st, last), i - last - 1, c))
            break;
        last = i;
    }
    return last;
}

/* The first non-empty bin after END (max_index + 1 if none). */
static int32_t
store_next_start(const struct ddsketch_store *st, int32_t end)
{
    int32_t i = end + 1;

    while (i <= st->max_index && store_get(st, i) == 0)
        i++;
    return i;
}

static void
store_encode(const struct ddsketch_store *st, struct buf_writer *out)
{
    uint64_t runs = 0;
    int32_t start, end, prev_end = 0;

    if (st->total == 0) {
        buf_put_varint(out, 0);
        return;
    }
    for (start = st->min_index; start <= st->max_index;
         start = store_next_start(st, store_run_end(st, start)))
        runs++;
    buf_put_varint(out, runs);
    for (start = st->min_index; start <= st->max_index;
         start = store_next_start(st, end)) {
        uint64_t prev = 0;

        end = store_run_end(st, start);
        if (start == st->min_index)
            buf_put_svarint(out, start);
        else
            buf_put_varint(out, (uint64_t)(start - prev_end - 2));
        buf_put_varint(out, (uint64_t)(end - start + 1));
        for (int32_t i = start; i <= end; i++) {
            uint64_t c = store_get(st, i);

            if (i == start)
                buf_put_varint(out, c);
            else
                buf_put_svarint(out, (int64_t)c - (int64_t)prev);
            prev = c;
        }
        prev_end = end;
    }
}

void
ddsketch_encode(const struct ddsketch *s, struct buf_writer *out)
{
    size_t start = out->len, body, prefix;
    uint8_t length[VARINT_MAX_BYTES];

    buf_put_varint(out, s->zero_count);
    store_encode(&s->positive, out);
    store_encode(&s->negative, out);
    /* Append the body length, then rotate it in front of the body. */
    body = out->len - start;
    buf_put_varint(out, body);
    prefix = out->len - start - body;
    memcpy(length, out->data + start + body, prefix);
    memmove(out->data + start + prefix, out->data + start, body);
    memcpy(out->data + start, length, prefix);
}

/* Reads one count of a run: the first as a varint, the others as a zigzag
 * delta from PREV. 0, or -1 if malformed or above DDSKETCH_COUNT_MAX. */
static int
read_count(struct buf_reader *in, int first, uint64_t prev, uint64_t *count)
{
    uint64_t c;
    int64_t delta;

    if (first) {
        if (buf_get_varint(in, &c) != 0)
            return -1;
    } else {
        if (buf_get_svarint(in, &delta) != 0)
            return -1;
        /* prev <= DDSKETCH_COUNT_MAX < 2^63, so these cannot overflow */
        if (delta < -(int64_t)prev
            || (delta > 0 && (uint64_t)delta > DDSKETCH_COUNT_MAX - prev))
            return -1;
        c = (uint64_t)((int64_t)prev + delta);
    }
    if (c > DDSKETCH_COUNT_MAX)
        return -1;
    *count = c;
    return 0;
}

/* Decodes one store into the empty ST, adding its counts to *TOTAL (which
 * must stay within DDSKETCH_COUNT_MAX). 0, or -1. */
static int
store_decode(struct ddsketch_store *st, struct buf_reader *in, uint64_t *total)
{
    uint64_t runs, gap, len;
    int64_t start, end, first_start = 0, prev_end = 0;

    if (buf_get_varint(in, &runs) != 0 || runs > STORE_RUNS_MAX
        || runs > buf_remaining(in))
        return -1;
    for (uint64_t k = 0; k < runs; k++) {
        uint64_t prev = 0;

        if (k == 0) {
            if (buf_get_svarint(in, &start) != 0 || start < DDSKETCH_INDEX_MIN
                || start > DDSKETCH_INDEX_MAX)
                return -1;
            first_start = start;
        } else {
            if (buf_get_varint(in, &gap) != 0
                || prev_end + 2 > DDSKETCH_INDEX_MAX
                || gap > (uint64_t)(DDSKETCH_INDEX_MAX - prev_end - 2))
                return -1;
            start = prev_end + 2 + (int64_t)gap;
        }
        if (buf_get_varint(in, &len) != 0 || len == 0
            || len > DDSKETCH_MAX_BINS || len > buf_remaining(in))
            return -1;
        end = start + (int64_t)len - 1;
        if (end > DDSKETCH_INDEX_MAX || end - first_start >= DDSKETCH_MAX_BINS)
            return -1;
        store_reserve(st, (int32_t)first_start, (int32_t)end);
        for (int64_t i = start; i <= end; i++) {
            uint64_t c;

            if (read_count(in, i == start, prev, &c) != 0
                || (c == 0 && (i == start || i == end))
                || c > DDSKETCH_COUNT_MAX - *total)
                return -1;
            st->bins[i - st->offset] = c;
            st->total += c;
            *total += c;
            prev = c;
        }
        st->min_index = (int32_t)first_start;
        st->max_index = (int32_t)end;
        prev_end = end;
    }
    return 0;
}

struct ddsketch *
ddsketch_decode(struct buf_reader *in)
{
    struct ddsketch *s = NULL;
    struct buf_reader body;
    const uint8_t *p;
    uint64_t len, total;

    if (buf_get_varint(in, &len) != 0 || len > buf_remaining(in)
        || buf_get_bytes(in, &p, (size_t)len) != 0)
        goto fail;
    buf_reader_init(&body, p, (size_t)len);
    s = ddsketch_create();
    if (buf_get_varint(&body, &s->zero_count) != 0
        || s->zero_count > DDSKETCH_COUNT_MAX)
        goto fail;
    total = s->zero_count;
    if (store_decode(&s->positive, &body, &total) != 0
        || store_decode(&s->negative, &body, &total) != 0
        || buf_remaining(&body) != 0)
        goto fail;
    s->count = total;
    return s;

fail:
    ddsketch_destroy(s);
    return NULL;
}
