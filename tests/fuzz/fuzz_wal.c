/*
 * fuzz_wal: the write-ahead log reader on segment files made from the
 * input, in a private directory under $TMPDIR (default /tmp) made once per
 * process, emptied after every input and removed at exit.
 *
 *   input: mode u8, split u16 LE, then the segment bytes
 *   mode bit 0  make each segment header right (magic, version, reserved
 *               bytes, number, CRC)
 *        bit 1  make each record header CRC right
 *        bit 2  make each payload CRC right (before the header CRC)
 *        bit 3  two segments: the bytes split at SPLIT (mod length + 1)
 *        bit 4  replay from segment 1 + bit 5, offset SPLIT
 *
 * Without the fix-ups the fuzzer would seldom get past a CRC-32C; with
 * them it reaches the record walk and the torn-tail rules.
 *
 * Properties: the replayed records lie in the files and come in order;
 * after a successful open, one append, close and reopen must succeed with
 * nothing torn, and the appended record must be the last one replayed.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "fuzz.h"
#include "wal.h"

/* Layouts of schema/wal.md. */
#define FUZZ_SEGMENT_HEADER 24
#define FUZZ_SEGMENT_VERSION_AT 4
#define FUZZ_SEGMENT_NUMBER_AT 8
#define FUZZ_SEGMENT_CRC_AT 20
#define FUZZ_RECORD_HEADER 12
#define FUZZ_RECORD_CRC_AT 4
#define FUZZ_RECORD_HEADER_CRC_AT 8

#define FUZZ_FIX_SEGMENT 0x01u
#define FUZZ_FIX_HEADER_CRC 0x02u
#define FUZZ_FIX_PAYLOAD_CRC 0x04u
#define FUZZ_TWO_SEGMENTS 0x08u
#define FUZZ_FROM 0x10u
#define FUZZ_FROM_SECOND 0x20u
#define FUZZ_PREFIX 3               /* mode and split */
#define FUZZ_PATH_MAX 4096

static const char fuzz_record[] = "fuzz";
static char fuzz_dir[FUZZ_PATH_MAX];

static void
put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t
get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
           | (uint32_t)p[3] << 24;
}

/* Removes every file in the directory (it holds only segments). */
static void
dir_empty(void)
{
    DIR *d = opendir(fuzz_dir);
    struct dirent *e;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

static void
dir_remove(void)
{
    dir_empty();
    rmdir(fuzz_dir);
}

static void
dir_make(void)
{
    const char *tmp = getenv("TMPDIR");

    if (fuzz_dir[0] != '\0')
        return;
    snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/tally-fuzz-wal-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    FUZZ_CHECK(mkdtemp(fuzz_dir) != NULL, "mkdtemp");
    atexit(dir_remove);
}

/* Applies the CRC fix-ups of MODE to one segment's LEN bytes at P. */
static void
fix_segment(uint8_t *p, size_t len, unsigned mode, uint64_t number)
{
    size_t off = FUZZ_SEGMENT_HEADER;

    if ((mode & FUZZ_FIX_SEGMENT) && len >= FUZZ_SEGMENT_HEADER) {
        memset(p, 0, FUZZ_SEGMENT_CRC_AT);
        memcpy(p, "TLYW", 4);
        p[FUZZ_SEGMENT_VERSION_AT] = 1;
        for (int i = 0; i < 8; i++)
            p[FUZZ_SEGMENT_NUMBER_AT + i] = (uint8_t)(number >> (8 * i));
        put_u32(p + FUZZ_SEGMENT_CRC_AT, crc32c(0, p, FUZZ_SEGMENT_CRC_AT));
    }
    while (len >= FUZZ_RECORD_HEADER && off <= len - FUZZ_RECORD_HEADER) {
        uint8_t *h = p + off;
        uint32_t n = get_u32(h);
        size_t left = len - off - FUZZ_RECORD_HEADER;

        if ((mode & FUZZ_FIX_PAYLOAD_CRC) && n <= left)
            put_u32(h + FUZZ_RECORD_CRC_AT,
                    crc32c(0, h + FUZZ_RECORD_HEADER, n));
        if (mode & FUZZ_FIX_HEADER_CRC)
            put_u32(h + FUZZ_RECORD_HEADER_CRC_AT,
                    crc32c(0, h, FUZZ_RECORD_HEADER_CRC_AT));
        if (n == 0 || n > left)
            break;
        off += FUZZ_RECORD_HEADER + n;
    }
}

static void
write_segment(uint64_t number, const uint8_t *p, size_t len)
{
    char path[FUZZ_PATH_MAX + 64];
    int fd;

    snprintf(path, sizeof(path), "%s/wal-%016" PRIx64 ".log", fuzz_dir,
             number);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0, "cannot create a segment file");
    FUZZ_CHECK(len == 0 || write(fd, p, len) == (ssize_t)len,
               "cannot write a segment file");
    close(fd);
}

struct replay_log {
    size_t records;
    struct wal_position last;
    size_t last_len;
    int last_is_ours;
};

static int
replay(void *ctx, const uint8_t *data, size_t len,
       const struct wal_position *pos, char *err, size_t errlen)
{
    struct replay_log *log = ctx;
    unsigned sum = 0;

    (void)err;
    (void)errlen;
    FUZZ_CHECK(len >= 1 && len <= WAL_RECORD_MAX, "record length");
    for (size_t i = 0; i < len; i++)
        sum += data[i];   /* every byte must be readable */
    (void)sum;
    if (log->records > 0)
        FUZZ_CHECK(pos->segment > log->last.segment
                       || (pos->segment == log->last.segment
                           && pos->offset >= log->last.offset
                                                 + FUZZ_RECORD_HEADER
                                                 + log->last_len),
                   "records out of order or overlapping");
    log->records++;
    log->last = *pos;
    log->last_len = len;
    log->last_is_ours = len == sizeof(fuzz_record) - 1
                        && memcmp(data, fuzz_record, len) == 0;
    return 0;
}

static void
check_append_reopen(struct wal *w)
{
    static const struct wal_options fast = { .no_fsync = 1 };
    struct wal_position at;
    struct wal_open_stats stats;
    struct replay_log log = { 0 };
    char err[WAL_ERR_MAX];

    FUZZ_CHECK(wal_append(w, fuzz_record, sizeof(fuzz_record) - 1, &at, err,
                          sizeof(err)) == 0,
               err);
    wal_close(w);
    w = wal_open(fuzz_dir, NULL, &fast, replay, &log, &stats, err,
                 sizeof(err));
    FUZZ_CHECK(w != NULL, err);
    FUZZ_CHECK(stats.truncated == 0, "a clean log had a torn tail");
    FUZZ_CHECK(stats.records == log.records, "records counted");
    FUZZ_CHECK(log.records >= 1 && log.last_is_ours
                   && log.last.segment == at.segment
                   && log.last.offset == at.offset,
               "the appended record is not the last one replayed");
    wal_close(w);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct wal_options fast = { .no_fsync = 1 };
    struct wal_position from;
    struct wal_open_stats stats;
    struct replay_log log = { 0 };
    char err[WAL_ERR_MAX];
    unsigned mode;
    size_t split, len;
    uint8_t *bytes;
    struct wal *w;

    if (size < FUZZ_PREFIX)
        return 0;
    dir_make();
    mode = data[0];
    split = (size_t)data[1] | (size_t)data[2] << 8;
    len = size - FUZZ_PREFIX;
    bytes = malloc(len > 0 ? len : 1);
    FUZZ_CHECK(bytes != NULL, "out of memory");
    memcpy(bytes, data + FUZZ_PREFIX, len);
    if (mode & FUZZ_TWO_SEGMENTS) {
        size_t cut = split % (len + 1);

        fix_segment(bytes, cut, mode, 1);
        fix_segment(bytes + cut, len - cut, mode, 2);
        write_segment(1, bytes, cut);
        write_segment(2, bytes + cut, len - cut);
    } else {
        fix_segment(bytes, len, mode, 1);
        write_segment(1, bytes, len);
    }
    free(bytes);

    from.segment = (mode & FUZZ_FROM_SECOND) ? 2 : 1;
    from.offset = split;
    w = wal_open(fuzz_dir, (mode & FUZZ_FROM) ? &from : NULL, &fast, replay,
                 &log, &stats, err, sizeof(err));
    if (w != NULL) {
        FUZZ_CHECK(stats.records == log.records, "records counted");
        check_append_reopen(w);
    } else {
        FUZZ_CHECK(err[0] != '\0', "a failed open without a reason");
    }
    dir_empty();
    return 0;
}
