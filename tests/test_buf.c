/*
 * test_buf: varints, zigzag, fixed-width fields and strings round trip, and
 * the reader refuses short, overlong and oversized input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "buf.h"

static void
test_varint_edges_round_trip(void **unused)
{
    const uint64_t values[] = { 0, 1, 127, 128, 16383, 16384, UINT32_MAX,
                                (1ULL << 63) - 1, 1ULL << 63, UINT64_MAX };
    const size_t sizes[] = { 1, 1, 1, 2, 2, 3, 5, 9, 10, 10 };
    struct buf_writer w;
    struct buf_reader r;

    (void)unused;
    buf_writer_create(&w, 0);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        size_t before = w.len;

        buf_put_varint(&w, values[i]);
        assert_int_equal(w.len - before, sizes[i]);
    }
    buf_reader_init(&r, w.data, w.len);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        uint64_t v;

        assert_int_equal(buf_get_varint(&r, &v), 0);
        assert_true(v == values[i]);
    }
    assert_int_equal(buf_remaining(&r), 0);
    buf_writer_destroy(&w);
}

static void
test_zigzag(void **unused)
{
    (void)unused;
    assert_true(buf_zigzag(0) == 0);
    assert_true(buf_zigzag(-1) == 1);
    assert_true(buf_zigzag(1) == 2);
    assert_true(buf_zigzag(INT64_MIN) == UINT64_MAX);
    assert_true(buf_unzigzag(UINT64_MAX) == INT64_MIN);
    assert_true(buf_unzigzag(buf_zigzag(INT64_MAX)) == INT64_MAX);
}

static void
test_reader_refuses(void **unused)
{
    const uint8_t overlong[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                 0x80, 0x80, 0x02 };       /* > 64 bits */
    const uint8_t eleven[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                               0x80, 0x80, 0x81, 0x00 };
    const uint8_t unterminated[] = { 0x80, 0x80 };
    const uint8_t not_shortest[] = { 0x81, 0x00 };     /* 1, overlong */
    const uint8_t string[] = { 5, 'a', 'b' };
    const uint8_t *p;
    struct buf_reader r;
    uint64_t v;
    uint32_t u32;
    size_t n;

    (void)unused;
    buf_reader_init(&r, overlong, sizeof(overlong));
    assert_int_equal(buf_get_varint(&r, &v), -1);
    buf_reader_init(&r, eleven, sizeof(eleven));
    assert_int_equal(buf_get_varint(&r, &v), -1);
    buf_reader_init(&r, unterminated, sizeof(unterminated));
    assert_int_equal(buf_get_varint(&r, &v), -1);
    buf_reader_init(&r, not_shortest, sizeof(not_shortest));
    assert_int_equal(buf_get_varint(&r, &v), -1);
    buf_reader_init(&r, string, sizeof(string));
    assert_int_equal(buf_get_string(&r, &p, &n, 100), -1);   /* short */
    buf_reader_init(&r, string, sizeof(string));
    assert_int_equal(buf_get_string(&r, &p, &n, 4), -1);     /* over max */
    buf_reader_init(&r, string, 3);
    assert_int_equal(buf_get_u32(&r, &u32), -1);
}

static void
test_fixed_and_strings(void **unused)
{
    struct buf_writer w;
    struct buf_reader r;
    const uint8_t *p;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    int64_t s64;
    double d;
    size_t n;

    (void)unused;
    buf_writer_create(&w, 1);
    buf_put_u16(&w, 0xbeef);
    buf_put_u32(&w, 0xdeadbeef);
    buf_put_u64(&w, 0x0123456789abcdefULL);
    buf_put_double(&w, -2.5);
    buf_put_svarint(&w, -300);
    buf_put_string(&w, "hello", 5);
    buf_patch_u32(&w, 2, 7);
    assert_int_equal(w.data[0], 0xef);        /* little-endian */
    buf_reader_init(&r, w.data, w.len);
    assert_int_equal(buf_get_u16(&r, &u16), 0);
    assert_int_equal(u16, 0xbeef);
    assert_int_equal(buf_get_u32(&r, &u32), 0);
    assert_int_equal(u32, 7);
    assert_int_equal(buf_get_u64(&r, &u64), 0);
    assert_true(u64 == 0x0123456789abcdefULL);
    assert_int_equal(buf_get_double(&r, &d), 0);
    assert_true(d == -2.5);
    assert_int_equal(buf_get_svarint(&r, &s64), 0);
    assert_int_equal(s64, -300);
    assert_int_equal(buf_get_string(&r, &p, &n, 5), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(p, "hello", 5);
    assert_int_equal(buf_remaining(&r), 0);
    buf_writer_destroy(&w);
}

static void
test_compare(void **unused)
{
    (void)unused;
    assert_int_equal(buf_compare("ab", 2, "ab", 2), 0);
    assert_true(buf_compare("a", 1, "ab", 2) < 0);      /* prefix first */
    assert_true(buf_compare("ab", 2, "a", 1) > 0);
    assert_true(buf_compare("b", 1, "ab", 2) > 0);
    assert_true(buf_compare("", 0, "a", 1) < 0);
    assert_true(buf_compare("\xff", 1, "a", 1) > 0);    /* unsigned bytes */
}

/* RFC 4648, section 10. */
static void
test_base64(void **unused)
{
    static const char *const vectors[][2] = {
        {"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"},
    };
    struct buf_writer w;

    (void)unused;
    buf_writer_create(&w, 4);
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        buf_writer_reset(&w);
        buf_put_base64(&w, vectors[i][0], strlen(vectors[i][0]));
        assert_int_equal(w.len, strlen(vectors[i][1]));
        if (w.len > 0)
            assert_memory_equal(w.data, vectors[i][1], w.len);
    }
    buf_writer_reset(&w);
    buf_put_base64(&w, "\xff\xfe\x00", 3);              /* all 6-bit groups */
    assert_int_equal(w.len, 4);
    assert_memory_equal(w.data, "//4A", 4);
    buf_writer_destroy(&w);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_varint_edges_round_trip),
        cmocka_unit_test(test_zigzag),
        cmocka_unit_test(test_reader_refuses),
        cmocka_unit_test(test_fixed_and_strings),
        cmocka_unit_test(test_compare),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
