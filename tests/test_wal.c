/*
 * test_wal: the write-ahead log on a real file system, in a fresh mkdtemp
 * directory per test. Records are replayed into a list and compared byte
 * for byte with what was appended; damage is made by editing the segment
 * files directly (flip a byte, cut the file, write a header by hand); a
 * full disk is simulated in a forked child with RLIMIT_FSIZE.
 *
 *   append ... sync, close --edit files--> wal_open --> records == expected
 *                                                    or err == exact message
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "crc32c.h"
#include "wal.h"
#include "xalloc.h"

#define TEST_DIR_MAX 64
#define TEST_PATH_MAX 512
#define SEGMENT_HEADER 24       /* bytes, schema/wal.md */
#define RECORD_HEADER 12        /* bytes, schema/wal.md */
#define SMALL 100               /* payload bytes of a "small" record */
#define SMALL_RECORD (RECORD_HEADER + SMALL)
#define MANY 10000
#define NO_STOP SIZE_MAX

static char test_dir[TEST_DIR_MAX];
static char err[WAL_ERR_MAX];

static const struct wal_options fast = { .no_fsync = 1 };

/* ---- replayed records ----------------------------------------------- */

struct record {
    uint8_t *data;
    size_t len;
    struct wal_position pos;
};

struct replayed {
    struct record *records;
    size_t count, cap;
    size_t stop_at;             /* fail at this record; NO_STOP: never */
};

static int
collect(void *ctx, const uint8_t *data, size_t len,
        const struct wal_position *pos, char *why, size_t whylen)
{
    struct replayed *r = ctx;

    if (r->count == r->stop_at) {
        snprintf(why, whylen, "stopped at record %zu", r->count);
        return -1;
    }
    if (r->count == r->cap) {
        r->cap = r->cap == 0 ? 16 : r->cap * 2;
        r->records = xrealloc(r->records, r->cap * sizeof(*r->records));
    }
    r->records[r->count].data = xmalloc(len);
    memcpy(r->records[r->count].data, data, len);
    r->records[r->count].len = len;
    r->records[r->count].pos = *pos;
    r->count++;
    return 0;
}

static void
replayed_clear(struct replayed *r)
{
    for (size_t i = 0; i < r->count; i++)
        free(r->records[i].data);
    free(r->records);
    memset(r, 0, sizeof(*r));
    r->stop_at = NO_STOP;
}

/* ---- records and files ---------------------------------------------- */

/* Record I of a test: a length and bytes that differ from record to
 * record. */
static size_t
record_len(size_t i)
{
    return 1 + (i * 37) % 300;
}

static void
record_fill(size_t i, uint8_t *out, size_t len)
{
    for (size_t j = 0; j < len; j++)
        out[j] = (uint8_t)(i * 31 + j * 7 + 1);
}

/* Appends record I (LEN bytes) and returns where it went. */
static struct wal_position
append_record(struct wal *w, size_t i, size_t len)
{
    uint8_t *data = xmalloc(len);
    struct wal_position pos = { 0 };

    record_fill(i, data, len);
    if (wal_append(w, data, len, &pos, err, sizeof(err)) < 0)
        fail_msg("append %zu: %s", i, err);
    free(data);
    return pos;
}

/* Checks that R starts with records FIRST..FIRST+N-1 of lengths LEN (0:
 * the record_len of each) at POSITIONS[FIRST..]. */
static void
expect_prefix(const struct replayed *r, size_t first, size_t n, size_t len,
              const struct wal_position *positions)
{
    assert_true(r->count >= n);
    for (size_t k = 0; k < n; k++) {
        size_t i = first + k;
        size_t want_len = len != 0 ? len : record_len(i);
        uint8_t *want = xmalloc(want_len);

        record_fill(i, want, want_len);
        assert_int_equal(r->records[k].len, want_len);
        assert_memory_equal(r->records[k].data, want, want_len);
        assert_int_equal(r->records[k].pos.segment, positions[i].segment);
        assert_int_equal(r->records[k].pos.offset, positions[i].offset);
        free(want);
    }
}

/* The same, and R holds nothing else. */
static void
expect_records(const struct replayed *r, size_t first, size_t n, size_t len,
               const struct wal_position *positions)
{
    assert_int_equal(r->count, n);
    expect_prefix(r, first, n, len, positions);
}

static struct wal *
open_ok(const char *dir, const struct wal_position *from,
        const struct wal_options *options, struct replayed *r,
        struct wal_open_stats *stats)
{
    struct wal *w;

    replayed_clear(r);
    w = wal_open(dir, from, options, collect, r, stats, err, sizeof(err));
    if (w == NULL)
        fail_msg("wal_open: %s", err);
    return w;
}

static void
open_fails(const struct wal_position *from, const char *expected)
{
    struct replayed r = { .stop_at = NO_STOP };
    struct wal *w = wal_open(test_dir, from, &fast, collect, &r, NULL, err,
                             sizeof(err));

    replayed_clear(&r);
    assert_null(w);
    assert_string_equal(err, expected);
}

static void
segment_path(uint64_t n, char *out)
{
    snprintf(out, TEST_PATH_MAX, "%s/wal-%016llx.log", test_dir,
             (unsigned long long)n);
}

static uint64_t
segment_size(uint64_t n)
{
    char path[TEST_PATH_MAX];
    struct stat sb;

    segment_path(n, path);
    assert_int_equal(stat(path, &sb), 0);
    return (uint64_t)sb.st_size;
}

static int
segment_exists(uint64_t n)
{
    char path[TEST_PATH_MAX];

    segment_path(n, path);
    return access(path, F_OK) == 0;
}

/* The whole of segment N (caller frees). */
static uint8_t *
segment_read(uint64_t n, size_t *len)
{
    char path[TEST_PATH_MAX];
    int fd;
    uint8_t *data;

    segment_path(n, path);
    *len = segment_size(n);
    data = xmalloc(*len + 1);
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, data, *len), (ssize_t)*len);
    close(fd);
    return data;
}

/* Replaces segment N with LEN bytes of DATA. */
static void
segment_write(uint64_t n, const uint8_t *data, size_t len)
{
    char path[TEST_PATH_MAX];
    int fd;

    segment_path(n, path);
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void
segment_flip(uint64_t n, uint64_t offset)
{
    size_t len;
    uint8_t *data = segment_read(n, &len);

    assert_true(offset < len);
    data[offset] ^= 0x40;
    segment_write(n, data, len);
    free(data);
}

static void
segment_cut(uint64_t n, uint64_t size)
{
    char path[TEST_PATH_MAX];

    segment_path(n, path);
    assert_int_equal(truncate(path, (off_t)size), 0);
}

static void
put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Writes a segment header by hand (schema/wal.md) with a good CRC. */
static void
segment_put_header(uint64_t n, uint64_t number, uint8_t reserved)
{
    size_t len;
    uint8_t *data = segment_read(n, &len);

    memcpy(data, "TLYW", 4);
    data[4] = 1;
    memset(data + 5, 0, 3);
    put_le(data + 8, number, 8);
    memset(data + 16, 0, 4);
    data[17] = reserved;
    put_le(data + 20, crc32c(0, data, 20), 4);
    segment_write(n, data, len);
    free(data);
}

/* ---- per-test directory --------------------------------------------- */

static int
remove_tree(const char *path)
{
    char child[TEST_PATH_MAX];
    struct dirent *e;
    DIR *d = opendir(path);

    if (d == NULL)
        return unlink(path);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        remove_tree(child);
    }
    closedir(d);
    return rmdir(path);
}

static int
setup_dir(void **state)
{
    (void)state;
    snprintf(test_dir, sizeof(test_dir), "/tmp/test_wal.XXXXXX");
    return mkdtemp(test_dir) == NULL ? -1 : 0;
}

static int
teardown_dir(void **state)
{
    (void)state;
    return remove_tree(test_dir);
}

/* Writes records 0..N-1 (record_len sizes) into a fresh log, syncs and
 * closes it; POSITIONS receives where they went. */
static void
write_log(size_t n, struct wal_position *positions)
{
    struct replayed r = { .stop_at = NO_STOP };
    struct wal *w = open_ok(test_dir, NULL, NULL, &r, NULL);

    for (size_t i = 0; i < n; i++)
        positions[i] = append_record(w, i, record_len(i));
    assert_int_equal(wal_sync(w, err, sizeof(err)), 0);
    wal_close(w);
    replayed_clear(&r);
}

/* ---- tests ---------------------------------------------------------- */

static void
test_empty_dir(void **state)
{
    char dir[2 * TEST_DIR_MAX], path[TEST_PATH_MAX];
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    struct wal_position end;
    struct stat sb;
    struct wal *w;

    (void)state;
    snprintf(dir, sizeof(dir), "%s/wal", test_dir); /* does not exist yet */
    memset(&stats, 0xff, sizeof(stats));
    w = open_ok(dir, NULL, NULL, &r, &stats);
    assert_int_equal(stats.segments, 0);
    assert_int_equal(stats.records, 0);
    assert_int_equal(stats.bytes, 0);
    assert_int_equal(stats.truncated, 0);
    end = wal_end(w);
    assert_int_equal(end.segment, 1);
    assert_int_equal(end.offset, SEGMENT_HEADER);
    assert_int_equal(wal_size(w), SEGMENT_HEADER);
    assert_int_equal(wal_sync(w, err, sizeof(err)), 0);
    wal_close(w);
    snprintf(path, sizeof(path), "%s/wal-0000000000000001.log", dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, SEGMENT_HEADER);

    w = open_ok(dir, NULL, NULL, &r, &stats);
    assert_int_equal(stats.segments, 1);
    assert_int_equal(stats.records, 0);
    assert_int_equal(r.count, 0);
    wal_close(w);
    wal_close(NULL);

    /* A directory that cannot be made. */
    snprintf(dir, sizeof(dir), "%s/no/such", test_dir);
    assert_null(wal_open(dir, NULL, NULL, collect, &r, NULL, err, sizeof(err)));
    snprintf(path, sizeof(path), "%s: No such file or directory", dir);
    assert_string_equal(err, path);
}

/* The example of schema/wal.md, byte for byte. */
static void
test_worked_example(void **state)
{
    static const uint8_t expected[] = {
        0x54, 0x4c, 0x59, 0x57, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xb9, 0x25,
        0x68, 0x5f, 0x05, 0x00, 0x00, 0x00, 0x4c, 0xbb, 0x71, 0x9a, 0x86,
        0xd7, 0xc6, 0x5f, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
    };
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_position pos;
    struct wal *w = open_ok(test_dir, NULL, NULL, &r, NULL);
    uint8_t *data;
    size_t len;

    (void)state;
    assert_int_equal(wal_append(w, "hello", 5, &pos, err, sizeof(err)), 0);
    assert_int_equal(pos.segment, 1);
    assert_int_equal(pos.offset, SEGMENT_HEADER);
    assert_int_equal(wal_sync(w, err, sizeof(err)), 0);
    wal_close(w);
    data = segment_read(1, &len);
    assert_int_equal(len, sizeof(expected));
    assert_memory_equal(data, expected, sizeof(expected));
    free(data);
}

static void
test_roundtrip_and_from(void **state)
{
    enum { N = 50 };
    struct wal_position pos[N + 1], end, from;
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    uint64_t bytes = 0;
    char expected[WAL_ERR_MAX];
    struct wal *w;

    (void)state;
    write_log(N, pos);
    for (size_t i = 0; i < N; i++)
        bytes += record_len(i);

    w = open_ok(test_dir, NULL, NULL, &r, &stats);
    expect_records(&r, 0, N, 0, pos);
    assert_int_equal(stats.segments, 1);
    assert_int_equal(stats.records, N);
    assert_int_equal(stats.bytes, bytes);
    assert_int_equal(stats.truncated, 0);
    end = wal_end(w);
    assert_int_equal(end.segment, 1);
    assert_int_equal(end.offset, SEGMENT_HEADER + N * RECORD_HEADER + bytes);
    assert_int_equal(wal_size(w), segment_size(1));
    /* Appends go on after the last record. */
    pos[N] = append_record(w, N, record_len(N));
    assert_int_equal(pos[N].segment, end.segment);
    assert_int_equal(pos[N].offset, end.offset);
    end = wal_end(w);
    wal_close(w);

    w = open_ok(test_dir, NULL, &fast, &r, NULL);
    expect_records(&r, 0, N + 1, 0, pos);
    wal_close(w);

    /* FROM a record: that record and the ones after it. */
    w = open_ok(test_dir, &pos[20], &fast, &r, &stats);
    expect_records(&r, 20, N + 1 - 20, 0, pos);
    assert_int_equal(stats.records, N + 1 - 20);
    wal_close(w);
    from = (struct wal_position){ .segment = 0, .offset = 0 };
    w = open_ok(test_dir, &from, &fast, &r, NULL);
    assert_int_equal(r.count, N + 1);
    wal_close(w);
    w = open_ok(test_dir, &end, &fast, &r, &stats);
    assert_int_equal(r.count, 0);
    assert_int_equal(stats.records, 0);
    wal_close(w);

    /* FROM past the end. */
    from = (struct wal_position){ .segment = 1, .offset = end.offset + 1 };
    snprintf(expected, sizeof(expected),
             "replay position 1:%llu is past the end of the log (1:%llu)",
             (unsigned long long)end.offset + 1,
             (unsigned long long)end.offset);
    open_fails(&from, expected);
    from = (struct wal_position){ .segment = 2, .offset = SEGMENT_HEADER };
    snprintf(expected, sizeof(expected),
             "replay position 2:24 is past the end of the log (1:%llu)",
             (unsigned long long)end.offset);
    open_fails(&from, expected);
    replayed_clear(&r);
}

/* A crash mid-append: the file ends anywhere inside the last record. */
static void
test_torn_tail_every_offset(void **state)
{
    struct wal_position pos[4];
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    struct wal_position end;
    uint8_t *pristine;
    size_t len;

    (void)state;
    write_log(3, pos);
    pristine = segment_read(1, &len);
    assert_int_equal(len, pos[2].offset + RECORD_HEADER + record_len(2));
    for (uint64_t cut = pos[2].offset; cut < len; cut++) {
        struct wal *w;

        segment_write(1, pristine, cut);
        w = open_ok(test_dir, NULL, &fast, &r, &stats);
        expect_records(&r, 0, 2, 0, pos);
        assert_int_equal(stats.truncated, cut - pos[2].offset);
        assert_int_equal(segment_size(1), pos[2].offset);
        end = wal_end(w);
        assert_int_equal(end.offset, pos[2].offset);
        /* The log goes on from there. */
        pos[3] = append_record(w, 3, record_len(3));
        assert_int_equal(pos[3].offset, pos[2].offset);
        wal_close(w);

        w = open_ok(test_dir, NULL, &fast, &r, &stats);
        assert_int_equal(stats.truncated, 0);
        assert_int_equal(r.count, 3);
        expect_prefix(&r, 0, 2, 0, pos);
        assert_int_equal(r.records[2].len, record_len(3));
        assert_int_equal(r.records[2].pos.offset, pos[2].offset);
        wal_close(w);
    }
    free(pristine);
    replayed_clear(&r);
}

/* The last record is whole but fails its CRC and ends at EOF: torn. Its
 * header failing is damage, wherever it is. */
static void
test_torn_tail_bad_checksum(void **state)
{
    struct wal_position pos[3];
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    uint64_t size;
    struct wal *w;

    (void)state;
    write_log(3, pos);
    size = segment_size(1);
    segment_flip(1, size - 1);
    w = open_ok(test_dir, NULL, &fast, &r, &stats);
    expect_records(&r, 0, 2, 0, pos);
    assert_int_equal(stats.truncated, RECORD_HEADER + record_len(2));
    assert_int_equal(segment_size(1), pos[2].offset);
    wal_close(w);

    /* A fresh log of 3 records; the last one's length is damaged. */
    assert_int_equal(remove_tree(test_dir), 0);
    assert_int_equal(mkdir(test_dir, 0700), 0);
    write_log(3, pos);
    assert_int_equal(pos[2].offset, 87);
    segment_flip(1, pos[2].offset + 1);
    open_fails(NULL, "wal-0000000000000001.log: bad record header checksum at "
                     "offset 87");
    replayed_clear(&r);
}

static void
test_corrupt_middle(void **state)
{
    struct wal_position pos[3];
    uint8_t *pristine;
    uint8_t h[RECORD_HEADER] = { 0 };
    size_t len;

    (void)state;
    write_log(3, pos);
    pristine = segment_read(1, &len);
    assert_int_equal(pos[1].offset, 37);

    segment_flip(1, pos[1].offset + RECORD_HEADER + 10);
    open_fails(NULL, "wal-0000000000000001.log: bad record checksum at offset "
                     "37 (not the end of the log)");

    segment_write(1, pristine, len);
    segment_flip(1, pos[0].offset); /* length of the first record */
    open_fails(NULL, "wal-0000000000000001.log: bad record header checksum at "
                     "offset 24");

    /* A header that checks but holds length 0. */
    segment_write(1, pristine, len);
    put_le(h + 8, crc32c(0, h, 8), 4);
    memcpy(pristine + pos[1].offset, h, sizeof(h));
    segment_write(1, pristine, len);
    open_fails(NULL, "wal-0000000000000001.log: record length 0 at offset 37 "
                     "out of range");
    free(pristine);
}

/* In a segment that is not the last, even damage at its end is damage. */
static void
test_corrupt_older_segment(void **state)
{
    struct wal_position pos[5];
    struct replayed r = { .stop_at = NO_STOP };
    struct wal *w = open_ok(test_dir, NULL, NULL, &r, NULL);
    uint8_t *pristine;
    size_t len;
    char expected[WAL_ERR_MAX];

    (void)state;
    for (size_t i = 0; i < 3; i++)
        pos[i] = append_record(w, i, record_len(i));
    assert_int_equal(wal_rotate(w, err, sizeof(err)), 0);
    for (size_t i = 3; i < 5; i++)
        pos[i] = append_record(w, i, record_len(i));
    assert_int_equal(pos[3].segment, 2);
    assert_int_equal(pos[3].offset, SEGMENT_HEADER);
    assert_int_equal(wal_sync(w, err, sizeof(err)), 0);
    wal_close(w);

    w = open_ok(test_dir, NULL, &fast, &r, NULL);
    expect_records(&r, 0, 5, 0, pos);
    wal_close(w);
    replayed_clear(&r);

    pristine = segment_read(1, &len);
    segment_flip(1, len - 1);
    snprintf(expected, sizeof(expected),
             "wal-0000000000000001.log: bad record checksum at offset %llu "
             "(not the end of the log)", (unsigned long long)pos[2].offset);
    open_fails(NULL, expected);

    segment_write(1, pristine, len - 1);
    snprintf(expected, sizeof(expected),
             "wal-0000000000000001.log: truncated record at offset %llu "
             "(not the end of the log)", (unsigned long long)pos[2].offset);
    open_fails(NULL, expected);

    segment_write(1, pristine, pos[2].offset + 5);
    snprintf(expected, sizeof(expected),
             "wal-0000000000000001.log: truncated record header at offset "
             "%llu (not the end of the log)",
             (unsigned long long)pos[2].offset);
    open_fails(NULL, expected);
    free(pristine);
}

static void
test_bad_segment_header(void **state)
{
    struct wal_position pos[3];
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    struct wal *w = open_ok(test_dir, NULL, &fast, &r, NULL);
    uint8_t *pristine;
    size_t len;

    (void)state;
    pos[0] = append_record(w, 0, record_len(0));
    assert_int_equal(wal_rotate(w, err, sizeof(err)), 0);
    pos[1] = append_record(w, 1, record_len(1));
    wal_close(w);
    pristine = segment_read(1, &len);

    segment_flip(1, 0);
    open_fails(NULL, "wal-0000000000000001.log: bad segment magic");
    segment_write(1, pristine, len);
    segment_flip(1, 4);
    open_fails(NULL,
               "wal-0000000000000001.log: unsupported segment version 65");
    segment_write(1, pristine, len);
    segment_flip(1, 8);
    open_fails(NULL, "wal-0000000000000001.log: bad segment header checksum");
    segment_put_header(1, 1, 0);
    w = open_ok(test_dir, NULL, &fast, &r, NULL); /* hand-made, and good */
    expect_records(&r, 0, 2, 0, pos);
    wal_close(w);
    segment_put_header(1, 1, 1);
    open_fails(NULL,
               "wal-0000000000000001.log: segment reserved bytes must be 0");
    segment_put_header(1, 7, 0);
    open_fails(NULL, "wal-0000000000000001.log: header says segment 7");
    segment_write(1, pristine, SEGMENT_HEADER - 1);
    open_fails(NULL, "wal-0000000000000001.log: truncated segment header");
    segment_write(1, pristine, len);

    /* The last segment's creation cut short by a crash: made again. */
    for (uint64_t cut = 0; cut < SEGMENT_HEADER; cut++) {
        segment_cut(2, cut);
        w = open_ok(test_dir, NULL, &fast, &r, &stats);
        expect_records(&r, 0, 1, 0, pos);
        assert_int_equal(stats.truncated, cut);
        assert_int_equal(stats.segments, 2);
        assert_int_equal(segment_size(2), SEGMENT_HEADER);
        pos[2] = append_record(w, 2, record_len(2));
        assert_int_equal(pos[2].segment, 2);
        assert_int_equal(pos[2].offset, SEGMENT_HEADER);
        wal_close(w);
        w = open_ok(test_dir, NULL, &fast, &r, NULL);
        assert_int_equal(r.count, 2);
        assert_int_equal(r.records[1].pos.segment, 2);
        wal_close(w);
    }
    free(pristine);
    replayed_clear(&r);
}

static void
test_segment_gap(void **state)
{
    char path[TEST_PATH_MAX];
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    struct wal *w = open_ok(test_dir, NULL, &fast, &r, NULL);
    int fd;

    (void)state;
    assert_int_equal(wal_rotate(w, err, sizeof(err)), 0);
    assert_int_equal(wal_rotate(w, err, sizeof(err)), 0);
    wal_close(w);
    /* Other names are not segments and are left alone. */
    snprintf(path, sizeof(path), "%s/wal-000000000000000A.log", test_dir);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    w = open_ok(test_dir, NULL, &fast, &r, &stats);
    assert_int_equal(stats.segments, 3);
    wal_close(w);

    segment_path(2, path);
    assert_int_equal(unlink(path), 0);
    open_fails(NULL, "segment gap: wal-0000000000000001.log is followed by "
                     "wal-0000000000000003.log");
    replayed_clear(&r);
}

/* Exit codes of the child in test_append_failure. */
enum child_result {
    CHILD_OK,
    CHILD_OPEN,
    CHILD_LIMIT,
    CHILD_COUNT,
    CHILD_MESSAGE,
    CHILD_SIZE,
    CHILD_AGAIN,
    CHILD_SEGMENT_LEFT,
};

/* Size of segment N, or UINT64_MAX: for the child, which must not use
 * cmocka's asserts. */
static uint64_t
child_segment_size(uint64_t n)
{
    char path[TEST_PATH_MAX];
    struct stat sb;

    segment_path(n, path);
    return stat(path, &sb) < 0 ? UINT64_MAX : (uint64_t)sb.st_size;
}

/* In a child: the file size limit makes write fail with EFBIG (as ENOSPC
 * would) part way through a record. */
static enum child_result
append_until_full(uint64_t limit, uint64_t segment_max, size_t expect_ok,
                  const char *expect_err, uint64_t expect_size)
{
    struct wal_options options = { .segment_max = segment_max };
    struct replayed r = { .stop_at = NO_STOP };
    struct rlimit rl = { .rlim_cur = limit, .rlim_max = RLIM_INFINITY };
    struct wal *w;
    size_t ok = 0;
    uint8_t data[SMALL];

    signal(SIGXFSZ, SIG_IGN);
    w = wal_open(test_dir, NULL, &options, collect, &r, NULL, err, sizeof(err));
    if (w == NULL)
        return CHILD_OPEN;
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
        return CHILD_LIMIT;
    memset(data, 'x', sizeof(data));
    while (wal_append(w, data, sizeof(data), NULL, err, sizeof(err)) == 0)
        ok++;
    if (ok != expect_ok)
        return CHILD_COUNT;
    if (strcmp(err, expect_err) != 0)
        return CHILD_MESSAGE;
    if (child_segment_size(1) != expect_size)
        return CHILD_SIZE;
    if (wal_append(w, data, sizeof(data), NULL, err, sizeof(err)) == 0 ||
        child_segment_size(1) != expect_size)
        return CHILD_AGAIN;
    if (segment_exists(2))
        return CHILD_SEGMENT_LEFT;
    return CHILD_OK;
}

static void
run_child(uint64_t limit, uint64_t segment_max, size_t expect_ok,
          const char *expect_err, uint64_t expect_size)
{
    int status;
    pid_t pid = fork();

    assert_true(pid >= 0);
    if (pid == 0)
        _exit(append_until_full(limit, segment_max, expect_ok, expect_err,
                                expect_size));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), CHILD_OK);
}

static void
test_append_failure(void **state)
{
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    struct wal *w = open_ok(test_dir, NULL, NULL, &r, NULL);
    uint64_t size;

    (void)state;
    for (size_t i = 0; i < 5; i++)
        append_record(w, i, SMALL);
    assert_int_equal(wal_sync(w, err, sizeof(err)), 0);
    wal_close(w);
    size = SEGMENT_HEADER + 5 * SMALL_RECORD;
    assert_int_equal(segment_size(1), size);

    /* Room for 3 more records and part of a 4th (header and 38 bytes). */
    run_child(size + 3 * SMALL_RECORD + 50, 0, 3,
              "wal-0000000000000001.log: File too large",
              size + 3 * SMALL_RECORD);
    w = open_ok(test_dir, NULL, &fast, &r, &stats);
    assert_int_equal(stats.records, 8);
    assert_int_equal(stats.truncated, 0);
    assert_int_equal(segment_size(1), size + 3 * SMALL_RECORD);
    wal_close(w);
    size += 3 * SMALL_RECORD;

    /* A rotation that cannot write the new segment's header leaves no
     * file behind. */
    run_child(SEGMENT_HEADER / 2, size, 0,
              "wal-0000000000000002.log: File too large", size);
    w = open_ok(test_dir, NULL, &fast, &r, &stats);
    assert_int_equal(stats.segments, 1);
    assert_int_equal(stats.records, 8);
    wal_close(w);
    replayed_clear(&r);
}

static void
test_rotate_and_trim(void **state)
{
    struct wal_position pos[7], before, end;
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    struct wal *w = open_ok(test_dir, NULL, NULL, &r, NULL);
    char expected[WAL_ERR_MAX];

    (void)state;
    for (size_t i = 0; i < 3; i++)
        pos[i] = append_record(w, i, record_len(i));
    assert_int_equal(wal_rotate(w, err, sizeof(err)), 0);
    for (size_t i = 3; i < 5; i++)
        pos[i] = append_record(w, i, record_len(i));
    assert_int_equal(wal_rotate(w, err, sizeof(err)), 0);
    for (size_t i = 5; i < 7; i++)
        pos[i] = append_record(w, i, record_len(i));
    assert_int_equal(pos[3].segment, 2);
    assert_int_equal(pos[3].offset, SEGMENT_HEADER);
    assert_int_equal(pos[5].segment, 3);
    assert_int_equal(pos[5].offset, SEGMENT_HEADER);
    assert_int_equal(wal_sync(w, err, sizeof(err)), 0);
    assert_int_equal(wal_size(w), segment_size(1) + segment_size(2) +
                                  segment_size(3));

    /* BEFORE inside segment 2: only segment 1 goes. */
    assert_int_equal(wal_trim(w, &pos[4], err, sizeof(err)), 0);
    assert_false(segment_exists(1));
    assert_true(segment_exists(2));
    assert_int_equal(wal_size(w), segment_size(2) + segment_size(3));
    assert_int_equal(wal_trim(w, &pos[5], err, sizeof(err)), 0);
    assert_false(segment_exists(2));
    assert_int_equal(wal_size(w), segment_size(3));
    assert_int_equal(wal_trim(w, &pos[5], err, sizeof(err)), 0); /* no-op */
    end = wal_end(w);
    assert_int_equal(wal_trim(w, &end, err, sizeof(err)), 0); /* keeps 3 */
    assert_true(segment_exists(3));

    before = (struct wal_position){ .segment = 3, .offset = end.offset + 1 };
    assert_int_equal(wal_trim(w, &before, err, sizeof(err)), -1);
    snprintf(expected, sizeof(expected),
             "trim position 3:%llu is past the end of the log (3:%llu)",
             (unsigned long long)end.offset + 1,
             (unsigned long long)end.offset);
    assert_string_equal(err, expected);
    before = (struct wal_position){ .segment = 4, .offset = SEGMENT_HEADER };
    assert_int_equal(wal_trim(w, &before, err, sizeof(err)), -1);
    wal_close(w);

    w = open_ok(test_dir, NULL, &fast, &r, &stats);
    expect_records(&r, 5, 2, 0, pos);
    assert_int_equal(stats.segments, 1);
    assert_int_equal(wal_size(w), segment_size(3));
    wal_close(w);
    /* FROM in a trimmed segment: everything that is left. */
    w = open_ok(test_dir, &pos[1], &fast, &r, NULL);
    expect_records(&r, 5, 2, 0, pos);
    wal_close(w);
    w = open_ok(test_dir, &pos[6], &fast, &r, NULL);
    expect_records(&r, 6, 1, 0, pos);
    wal_close(w);
    replayed_clear(&r);
}

/* Record I of test_segment_max: records 0 and 7 are larger than
 * segment_max. */
static size_t
segment_max_len(size_t i)
{
    return i == 0 || i == 7 ? 5 * SMALL : SMALL;
}

static void
test_segment_max(void **state)
{
    const struct wal_options options = {
        .segment_max = SEGMENT_HEADER + 3 * SMALL_RECORD,
        .no_fsync = 1,
    };
    static const struct wal_position expected[] = {
        { .segment = 1, .offset = 24 }, /* > segment_max: a segment alone */
        { .segment = 2, .offset = 24 }, { .segment = 2, .offset = 136 },
        { .segment = 2, .offset = 248 }, { .segment = 3, .offset = 24 },
        { .segment = 3, .offset = 136 }, { .segment = 3, .offset = 248 },
        { .segment = 4, .offset = 24 }, /* > segment_max */
        { .segment = 5, .offset = 24 },
    };
    enum { N = sizeof(expected) / sizeof(expected[0]) };
    struct wal_position pos[N];
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    struct wal *w = open_ok(test_dir, NULL, &options, &r, NULL);

    (void)state;
    for (size_t i = 0; i < N; i++) {
        pos[i] = append_record(w, i, segment_max_len(i));
        assert_int_equal(pos[i].segment, expected[i].segment);
        assert_int_equal(pos[i].offset, expected[i].offset);
    }
    assert_int_equal(segment_size(1),
                     SEGMENT_HEADER + RECORD_HEADER + segment_max_len(0));
    assert_int_equal(segment_size(2), options.segment_max);
    assert_int_equal(segment_size(5), SEGMENT_HEADER + SMALL_RECORD);
    wal_close(w);

    w = open_ok(test_dir, NULL, &options, &r, &stats);
    assert_int_equal(stats.segments, 5);
    assert_int_equal(r.count, N);
    for (size_t i = 0; i < N; i++) {
        uint8_t want[5 * SMALL];

        record_fill(i, want, segment_max_len(i));
        assert_int_equal(r.records[i].len, segment_max_len(i));
        assert_memory_equal(r.records[i].data, want, segment_max_len(i));
        assert_int_equal(r.records[i].pos.segment, expected[i].segment);
        assert_int_equal(r.records[i].pos.offset, expected[i].offset);
    }
    wal_close(w);
    replayed_clear(&r);
}

static void
test_replay_stops_open(void **state)
{
    struct wal_position pos[5];
    struct replayed r = { .stop_at = 2 };

    (void)state;
    write_log(5, pos);
    assert_null(wal_open(test_dir, NULL, &fast, collect, &r, NULL, err,
                         sizeof(err)));
    assert_string_equal(err, "stopped at record 2");
    expect_records(&r, 0, 2, 0, pos);
    replayed_clear(&r);
}

static void
test_append_bad_length(void **state)
{
    struct replayed r = { .stop_at = NO_STOP };
    struct wal *w = open_ok(test_dir, NULL, &fast, &r, NULL);
    struct wal_position end;
    uint8_t byte = 0;

    (void)state;
    assert_int_equal(wal_append(w, &byte, 0, NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "record length 0 out of range (1..67109888)");
    /* Rejected before DATA is read. */
    assert_int_equal(wal_append(w, &byte, WAL_RECORD_MAX + 1, NULL, err,
                                sizeof(err)), -1);
    assert_string_equal(err,
                        "record length 67109889 out of range (1..67109888)");
    end = wal_end(w);
    assert_int_equal(end.offset, SEGMENT_HEADER);
    assert_int_equal(segment_size(1), SEGMENT_HEADER);
    wal_close(w);
}

/* A sanity check, not a benchmark: many records and one sync. */
static void
test_many_records(void **state)
{
    struct replayed r = { .stop_at = NO_STOP };
    struct wal_open_stats stats;
    struct wal *w = open_ok(test_dir, NULL, NULL, &r, NULL);
    uint8_t data[SMALL];

    (void)state;
    memset(data, 'm', sizeof(data));
    for (size_t i = 0; i < MANY; i++)
        assert_int_equal(wal_append(w, data, sizeof(data), NULL, err,
                                    sizeof(err)), 0);
    assert_int_equal(wal_sync(w, err, sizeof(err)), 0);
    assert_int_equal(wal_size(w), SEGMENT_HEADER + MANY * SMALL_RECORD);
    wal_close(w);

    w = open_ok(test_dir, NULL, NULL, &r, &stats);
    assert_int_equal(stats.records, MANY);
    assert_int_equal(stats.bytes, MANY * SMALL);
    assert_int_equal(r.records[MANY - 1].pos.offset,
                     SEGMENT_HEADER + (MANY - 1) * SMALL_RECORD);
    wal_close(w);
    replayed_clear(&r);
}

#define WAL_TEST(f) cmocka_unit_test_setup_teardown(f, setup_dir, teardown_dir)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        WAL_TEST(test_empty_dir),
        WAL_TEST(test_worked_example),
        WAL_TEST(test_roundtrip_and_from),
        WAL_TEST(test_torn_tail_every_offset),
        WAL_TEST(test_torn_tail_bad_checksum),
        WAL_TEST(test_corrupt_middle),
        WAL_TEST(test_corrupt_older_segment),
        WAL_TEST(test_bad_segment_header),
        WAL_TEST(test_segment_gap),
        WAL_TEST(test_append_failure),
        WAL_TEST(test_rotate_and_trim),
        WAL_TEST(test_segment_max),
        WAL_TEST(test_replay_stops_open),
        WAL_TEST(test_append_bad_length),
        WAL_TEST(test_many_records),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
