/*
 * test_slotmap: the slot function against known FNV-1a-64 values and the
 * vectors of schema/slot-vectors.tsv; default maps are balanced; rebalance
 * moves only what balance needs (growing and shrinking); the text form
 * round trips and every parse error names its cause exactly.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "hash.h"
#include "slotmap.h"
#include "testrand.h"

#ifndef SCHEMA_DIR
#define SCHEMA_DIR "schema"
#endif

#define ERRLEN 256
#define VECTOR_ROWS_MIN 30
#define VECTOR_LINE_MAX 512
#define DEFAULT_M_MAX 64
#define GROW_M_MAX 16

/* ---- helpers -------------------------------------------------------- */

static size_t
ceil_div(size_t a, size_t b)
{
    return (a + b - 1) / b;
}

/* Every slot owned by an instance < M, and counts within floor..ceil. */
static void
assert_balanced(const struct slotmap *map)
{
    size_t lo = SLOTMAP_SLOTS / map->instances;
    size_t hi = ceil_div(SLOTMAP_SLOTS, map->instances);
    size_t total = 0;

    for (size_t s = 0; s < SLOTMAP_SLOTS; s++)
        assert_true(map->owner[s] < map->instances);
    for (uint32_t i = 0; i < map->instances; i++) {
        size_t n = slotmap_slots_owned(map, i);

        assert_in_range(n, lo, hi);
        total += n;
    }
    assert_int_equal(total, SLOTMAP_SLOTS);
}

static struct slotmap *
parse_ok(const char *text)
{
    char err[ERRLEN] = "";
    struct slotmap *map = slotmap_parse(text, strlen(text), err, sizeof(err));

    if (map == NULL)
        fail_msg("unexpected parse error: %s", err);
    return map;
}

static void
assert_parse_error(const char *text, const char *expected)
{
    char err[ERRLEN] = "";

    assert_null(slotmap_parse(text, strlen(text), err, sizeof(err)));
    assert_string_equal(err, expected);
}

/* ---- slot function -------------------------------------------------- */

static void
test_fnv_known_values(void **unused)
{
    (void)unused;
    assert_true(hash_fnv1a64("", 0) == 0xcbf29ce484222325ULL);
    assert_true(hash_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(hash_fnv1a64("foobar", 6) == 0x85944171f73967e8ULL);
    assert_int_equal(slotmap_slot("a", 1), 0xaf63dc4c8601ec8cULL % 4096);
    assert_int_equal(slotmap_slot("foobar", 6), 0x7e8);
    assert_int_equal(slotmap_slot("", 0), 0x325);
}

static void
test_vectors_file(void **unused)
{
    const char *path = SCHEMA_DIR "/slot-vectors.tsv";
    FILE *f = fopen(path, "r");
    char line[VECTOR_LINE_MAX];
    size_t rows = 0, longest = 0;

    (void)unused;
    if (f == NULL)
        fail_msg("cannot open %s", path);
    assert_non_null(fgets(line, sizeof(line), f));
    assert_string_equal(line, "name\tfnv1a64\tslot\n");
    while (fgets(line, sizeof(line), f) != NULL) {
        char *tab1 = strchr(line, '\t'), *tab2, *end;
        unsigned long long h;
        unsigned long slot;
        size_t len;

        assert_non_null(tab1);
        tab2 = strchr(tab1 + 1, '\t');
        assert_non_null(tab2);
        assert_int_equal(tab2 - tab1 - 1, 16);
        len = (size_t)(tab1 - line);
        assert_in_range(len, 1, 200);
        h = strtoull(tab1 + 1, &end, 16);
        assert_ptr_equal(end, tab2);
        slot = strtoul(tab2 + 1, &end, 10);
        assert_string_equal(end, "\n");
        assert_true(hash_fnv1a64(line, len) == h);
        assert_int_equal(slotmap_slot(line, len), slot);
        if (len > longest)
            longest = len;
        rows++;
    }
    fclose(f);
    assert_true(rows >= VECTOR_ROWS_MIN);
    assert_int_equal(longest, 200);
}

/* ---- maps ----------------------------------------------------------- */

static void
test_default_balanced(void **unused)
{
    (void)unused;
    assert_null(slotmap_create_default(0, 1));
    assert_null(slotmap_create_default(SLOTMAP_INSTANCES_MAX + 1, 1));
    assert_null(slotmap_create_default(1, 0));
    for (uint32_t m = 1; m <= DEFAULT_M_MAX; m++) {
        struct slotmap *map = slotmap_create_default(m, 5);

        assert_non_null(map);
        assert_true(map->version == 5);
        assert_int_equal(map->instances, m);
        assert_balanced(map);
        for (uint16_t s = 0; s < SLOTMAP_SLOTS; s++) {
            assert_int_equal(slotmap_owner(map, s), (size_t)s * m / 4096);
            if (s > 0)     /* contiguous ranges */
                assert_true(map->owner[s] >= map->owner[s - 1]);
        }
        slotmap_destroy(map);
    }
    {
        struct slotmap *map = slotmap_create_default(SLOTMAP_INSTANCES_MAX, 1);

        assert_balanced(map);
        assert_int_equal(slotmap_owner(map, 4095), 1023);
        slotmap_destroy(map);
    }
}

/* M -> M+1, from the default map and along a chain of rebalances. */
static void
test_rebalance_grow(void **unused)
{
    struct slotmap *chain = slotmap_create_default(1, 1);

    (void)unused;
    for (uint32_t m = 1; m <= GROW_M_MAX; m++) {
        struct slotmap *def = slotmap_create_default(m, 10);
        const struct slotmap *olds[] = { def, chain };

        for (size_t k = 0; k < 2; k++) {
            const struct slotmap *old = olds[k];
            struct slotmap *next = slotmap_rebalance(old, m + 1);
            size_t moved;

            assert_non_null(next);
            assert_true(next->version == old->version + 1);
            assert_int_equal(next->instances, m + 1);
            assert_balanced(next);
            moved = slotmap_moved(old, next);
            assert_true(moved <= ceil_div(SLOTMAP_SLOTS, m + 1));
            /* Every moved slot went to the new instance, which got nothing
             * else. */
            for (size_t s = 0; s < SLOTMAP_SLOTS; s++) {
                if (old->owner[s] != next->owner[s])
                    assert_int_equal(next->owner[s], m);
            }
            assert_int_equal(slotmap_slots_owned(next, m), moved);
            if (k == 1) {
                slotmap_destroy(chain);
                chain = next;
            } else {
                slotmap_destroy(next);
            }
        }
        slotmap_destroy(def);
    }
    assert_true(chain->version == 1 + GROW_M_MAX);
    slotmap_destroy(chain);

    /* Large M, where old counts straddle the new floor and ceil: the ceil
     * targets must go to the instances that already hold more. */
    {
        static const uint32_t large[] = { 100, 333, 500, 999, 1000, 1023 };

        for (size_t i = 0; i < sizeof(large) / sizeof(large[0]); i++) {
            struct slotmap *a = slotmap_create_default(large[i], 1);
            struct slotmap *b = slotmap_rebalance(a, large[i] + 1);

            assert_balanced(b);
            assert_true(slotmap_moved(a, b)
                        <= ceil_div(SLOTMAP_SLOTS, large[i] + 1));
            assert_int_equal(slotmap_moved(a, b),
                             slotmap_slots_owned(b, large[i]));
            slotmap_destroy(b);
            slotmap_destroy(a);
        }
    }

    /* Exact figures for the default maps. */
    {
        struct slotmap *a = slotmap_create_default(3, 1);
        struct slotmap *b = slotmap_rebalance(a, 4);

        assert_int_equal(slotmap_moved(a, b), 1024);
        assert_null(slotmap_rebalance(a, 0));
        assert_null(slotmap_rebalance(a, SLOTMAP_INSTANCES_MAX + 1));
        a->version = UINT64_MAX;
        assert_null(slotmap_rebalance(a, 4));
        a->version = 1;
        a->owner[0] = 3;              /* owner >= instances: malformed */
        assert_null(slotmap_rebalance(a, 4));
        slotmap_destroy(b);
        slotmap_destroy(a);
    }
}

/* M -> M-1 moves exactly the removed instance's slots when the map was
 * balanced, and unbalanced maps become balanced. */
static void
test_rebalance_shrink(void **unused)
{
    struct slotmap *chain = slotmap_create_default(GROW_M_MAX + 1, 1);

    (void)unused;
    for (uint32_t m = GROW_M_MAX + 1; m >= 2; m--) {
        struct slotmap *def = slotmap_create_default(m, 3);
        const struct slotmap *olds[] = { def, chain };

        for (size_t k = 0; k < 2; k++) {
            const struct slotmap *old = olds[k];
            struct slotmap *next = slotmap_rebalance(old, m - 1);
            size_t removed = slotmap_slots_owned(old, m - 1);

            assert_non_null(next);
            assert_true(next->version == old->version + 1);
            assert_int_equal(next->instances, m - 1);
            assert_balanced(next);
            assert_int_equal(slotmap_moved(old, next), removed);
            for (size_t s = 0; s < SLOTMAP_SLOTS; s++) {
                if (old->owner[s] != next->owner[s])
                    assert_int_equal(old->owner[s], m - 1);
            }
            if (k == 1) {
                slotmap_destroy(chain);
                chain = next;
            } else {
                slotmap_destroy(next);
            }
        }
        slotmap_destroy(def);
    }
    assert_int_equal(chain->instances, 1);
    slotmap_destroy(chain);

    /* An unbalanced map: instance 0 holds everything of 4. Only its excess
     * moves; a rebalance to the same M of a balanced map moves nothing. */
    {
        struct slotmap *skew = parse_ok("tally-slotmap 1\nversion 9\n"
                                        "instances 4\n0-4095 0\n");
        struct slotmap *fixed = slotmap_rebalance(skew, 4);
        struct slotmap *again = slotmap_rebalance(fixed, 4);

        assert_balanced(fixed);
        assert_int_equal(slotmap_moved(skew, fixed), 3072);
        /* Instance 0 keeps its lowest slots. */
        for (uint16_t s = 0; s < 1024; s++)
            assert_int_equal(slotmap_owner(fixed, s), 0);
        assert_int_equal(slotmap_moved(fixed, again), 0);
        assert_true(again->version == 11);
        slotmap_destroy(again);
        slotmap_destroy(fixed);
        slotmap_destroy(skew);
    }
}

/* ---- text form ------------------------------------------------------ */

static void
test_format_parse_round_trip(void **unused)
{
    struct buf_writer w;
    struct slotmap *map, *back, *next;
    struct testrand r;
    char err[ERRLEN];
    static const char expected4[] = "tally-slotmap 1\nversion 3\n"
                                    "instances 4\n0-1023 0\n1024-2047 1\n"
                                    "2048-3071 2\n3072-4095 3\n";

    (void)unused;
    buf_writer_create(&w, 0);
    map = slotmap_create_default(4, 3);
    slotmap_format(map, &w);
    assert_int_equal(w.len, strlen(expected4));
    assert_memory_equal(w.data, expected4, w.len);
    map->owner[5] = 1;
    map->owner[4095] = 0;
    buf_writer_reset(&w);
    slotmap_format(map, &w);
    buf_put_u8(&w, 0);
    assert_string_equal((const char *)w.data,
                        "tally-slotmap 1\nversion 3\ninstances 4\n0-4 0\n5 1\n"
                        "6-1023 0\n1024-2047 1\n2048-3071 2\n3072-4094 3\n"
                        "4095 0\n");
    slotmap_destroy(map);

    /* Default, rebalanced and random maps come back equal. */
    testrand_seed(&r, 7);
    map = slotmap_create_default(1, 1);
    for (uint32_t m = 2; m <= 40; m++) {
        struct slotmap *rnd = slotmap_create_default(m, 1 + m);

        next = slotmap_rebalance(map, m);
        slotmap_destroy(map);
        map = next;
        for (size_t s = 0; s < SLOTMAP_SLOTS; s++)
            rnd->owner[s] = (uint16_t)testrand_below(&r, m);
        for (int k = 0; k < 2; k++) {
            const struct slotmap *x = k == 0 ? map : rnd;

            buf_writer_reset(&w);
            slotmap_format(x, &w);
            back = slotmap_parse((const char *)w.data, w.len, err,
                                 sizeof(err));
            assert_non_null(back);
            assert_true(slotmap_equal(x, back));
            slotmap_destroy(back);
        }
        slotmap_destroy(rnd);
    }
    slotmap_destroy(map);
    buf_writer_destroy(&w);
}

static void
test_parse_lenient_layout(void **unused)
{
    struct slotmap *map;

    (void)unused;
    map = parse_ok("# rendered by the deploy\n\n  tally-slotmap 1\r\n"
                   "version\t12\n  # comment after the header\n"
                   "instances 2   \n"
                   "0-2047 0\n\n2048 1\r\n2049-4095\t1\n# end\n");
    assert_true(map->version == 12);
    assert_int_equal(map->instances, 2);
    assert_int_equal(slotmap_owner(map, 2047), 0);
    assert_int_equal(slotmap_owner(map, 2048), 1);
    assert_int_equal(slotmap_owner(map, 4095), 1);
    slotmap_destroy(map);
    /* Ranges may come in any order and overlap nothing. */
    map = parse_ok("tally-slotmap 1\nversion 1\ninstances 3\n4000-4095 2\n"
                   "1-3999 1\n0 0\n");
    assert_int_equal(slotmap_owner(map, 0), 0);
    assert_int_equal(slotmap_owner(map, 1), 1);
    assert_int_equal(slotmap_owner(map, 4000), 2);
    slotmap_destroy(map);
}

#define HEAD "tally-slotmap 1\nversion 1\ninstances 4\n"

static void
test_parse_errors(void **unused)
{
    (void)unused;
    assert_parse_error("", "missing \"tally-slotmap 1\" line");
    assert_parse_error("# only a comment\n\n",
                       "missing \"tally-slotmap 1\" line");
    assert_parse_error("tallyslotmap 1\n",
                       "line 1: expected \"tally-slotmap 1\"");
    assert_parse_error("# c\ntally-slotmap 1 x\n",
                       "line 2: expected \"tally-slotmap 1\"");
    assert_parse_error("tally-slotmap 2\nversion 1\n",
                       "line 1: unsupported format version 2");
    assert_parse_error("tally-slotmap one\n", "line 1: bad number \"one\"");
    assert_parse_error("tally-slotmap 1\n", "missing \"version <n>\" line");
    assert_parse_error("tally-slotmap 1\ninstances 4\n",
                       "line 2: expected \"version <n>\"");
    assert_parse_error("tally-slotmap 1\nversion 0\n",
                       "line 2: version 0 out of range");
    assert_parse_error("tally-slotmap 1\nversion -1\n",
                       "line 2: bad number \"-1\"");
    assert_parse_error("tally-slotmap 1\nversion 18446744073709551616\n",
                       "line 2: bad number \"18446744073709551616\"");
    assert_parse_error("tally-slotmap 1\nversion 1\n",
                       "missing \"instances <M>\" line");
    assert_parse_error("tally-slotmap 1\nversion 1\ninstances 0\n",
                       "line 3: instances 0 out of range 1..1024");
    assert_parse_error("tally-slotmap 1\nversion 1\ninstances 1025\n",
                       "line 3: instances 1025 out of range 1..1024");
    assert_parse_error(HEAD, "slot 0 not assigned");
    assert_parse_error(HEAD "0-4094 0\n", "slot 4095 not assigned");
    assert_parse_error(HEAD "0-11 0\n13-4095 1\n", "slot 12 not assigned");
    assert_parse_error(HEAD "0-4095 0\n12 1\n",
                       "line 5: slot 12 assigned twice");
    assert_parse_error(HEAD "# x\n0-100 0\n90-4095 1\n",
                       "line 6: slot 90 assigned twice");
    assert_parse_error(HEAD "0-4095 4\n",
                       "line 4: instance 4 out of range (instances 4)");
    assert_parse_error(HEAD "0-4095 1x\n", "line 4: bad number \"1x\"");
    assert_parse_error(HEAD "0-40x 1\n", "line 4: bad number \"40x\"");
    assert_parse_error(HEAD "+5 1\n", "line 4: bad number \"+5\"");
    assert_parse_error(HEAD "0x10 1\n", "line 4: bad number \"0x10\"");
    assert_parse_error(HEAD "0--5 1\n", "line 4: bad number \"-5\"");
    assert_parse_error(HEAD "-5 1\n", "line 4: bad number \"\"");
    assert_parse_error(HEAD "1e3 1\n", "line 4: bad number \"1e3\"");
    assert_parse_error(HEAD "99999999999999999999 0\n",
                       "line 4: bad number \"99999999999999999999\"");
    assert_parse_error(HEAD "20-10 0\n", "line 4: range 20-10 reversed");
    assert_parse_error(HEAD "0-4096 0\n", "line 4: slot 4096 out of range");
    assert_parse_error(HEAD "5000 0\n", "line 4: slot 5000 out of range");
    assert_parse_error(HEAD "0-4095 0 extra\n",
                       "line 4: expected \"<first>-<last> <instance>\" or "
                       "\"<slot> <instance>\"");
    assert_parse_error(HEAD "0-4095\n",
                       "line 4: expected \"<first>-<last> <instance>\" or "
                       "\"<slot> <instance>\"");
}

static void
test_load_file(void **unused)
{
    char path[] = "/tmp/test_slotmap_XXXXXX";
    char err[ERRLEN], expect[ERRLEN];
    struct buf_writer w;
    struct slotmap *map, *back;
    int fd;
    FILE *f;

    (void)unused;
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    map = slotmap_create_default(7, 42);
    buf_writer_create(&w, 0);
    slotmap_format(map, &w);
    assert_int_equal(fwrite(w.data, 1, w.len, f), w.len);
    assert_int_equal(fclose(f), 0);
    back = slotmap_load(path, err, sizeof(err));
    assert_non_null(back);
    assert_true(slotmap_equal(map, back));
    slotmap_destroy(back);

    f = fopen(path, "w");
    assert_non_null(f);
    fputs("tally-slotmap 1\nversion 1\ninstances 1\n0-4095 1\n", f);
    assert_int_equal(fclose(f), 0);
    assert_null(slotmap_load(path, err, sizeof(err)));
    snprintf(expect, sizeof(expect),
             "%s: line 4: instance 1 out of range (instances 1)", path);
    assert_string_equal(err, expect);

    assert_int_equal(unlink(path), 0);
    assert_null(slotmap_load(path, err, sizeof(err)));
    snprintf(expect, sizeof(expect), "%s: No such file or directory", path);
    assert_string_equal(err, expect);
    slotmap_destroy(map);
    buf_writer_destroy(&w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fnv_known_values),
        cmocka_unit_test(test_vectors_file),
        cmocka_unit_test(test_default_balanced),
        cmocka_unit_test(test_rebalance_grow),
        cmocka_unit_test(test_rebalance_shrink),
        cmocka_unit_test(test_format_parse_round_trip),
        cmocka_unit_test(test_parse_lenient_layout),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_load_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
