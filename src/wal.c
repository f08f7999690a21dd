/*
 * wal: the write-ahead log of an aggregator, as numbered segment files in
 * one directory (layout and recovery rules: schema/wal.md).
 *
 *   wal-<16 hex>.log:  segment header | record | record | ...
 *   record:            length u32 | payload CRC u32 | header CRC u32 | payload
 *
 *   open:   list segments, check they are consecutive, then for each one
 *           check its header and walk its records; a torn record at the
 *           end of the last segment is cut off (ftruncate), anything else
 *           that does not check is an error naming the file and offset
 *   append: pwrite header and payload at the end; on failure ftruncate
 *           back to the record's start, so nothing of it is left
 *   sync:   fdatasync the segment; a new segment is made durable
 *           (fdatasync, fsync of the directory) when it is created
 */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "errmsg.h"
#include "xalloc.h"

#define WAL_MAGIC "TLYW"
#define WAL_MAGIC_SIZE 4
#define WAL_VERSION 1
/* Segment header: magic, version, 3 reserved, segment u64, 4 reserved,
 * CRC-32C of the 20 bytes before it. */
#define WAL_SEGMENT_HEADER_SIZE 24
#define WAL_SEGMENT_VERSION_AT 4
#define WAL_SEGMENT_NUMBER_AT 8
#define WAL_SEGMENT_NUMBER_END (WAL_SEGMENT_NUMBER_AT + 8)
#define WAL_SEGMENT_CRC_AT 20
/* Record header: payload length, payload CRC, CRC of those 8 bytes. */
#define WAL_RECORD_HEADER_SIZE 12
#define WAL_RECORD_CRC_AT 4
#define WAL_RECORD_HEADER_CRC_AT 8

#define WAL_NAME_PREFIX "wal-"
#define WAL_NAME_SUFFIX ".log"
#define WAL_NAME_DIGITS 16
#define WAL_NAME_LEN (sizeof(WAL_NAME_PREFIX) - 1 + WAL_NAME_DIGITS + \
                      sizeof(WAL_NAME_SUFFIX) - 1)
#define WAL_FIRST_SEGMENT 1
#define WAL_DIR_MODE 0750
#define WAL_FILE_MODE 0640

struct wal {
    char *dir;                  /* the directory path, for messages */
    int dir_fd;
    int fd;                     /* the current (last) segment, read-write */
    char name[WAL_NAME_LEN + 1]; /* its file name */
    uint64_t first;             /* the oldest segment on disk */
    uint64_t segment;           /* the current segment */
    uint64_t end;               /* offset after its last record */
    uint64_t old_bytes;         /* file sizes of segments first..segment-1 */
    uint64_t segment_max;
    int no_fsync;
    int dirty;                  /* appended since the last sync */
    int broken;                 /* a failed append could not be undone */
};

/* ---- bytes and files ------------------------------------------------ */

static void
put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void
put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t
get_u32(const uint8_t *p)
{
    uint32_t v = 0;

    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t
get_u64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int
position_cmp(const struct wal_position *a, const struct wal_position *b)
{
    if (a->segment != b->segment)
        return a->segment < b->segment ? -1 : 1;
    if (a->offset != b->offset)
        return a->offset < b->offset ? -1 : 1;
    return 0;
}

static void
segment_name(char out[WAL_NAME_LEN + 1], uint64_t number)
{
    snprintf(out, WAL_NAME_LEN + 1,
             WAL_NAME_PREFIX "%016" PRIx64 WAL_NAME_SUFFIX, number);
}

/* 0 and *NUMBER if NAME is exactly "wal-" 16 lower-case hex digits ".log". */
static int
segment_number(const char *name, uint64_t *number)
{
    const char *digits = name + sizeof(WAL_NAME_PREFIX) - 1;
    uint64_t n = 0;

    if (strlen(name) != WAL_NAME_LEN ||
        strncmp(name, WAL_NAME_PREFIX, sizeof(WAL_NAME_PREFIX) - 1) != 0 ||
        strcmp(digits + WAL_NAME_DIGITS, WAL_NAME_SUFFIX) != 0)
        return -1;
    for (int i = 0; i < WAL_NAME_DIGITS; i++) {
        char c = digits[i];

        if (c >= '0' && c <= '9')
            n = (n << 4) | (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            n = (n << 4) | (uint64_t)(c - 'a' + 10);
        else
            return -1;
    }
    *number = n;
    return 0;
}

static int
write_all(int fd, const void *data, size_t len, uint64_t offset)
{
    const uint8_t *p = data;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

/* Reads exactly LEN bytes; a file that shrank under us gives EIO. */
static int
read_all(int fd, void *data, size_t len, uint64_t offset)
{
    uint8_t *p = data;

    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

static int
number_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The segment numbers in DIR, ascending, in *NUMBERS (caller frees). */
static int
segment_list(const char *dir, uint64_t **numbers, size_t *count, char *err,
             size_t errlen)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t cap = 0;

    *numbers = NULL;
    *count = 0;
    if (d == NULL) {
        errmsg_say(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        uint64_t n;

        if (segment_number(e->d_name, &n) < 0)
            continue;
        if (*count == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            *numbers = xrealloc(*numbers, cap * sizeof(**numbers));
        }
        (*numbers)[(*count)++] = n;
    }
    closedir(d);
    if (*count > 0)
        qsort(*numbers, *count, sizeof(**numbers), number_cmp);
    return 0;
}

/* ---- segments ------------------------------------------------------- */

static int
segment_write_header(int fd, uint64_t number)
{
    uint8_t h[WAL_SEGMENT_HEADER_SIZE] = { 0 };

    memcpy(h, WAL_MAGIC, WAL_MAGIC_SIZE);
    h[WAL_SEGMENT_VERSION_AT] = WAL_VERSION;
    put_u64(h + WAL_SEGMENT_NUMBER_AT, number);
    put_u32(h + WAL_SEGMENT_CRC_AT, crc32c(0, h, WAL_SEGMENT_CRC_AT));
    return write_all(fd, h, sizeof(h), 0);
}

/* Checks the header of segment NUMBER (the file NAME): 0, or -1 with a
 * reason. */
static int
segment_check_header(int fd, const char *name, uint64_t number, char *err,
                     size_t errlen)
{
    uint8_t h[WAL_SEGMENT_HEADER_SIZE];
    static const uint8_t zero[WAL_SEGMENT_HEADER_SIZE];

    if (read_all(fd, h, sizeof(h), 0) < 0) {
        errmsg_say(err, errlen, "%s: %s", name, strerror(errno));
        return -1;
    }
    if (memcmp(h, WAL_MAGIC, WAL_MAGIC_SIZE) != 0) {
        errmsg_say(err, errlen, "%s: bad segment magic", name);
        return -1;
    }
    if (h[WAL_SEGMENT_VERSION_AT] != WAL_VERSION) {
        errmsg_say(err, errlen, "%s: unsupported segment version %u", name,
                (unsigned)h[WAL_SEGMENT_VERSION_AT]);
        return -1;
    }
    if (get_u32(h + WAL_SEGMENT_CRC_AT) != crc32c(0, h, WAL_SEGMENT_CRC_AT)) {
        errmsg_say(err, errlen, "%s: bad segment header checksum", name);
        return -1;
    }
    if (memcmp(h + WAL_SEGMENT_VERSION_AT + 1, zero,
               WAL_SEGMENT_NUMBER_AT - WAL_SEGMENT_VERSION_AT - 1) != 0 ||
        memcmp(h + WAL_SEGMENT_NUMBER_END, zero,
               WAL_SEGMENT_CRC_AT - WAL_SEGMENT_NUMBER_END) != 0) {
        errmsg_say(err, errlen, "%s: segment reserved bytes must be 0", name);
        return -1;
    }
    if (get_u64(h + WAL_SEGMENT_NUMBER_AT) != number) {
        errmsg_say(err, errlen, "%s: header says segment %" PRIu64, name,
                get_u64(h + WAL_SEGMENT_NUMBER_AT));
        return -1;
    }
    return 0;
}

/* Creates segment NUMBER holding only its header and makes it durable,
 * directory entry included; *FD is open read-write. On failure no file is
 * left behind. */
static int
segment_create(struct wal *w, uint64_t number, int *fd, char *err,
               size_t errlen)
{
    char name[WAL_NAME_LEN + 1];

    segment_name(name, number);
    *fd = openat(w->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
                 WAL_FILE_MODE);
    if (*fd < 0) {
        errmsg_say(err, errlen, "%s: %s", name, strerror(errno));
        return -1;
    }
    if (segment_write_header(*fd, number) < 0 ||
        (!w->no_fsync && (fdatasync(*fd) < 0 || fsync(w->dir_fd) < 0))) {
        errmsg_say(err, errlen, "%s: %s", name, strerror(errno));
        close(*fd);
        *fd = -1;
        unlinkat(w->dir_fd, name, 0);
        return -1;
    }
    return 0;
}

/* Makes segment NUMBER, open as FD, the one appends go to. */
static void
segment_make_current(struct wal *w, uint64_t number, int fd, uint64_t end)
{
    w->fd = fd;
    w->segment = number;
    w->end = end;
    segment_name(w->name, number);
}

/* Cuts the last segment at OFFSET (a torn tail) and makes that durable. */
static int
segment_cut(struct wal *w, int fd, const char *name, uint64_t offset,
            char *err, size_t errlen)
{
    if (ftruncate(fd, (off_t)offset) < 0 ||
        (!w->no_fsync && fdatasync(fd) < 0)) {
        errmsg_say(err, errlen, "%s: cutting the torn tail: %s", name,
                strerror(errno));
        return -1;
    }
    return 0;
}

/* Reads segment NUMBER record by record, hands those at or after FROM to
 * REPLAY, and makes it current if it is the LAST. */
static int
segment_scan(struct wal *w, uint64_t number, int last,
             const struct wal_position *from, wal_replay_fn replay, void *ctx,
             struct wal_open_stats *stats, char *err, size_t errlen)
{
    char name[WAL_NAME_LEN + 1];
    uint8_t *payload = NULL;
    size_t payload_cap = 0;
    struct stat sb;
    uint64_t size, offset = WAL_SEGMENT_HEADER_SIZE;
    int fd, rc = -1;

    segment_name(name, number);
    fd = openat(w->dir_fd, name, (last ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) < 0) {
        errmsg_say(err, errlen, "%s: %s", name, strerror(errno));
        goto done;
    }
    size = (uint64_t)sb.st_size;
    stats->segments++;
    if (size < WAL_SEGMENT_HEADER_SIZE) {
        /* A segment whose creation a crash cut short holds no record. */
        if (!last) {
            errmsg_say(err, errlen, "%s: truncated segment header", name);
            goto done;
        }
        stats->truncated += size;
        if (segment_cut(w, fd, name, 0, err, errlen) < 0)
            goto done;
        if (segment_write_header(fd, number) < 0) {
            errmsg_say(err, errlen, "%s: %s", name, strerror(errno));
            goto done;
        }
        w->dirty = 1;
        size = WAL_SEGMENT_HEADER_SIZE;
    } else if (segment_check_header(fd, name, number, err, errlen) < 0) {
        goto done;
    }

    while (offset < size) {
        uint64_t left = size - offset;
        struct wal_position pos = { .segment = number, .offset = offset };
        uint8_t h[WAL_RECORD_HEADER_SIZE];
        const char *damage = NULL;
        int at_end = 1;
        uint32_t len = 0;

        if (left < WAL_RECORD_HEADER_SIZE) {
            damage = "truncated record header";
        } else {
            if (read_all(fd, h, sizeof(h), offset) < 0) {
                errmsg_say(err, errlen, "%s: %s", name, strerror(errno));
                goto done;
            }
            if (get_u32(h + WAL_RECORD_HEADER_CRC_AT) !=
                crc32c(0, h, WAL_RECORD_HEADER_CRC_AT)) {
                errmsg_say(err, errlen,
                        "%s: bad record header checksum at offset %" PRIu64,
                        name, offset);
                goto done;
            }
            len = get_u32(h);
            if (len == 0 || len > WAL_RECORD_MAX) {
                errmsg_say(err, errlen,
                        "%s: record length %" PRIu32 " at offset %" PRIu64
                        " out of range", name, len, offset);
                goto done;
            }
            if (len > left - WAL_RECORD_HEADER_SIZE) {
                damage = "truncated record";
            } else {
                if (len > payload_cap) {
                    payload_cap = len;
                    payload = xrealloc(payload, payload_cap);
                }
                if (read_all(fd, payload, len,
                              offset + WAL_RECORD_HEADER_SIZE) < 0) {
                    errmsg_say(err, errlen, "%s: %s", name, strerror(errno));
                    goto done;
                }
                if (crc32c(0, payload, len) != get_u32(h + WAL_RECORD_CRC_AT)) {
                    damage = "bad record checksum";
                    at_end = len == left - WAL_RECORD_HEADER_SIZE;
                }
            }
        }
        if (damage != NULL) {
            if (!last || !at_end) {
                errmsg_say(err, errlen,
                        "%s: %s at offset %" PRIu64 " (not the end of the log)",
                        name, damage, offset);
                goto done;
            }
            stats->truncated += left;
            if (segment_cut(w, fd, name, offset, err, errlen) < 0)
                goto done;
            size = offset;
            break;
        }
        if (from == NULL || position_cmp(&pos, from) >= 0) {
            if (replay(ctx, payload, len, &pos, err, errlen) < 0)
                goto done;
            stats->records++;
            stats->bytes += len;
        }
        offset += WAL_RECORD_HEADER_SIZE + (uint64_t)len;
    }

    if (last) {
        segment_make_current(w, number, fd, size);
        fd = -1;
    } else {
        w->old_bytes += size;
    }
    rc = 0;
done:
    free(payload);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---- the log -------------------------------------------------------- */

struct wal *
wal_open(const char *dir, const struct wal_position *from,
         const struct wal_options *options, wal_replay_fn replay, void *ctx,
         struct wal_open_stats *stats, char *err, size_t errlen)
{
    struct wal *w = xcalloc(1, sizeof(*w));
    struct wal_open_stats found = { 0 };
    struct wal_position end;
    uint64_t *numbers = NULL;
    size_t count = 0;
    int fd;

    w->dir = xstrndup(dir, strlen(dir));
    w->dir_fd = w->fd = -1;
    w->segment_max = WAL_SEGMENT_MAX_DEFAULT;
    if (options != NULL) {
        if (options->segment_max != 0)
            w->segment_max = options->segment_max;
        w->no_fsync = options->no_fsync;
    }
    if (mkdir(dir, WAL_DIR_MODE) < 0 && errno != EEXIST) {
        errmsg_say(err, errlen, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    w->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dir_fd < 0) {
        errmsg_say(err, errlen, "%s: %s", dir, strerror(errno));
        goto fail;
    }
    if (segment_list(dir, &numbers, &count, err, errlen) < 0)
        goto fail;

    if (count == 0) {
        if (segment_create(w, WAL_FIRST_SEGMENT, &fd, err, errlen) < 0)
            goto fail;
        w->first = WAL_FIRST_SEGMENT;
        segment_make_current(w, WAL_FIRST_SEGMENT, fd, WAL_SEGMENT_HEADER_SIZE);
    } else {
        w->first = numbers[0];
    }
    for (size_t i = 1; i < count; i++) {
        if (numbers[i] != numbers[i - 1] + 1) {
            char a[WAL_NAME_LEN + 1], b[WAL_NAME_LEN + 1];

            segment_name(a, numbers[i - 1]);
            segment_name(b, numbers[i]);
            errmsg_say(err, errlen, "segment gap: %s is followed by %s", a, b);
            goto fail;
        }
    }
    for (size_t i = 0; i < count; i++) {
        if (segment_scan(w, numbers[i], i + 1 == count, from, replay, ctx,
                         &found, err, errlen) < 0)
            goto fail;
    }

    end = wal_end(w);
    if (from != NULL && position_cmp(from, &end) > 0) {
        errmsg_say(err, errlen,
                "replay position %" PRIu64 ":%" PRIu64
                " is past the end of the log (%" PRIu64 ":%" PRIu64 ")",
                from->segment, from->offset, end.segment, end.offset);
        goto fail;
    }
    free(numbers);
    if (stats != NULL)
        *stats = found;
    return w;

fail:
    free(numbers);
    wal_close(w);
    return NULL;
}

int
wal_append(struct wal *w, const void *data, size_t len,
           struct wal_position *pos, char *err, size_t errlen)
{
    uint8_t h[WAL_RECORD_HEADER_SIZE];
    uint64_t start;

    if (w->broken) {
        errmsg_say(err, errlen,
                "%s: a failed append could not be undone; reopen the log",
                w->name);
        return -1;
    }
    if (len == 0 || len > WAL_RECORD_MAX) {
        errmsg_say(err, errlen, "record length %zu out of range (1..%u)", len,
                WAL_RECORD_MAX);
        return -1;
    }
    /* A record larger than segment_max gets a segment of its own. */
    if (w->end > WAL_SEGMENT_HEADER_SIZE &&
        w->end + WAL_RECORD_HEADER_SIZE + len > w->segment_max &&
        wal_rotate(w, err, errlen) < 0)
        return -1;

    start = w->end;
    put_u32(h, (uint32_t)len);
    put_u32(h + WAL_RECORD_CRC_AT, crc32c(0, data, len));
    put_u32(h + WAL_RECORD_HEADER_CRC_AT,
            crc32c(0, h, WAL_RECORD_HEADER_CRC_AT));
    if (write_all(w->fd, h, sizeof(h), start) < 0 ||
        write_all(w->fd, data, len, start + sizeof(h)) < 0) {
        int saved = errno;

        /* Undo a partial write, so that nothing of this record is left. */
        if (ftruncate(w->fd, (off_t)start) < 0)
            w->broken = 1;
        errmsg_say(err, errlen, "%s: %s", w->name, strerror(saved));
        return -1;
    }
    w->end = start + sizeof(h) + len;
    w->dirty = 1;
    if (pos != NULL) {
        pos->segment = w->segment;
        pos->offset = start;
    }
    return 0;
}

int
wal_sync(struct wal *w, char *err, size_t errlen)
{
    if (w->dirty && !w->no_fsync && fdatasync(w->fd) < 0) {
        errmsg_say(err, errlen, "%s: fdatasync: %s", w->name, strerror(errno));
        return -1;
    }
    w->dirty = 0;
    return 0;
}

struct wal_position
wal_end(const struct wal *w)
{
    struct wal_position end = { .segment = w->segment, .offset = w->end };

    return end;
}

int
wal_rotate(struct wal *w, char *err, size_t errlen)
{
    int fd;

    /* wal_sync only reaches the current segment: finish this one now. */
    if (w->dirty && !w->no_fsync && fdatasync(w->fd) < 0) {
        errmsg_say(err, errlen, "%s: fdatasync: %s", w->name, strerror(errno));
        return -1;
    }
    w->dirty = 0;
    if (segment_create(w, w->segment + 1, &fd, err, errlen) < 0)
        return -1;
    close(w->fd);
    w->old_bytes += w->end;
    segment_make_current(w, w->segment + 1, fd, WAL_SEGMENT_HEADER_SIZE);
    return 0;
}

int
wal_trim(struct wal *w, const struct wal_position *before, char *err,
         size_t errlen)
{
    struct wal_position end = wal_end(w);
    int removed = 0;

    if (position_cmp(before, &end) > 0) {
        errmsg_say(err, errlen,
                "trim position %" PRIu64 ":%" PRIu64
                " is past the end of the log (%" PRIu64 ":%" PRIu64 ")",
                before->segment, before->offset, end.segment, end.offset);
        return -1;
    }
    /* Oldest first, so that a crash part way leaves no gap. */
    while (w->first < before->segment) {
        char name[WAL_NAME_LEN + 1];
        struct stat sb;

        segment_name(name, w->first);
        if (fstatat(w->dir_fd, name, &sb, 0) < 0 ||
            unlinkat(w->dir_fd, name, 0) < 0) {
            errmsg_say(err, errlen, "%s: %s", name, strerror(errno));
            return -1;
        }
        w->old_bytes -= (uint64_t)sb.st_size;
        w->first++;
        removed = 1;
    }
    if (removed && !w->no_fsync && fsync(w->dir_fd) < 0) {
        errmsg_say(err, errlen, "%s: fsync: %s", w->dir, strerror(errno));
        return -1;
    }
    return 0;
}

uint64_t
wal_size(const struct wal *w)
{
    return w->old_bytes + w->end;
}

void
wal_close(struct wal *w)
{
    if (w == NULL)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (w->dir_fd >= 0)
        close(w->dir_fd);
    free(w->dir);
    free(w);
}
