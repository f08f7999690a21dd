/*
 * slotmap: slot function, default and rebalanced maps, and the text form.
 *
 *   rebalance(old, M'):
 *     targets   floor(4096/M') for all, +1 for the (4096 mod M') instances
 *               that own the most slots now (ties: lower instance)
 *     release   every slot of an instance >= M'; the highest slots of an
 *               instance above its target, down to the target
 *     assign    released slots in ascending order to the instances below
 *               target, in ascending instance order
 *
 *   parse:  header lines ("tally-slotmap 1", "version", "instances"), then
 *           "<first>-<last> <instance>" / "<slot> <instance>" lines; every
 *           slot exactly once. '#' comments and blank lines are skipped.
 */
#include "slotmap.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errmsg.h"
#include "hash.h"
#include "number.h"
#include "xalloc.h"

/* Tokens on one line of the text form: at most "<range> <instance>" or
 * "tally-slotmap 1"; one more slot catches junk after them. */
#define SLOTMAP_LINE_TOKENS 3
/* Longest formatted line: "4095-4095 1023\n" and the header lines fit. */
#define SLOTMAP_LINE_MAX 64
/* Marks a slot that no line has assigned yet while parsing. */
#define SLOTMAP_UNASSIGNED UINT16_MAX

/* ---- maps ----------------------------------------------------------- */

uint16_t
slotmap_slot(const char *name, size_t len)
{
    return (uint16_t)(hash_fnv1a64(name, len) % SLOTMAP_SLOTS);
}

struct slotmap *
slotmap_create_default(uint32_t instances, uint64_t version)
{
    struct slotmap *map;

    if (instances < 1 || instances > SLOTMAP_INSTANCES_MAX || version < 1)
        return NULL;
    map = xmalloc(sizeof(*map));
    map->version = version;
    map->instances = instances;
    for (uint32_t s = 0; s < SLOTMAP_SLOTS; s++)
        map->owner[s] = (uint16_t)((uint64_t)s * instances / SLOTMAP_SLOTS);
    return map;
}

void
slotmap_destroy(struct slotmap *map)
{
    free(map);
}

uint16_t
slotmap_owner(const struct slotmap *map, uint16_t slot)
{
    assert(slot < SLOTMAP_SLOTS);
    return map->owner[slot];
}

size_t
slotmap_slots_owned(const struct slotmap *map, uint32_t instance)
{
    size_t n = 0;

    for (size_t s = 0; s < SLOTMAP_SLOTS; s++)
        n += map->owner[s] == instance;
    return n;
}

size_t
slotmap_moved(const struct slotmap *a, const struct slotmap *b)
{
    size_t n = 0;

    for (size_t s = 0; s < SLOTMAP_SLOTS; s++)
        n += a->owner[s] != b->owner[s];
    return n;
}

int
slotmap_equal(const struct slotmap *a, const struct slotmap *b)
{
    return a->version == b->version && a->instances == b->instances
           && memcmp(a->owner, b->owner, sizeof(a->owner)) == 0;
}

struct slotmap_rank {
    uint32_t instance;
    uint32_t count;
};

/* Most slots first; ties by lower instance. */
static int
slotmap_rank_compare(const void *pa, const void *pb)
{
    const struct slotmap_rank *a = pa, *b = pb;

    if (a->count != b->count)
        return a->count > b->count ? -1 : 1;
    return a->instance < b->instance ? -1 : a->instance > b->instance;
}

struct slotmap *
slotmap_rebalance(const struct slotmap *old, uint32_t new_m)
{
    uint32_t count[SLOTMAP_INSTANCES_MAX] = { 0 };
    uint32_t target[SLOTMAP_INSTANCES_MAX] = { 0 };
    struct slotmap_rank rank[SLOTMAP_INSTANCES_MAX];
    uint16_t pool[SLOTMAP_SLOTS];
    uint8_t released[SLOTMAP_SLOTS] = { 0 };
    size_t pooled = 0, next = 0;
    uint32_t base, extra;
    struct slotmap *map;

    if (new_m < 1 || new_m > SLOTMAP_INSTANCES_MAX
        || old->version == UINT64_MAX || old->instances < 1
        || old->instances > SLOTMAP_INSTANCES_MAX)
        return NULL;
    for (size_t s = 0; s < SLOTMAP_SLOTS; s++) {
        if (old->owner[s] >= old->instances)
            return NULL;          /* not a map slotmap_* made */
        count[old->owner[s]]++;
    }
    base = SLOTMAP_SLOTS / new_m;
    extra = SLOTMAP_SLOTS % new_m;
    for (uint32_t i = 0; i < new_m; i++) {
        rank[i].instance = i;
        rank[i].count = count[i];
    }
    qsort(rank, new_m, sizeof(rank[0]), slotmap_rank_compare);
    for (uint32_t i = 0; i < new_m; i++)
        target[rank[i].instance] = base + (i < extra ? 1 : 0);

    /* Release from the top, so an over-target instance keeps its lowest
     * slots; instances >= NEW_M have a target of 0 and release all. */
    for (size_t s = SLOTMAP_SLOTS; s-- > 0;) {
        uint16_t o = old->owner[s];

        if (count[o] > target[o]) {
            count[o]--;
            released[s] = 1;
        }
    }
    for (size_t s = 0; s < SLOTMAP_SLOTS; s++) {
        if (released[s])
            pool[pooled++] = (uint16_t)s;
    }

    map = xmalloc(sizeof(*map));
    map->version = old->version + 1;
    map->instances = new_m;
    memcpy(map->owner, old->owner, sizeof(map->owner));
    for (uint32_t i = 0; i < new_m; i++) {
        while (count[i] < target[i]) {
            assert(next < pooled);
            map->owner[pool[next++]] = (uint16_t)i;
            count[i]++;
        }
    }
    assert(next == pooled);
    return map;
}

/* ---- text form ------------------------------------------------------ */

struct slotmap_line {
    size_t number;                          /* 1-based */
    const char *tok[SLOTMAP_LINE_TOKENS];
    size_t tok_len[SLOTMAP_LINE_TOKENS];
    size_t ntok;                            /* may exceed the array */
};

struct slotmap_text {
    const char *p;
    size_t len;
    size_t pos;
    size_t line_number;
};

static int
slotmap_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

/* Moves to the next line that is neither blank nor a comment and splits it
 * into tokens. 0, or 1 at the end of the text. */
static int
slotmap_next_line(struct slotmap_text *t, struct slotmap_line *line)
{
    while (t->pos < t->len) {
        const char *start = t->p + t->pos;
        const char *nl = memchr(start, '\n', t->len - t->pos);
        size_t n = nl != NULL ? (size_t)(nl - start) : t->len - t->pos;
        size_t i = 0;

        t->pos += n + (nl != NULL);
        t->line_number++;
        memset(line, 0, sizeof(*line));
        line->number = t->line_number;
        while (i < n) {
            size_t b;

            while (i < n && slotmap_is_space(start[i]))
                i++;
            if (i == n)
                break;
            if (line->ntok == 0 && start[i] == '#')
                break;
            b = i;
            while (i < n && !slotmap_is_space(start[i]))
                i++;
            if (line->ntok < SLOTMAP_LINE_TOKENS) {
                line->tok[line->ntok] = start + b;
                line->tok_len[line->ntok] = i - b;
            }
            line->ntok++;
        }
        if (line->ntok > 0)
            return 0;
    }
    return 1;
}

static int
slotmap_token_is(const struct slotmap_line *line, size_t i, const char *word)
{
    return line->tok_len[i] == strlen(word)
           && memcmp(line->tok[i], word, line->tok_len[i]) == 0;
}

/* A decimal number without sign or junk, fitting 64 bits. */
static int
slotmap_number(const struct slotmap_line *line, const char *s, size_t len,
               uint64_t *v, char *err, size_t errlen)
{
    if (number_parse_uint64(s, len, v) != 0) {
        errmsg_say(err, errlen, "line %zu: bad number \"%.*s\"",
                    line->number, (int)(len > 32 ? 32 : len), s);
        return -1;
    }
    return 0;
}

/* A header line "<word> <number>". */
static int
slotmap_header_line(struct slotmap_text *t, const char *word,
                    const char *shape, uint64_t *v, char *err, size_t errlen)
{
    struct slotmap_line line;

    if (slotmap_next_line(t, &line) != 0) {
        errmsg_say(err, errlen, "missing \"%s\" line", shape);
        return -1;
    }
    if (line.ntok != 2 || !slotmap_token_is(&line, 0, word)) {
        errmsg_say(err, errlen, "line %zu: expected \"%s\"", line.number,
                    shape);
        return -1;
    }
    return slotmap_number(&line, line.tok[1], line.tok_len[1], v, err,
                          errlen);
}

static int
slotmap_parse_header(struct slotmap_text *t, struct slotmap *map, char *err,
                     size_t errlen)
{
    uint64_t v;

    if (slotmap_header_line(t, SLOTMAP_MAGIC, "tally-slotmap 1", &v, err,
                            errlen) != 0)
        return -1;
    if (v != SLOTMAP_FORMAT_VERSION) {
        errmsg_say(err, errlen, "line %zu: unsupported format version %llu",
                    t->line_number, (unsigned long long)v);
        return -1;
    }
    if (slotmap_header_line(t, "version", "version <n>", &map->version, err,
                            errlen) != 0)
        return -1;
    if (map->version < 1) {
        errmsg_say(err, errlen, "line %zu: version 0 out of range",
                    t->line_number);
        return -1;
    }
    if (slotmap_header_line(t, "instances", "instances <M>", &v, err,
                            errlen) != 0)
        return -1;
    if (v < 1 || v > SLOTMAP_INSTANCES_MAX) {
        errmsg_say(err, errlen, "line %zu: instances %llu out of range 1..%d",
                    t->line_number, (unsigned long long)v,
                    SLOTMAP_INSTANCES_MAX);
        return -1;
    }
    map->instances = (uint32_t)v;
    return 0;
}

/* "<first>-<last> <instance>" or "<slot> <instance>". */
static int
slotmap_parse_assignment(const struct slotmap_line *line, struct slotmap *map,
                         char *err, size_t errlen)
{
    const char *range = line->tok[0];
    size_t range_len = line->tok_len[0];
    const char *dash;
    uint64_t first, last, instance;

    if (line->ntok != 2) {
        errmsg_say(err, errlen, "line %zu: expected \"<first>-<last> "
                    "<instance>\" or \"<slot> <instance>\"", line->number);
        return -1;
    }
    dash = memchr(range, '-', range_len);
    if (dash != NULL) {
        size_t a = (size_t)(dash - range);

        if (slotmap_number(line, range, a, &first, err, errlen) != 0
            || slotmap_number(line, dash + 1, range_len - a - 1, &last, err,
                              errlen) != 0)
            return -1;
    } else {
        if (slotmap_number(line, range, range_len, &first, err, errlen) != 0)
            return -1;
        last = first;
    }
    if (slotmap_number(line, line->tok[1], line->tok_len[1], &instance, err,
                       errlen) != 0)
        return -1;
    if (first >= SLOTMAP_SLOTS || last >= SLOTMAP_SLOTS) {
        errmsg_say(err, errlen, "line %zu: slot %llu out of range",
                    line->number,
                    (unsigned long long)(first >= SLOTMAP_SLOTS ? first
                                                                : last));
        return -1;
    }
    if (first > last) {
        errmsg_say(err, errlen, "line %zu: range %llu-%llu reversed",
                    line->number, (unsigned long long)first,
                    (unsigned long long)last);
        return -1;
    }
    if (instance >= map->instances) {
        errmsg_say(err, errlen, "line %zu: instance %llu out of range "
                    "(instances %u)", line->number,
                    (unsigned long long)instance, map->instances);
        return -1;
    }
    for (uint64_t s = first; s <= last; s++) {
        if (map->owner[s] != SLOTMAP_UNASSIGNED) {
            errmsg_say(err, errlen, "line %zu: slot %llu assigned twice",
                        line->number, (unsigned long long)s);
            return -1;
        }
        map->owner[s] = (uint16_t)instance;
    }
    return 0;
}

struct slotmap *
slotmap_parse(const char *text, size_t len, char *err, size_t errlen)
{
    struct slotmap_text t = { .p = text, .len = len };
    struct slotmap_line line;
    struct slotmap *map;

    if (len > SLOTMAP_TEXT_MAX) {
        errmsg_say(err, errlen, "slot map text of %zu bytes exceeds %d", len,
                    SLOTMAP_TEXT_MAX);
        return NULL;
    }
    map = xmalloc(sizeof(*map));
    for (size_t s = 0; s < SLOTMAP_SLOTS; s++)
        map->owner[s] = SLOTMAP_UNASSIGNED;
    if (slotmap_parse_header(&t, map, err, errlen) != 0)
        goto fail;
    while (slotmap_next_line(&t, &line) == 0) {
        if (slotmap_parse_assignment(&line, map, err, errlen) != 0)
            goto fail;
    }
    for (size_t s = 0; s < SLOTMAP_SLOTS; s++) {
        if (map->owner[s] == SLOTMAP_UNASSIGNED) {
            errmsg_say(err, errlen, "slot %zu not assigned", s);
            goto fail;
        }
    }
    return map;

fail:
    free(map);
    return NULL;
}

void
slotmap_format(const struct slotmap *map, struct buf_writer *out)
{
    char line[SLOTMAP_LINE_MAX];
    int n;
    size_t first = 0;

    n = snprintf(line, sizeof(line), "%s %d\nversion %llu\ninstances %u\n",
                 SLOTMAP_MAGIC, SLOTMAP_FORMAT_VERSION,
                 (unsigned long long)map->version, map->instances);
    buf_put_bytes(out, line, (size_t)n);
    for (size_t s = 1; s <= SLOTMAP_SLOTS; s++) {
        if (s < SLOTMAP_SLOTS && map->owner[s] == map->owner[first])
            continue;
        if (s - 1 == first)
            n = snprintf(line, sizeof(line), "%zu %u\n", first,
                         (unsigned)map->owner[first]);
        else
            n = snprintf(line, sizeof(line), "%zu-%zu %u\n", first, s - 1,
                         (unsigned)map->owner[first]);
        buf_put_bytes(out, line, (size_t)n);
        first = s;
    }
}

struct slotmap *
slotmap_load(const char *path, char *err, size_t errlen)
{
    FILE *f;
    char *text = NULL;
    size_t len;
    struct slotmap *map = NULL;
    char why[SLOTMAP_ERR_MAX];

    f = fopen(path, "rb");
    if (f == NULL) {
        errmsg_say(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    /* One byte more than allowed, to tell "too large" from "just fits". */
    text = xmalloc((size_t)SLOTMAP_TEXT_MAX + 1);
    len = fread(text, 1, (size_t)SLOTMAP_TEXT_MAX + 1, f);
    if (ferror(f)) {
        errmsg_say(err, errlen, "%s: read error", path);
        goto done;
    }
    if (len > SLOTMAP_TEXT_MAX) {
        errmsg_say(err, errlen, "%s: larger than %d bytes", path,
                    SLOTMAP_TEXT_MAX);
        goto done;
    }
    map = slotmap_parse(text, len, why, sizeof(why));
    if (map == NULL)
        errmsg_say(err, errlen, "%s: %s", path, why);

done:
    free(text);
    fclose(f);
    return map;
}
