/*
 * durable: write-ahead log, snapshots and replay for an aggregator, see
 * durable.h and schema/wal.md ("Snapshots").
 *
 * Snapshot file (snapshot.bin; snapshot.tmp while written):
 *   "TLYS", version u8 (2; 1 is still read), 3 reserved zero bytes,
 *   log position: segment u64 LE, offset u64 LE (the snapshot holds every
 *   record before it), created_us svarint,
 *   store bytes (varint length + store_encode), sub-batch keys and client
 *   batch keys (each varint length + dedup_encode), pending forwards
 *   (varint length + forward_encode), since version 2 the slot moves
 *   (varint length + move_encode), CRC-32C u32 LE of everything before.
 */
#include "durable.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "crc32c.h"
#include "daemon.h"
#include "log.h"
#include "xalloc.h"

#define DURABLE_RECORD_MESSAGE 1
#define DURABLE_RECORD_FORWARD_DONE 2
#define DURABLE_SNAP_MAGIC "TLYS"
#define DURABLE_SNAP_MAGIC_LEN 4
#define DURABLE_SNAP_VERSION 2
#define DURABLE_SNAP_VERSION_MIN 1
#define DURABLE_SNAP_RESERVED 3
#define DURABLE_SNAP_NAME "snapshot.bin"
#define DURABLE_SNAP_TMP "snapshot.tmp"
#define DURABLE_PATH_MAX 4096
#define DURABLE_DIR_MODE 0750
#define DURABLE_FILE_MODE 0640
#define DURABLE_SNAP_MAX (4ull * 1024 * 1024 * 1024)

struct durable {
    char *dir;
    struct wal *wal;
    struct dedup *dedup;
    struct dedup *batches;
    struct forward *forward;
    struct move *move;
    int no_fsync;
    durable_apply_fn apply;
    void *ctx;
    uint64_t logged_since_snapshot;
    struct durable_stats stats;
};

static int
durable_fail(char *err, size_t errlen, const char *what, const char *why)
{
    snprintf(err, errlen, "%s: %s", what, why);
    return -1;
}

static void
durable_path(const struct durable *d, const char *name, char *out)
{
    snprintf(out, DURABLE_PATH_MAX, "%s/%s", d->dir, name);
}

/* ---------------------------------------------------------------------- */
/* Snapshots                                                               */
/* ---------------------------------------------------------------------- */

/* Reads the whole file at PATH into a new buffer; 1 read, 0 absent, -1
 * error. */
static int
durable_read_file(const char *path, uint8_t **data, size_t *len, char *err,
                  size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    size_t got = 0;

    if (fd < 0)
        return errno == ENOENT ? 0
                               : durable_fail(err, errlen, path,
                                              strerror(errno));
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size > DURABLE_SNAP_MAX) {
        close(fd);
        return durable_fail(err, errlen, path, "cannot size the file");
    }
    *data = xmalloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, *data + got, (size_t)st.st_size - got);

        if (n <= 0) {
            close(fd);
            free(*data);
            return durable_fail(err, errlen, path, "short read");
        }
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return 1;
}

static int
durable_load_snapshot(struct durable *d, struct store *store,
                      int64_t horizon_us, struct wal_position *from,
                      int *found, char *err, size_t errlen)
{
    char path[DURABLE_PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    struct buf_reader in, part;
    const uint8_t *bytes, *magic;
    size_t n;
    uint8_t version, reserved[DURABLE_SNAP_RESERVED];
    int64_t created_us;
    uint32_t crc;
    int rc;

    durable_path(d, DURABLE_SNAP_NAME, path);
    rc = durable_read_file(path, &data, &len, err, errlen);
    *found = rc == 1;
    if (rc <= 0)
        return rc;
    rc = -1;
    buf_reader_init(&in, data, len);
    if (len < sizeof(crc)
        || crc32c(0, data, len - sizeof(crc))
               != (uint32_t)(data[len - 4] | data[len - 3] << 8
                             | data[len - 2] << 16
                             | (uint32_t)data[len - 1] << 24)) {
        durable_fail(err, errlen, path, "bad checksum");
        goto out;
    }
    in.len = len - sizeof(crc);
    if (buf_get_bytes(&in, &magic, DURABLE_SNAP_MAGIC_LEN) != 0
        || memcmp(magic, DURABLE_SNAP_MAGIC, DURABLE_SNAP_MAGIC_LEN) != 0
        || buf_get_u8(&in, &version) != 0
        || version < DURABLE_SNAP_VERSION_MIN
        || version > DURABLE_SNAP_VERSION
        || buf_get_bytes(&in, &bytes, DURABLE_SNAP_RESERVED) != 0
        || buf_get_u64(&in, &from->segment) != 0
        || buf_get_u64(&in, &from->offset) != 0
        || buf_get_svarint(&in, &created_us) != 0) {
        durable_fail(err, errlen, path, "bad header");
        goto out;
    }
    memcpy(reserved, bytes, sizeof(reserved));
    if (reserved[0] != 0 || reserved[1] != 0 || reserved[2] != 0) {
        durable_fail(err, errlen, path, "reserved bytes must be 0");
        goto out;
    }
    if (buf_get_string(&in, &bytes, &n, SIZE_MAX) != 0) {
        durable_fail(err, errlen, path, "truncated store");
        goto out;
    }
    buf_reader_init(&part, bytes, n);
    if (store_decode(store, &part, err, errlen) != 0
        || buf_remaining(&part) != 0)
        goto out;
    if (buf_get_string(&in, &bytes, &n, SIZE_MAX) != 0) {
        durable_fail(err, errlen, path, "truncated dedup set");
        goto out;
    }
    buf_reader_init(&part, bytes, n);
    d->dedup = dedup_decode(&part, horizon_us, err, errlen);
    if (d->dedup == NULL)
        goto out;
    if (buf_get_string(&in, &bytes, &n, SIZE_MAX) != 0) {
        durable_fail(err, errlen, path, "truncated batch key set");
        goto out;
    }
    buf_reader_init(&part, bytes, n);
    d->batches = dedup_decode(&part, horizon_us, err, errlen);
    if (d->batches == NULL)
        goto out;
    if (buf_get_string(&in, &bytes, &n, SIZE_MAX) != 0) {
        durable_fail(err, errlen, path, "truncated forwards");
        goto out;
    }
    buf_reader_init(&part, bytes, n);
    if (forward_decode(d->forward, &part, err, errlen) != 0)
        goto out;
    if (version >= 2) {
        if (buf_get_string(&in, &bytes, &n, SIZE_MAX) != 0) {
            durable_fail(err, errlen, path, "truncated slot moves");
            goto out;
        }
        buf_reader_init(&part, bytes, n);
        if (move_decode(d->move, &part, err, errlen) != 0
            || buf_remaining(&part) != 0)
            goto out;
    }
    if (buf_remaining(&in) != 0) {
        durable_fail(err, errlen, path, "trailing bytes");
        goto out;
    }
    d->stats.snapshot_us = created_us;
    rc = 0;
out:
    free(data);
    return rc;
}

static int
durable_fsync_dir(const struct durable *d, char *err, size_t errlen)
{
    int fd = open(d->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return durable_fail(err, errlen, d->dir, strerror(errno));
    rc = fsync(fd);
    close(fd);
    return rc == 0 ? 0 : durable_fail(err, errlen, d->dir, strerror(errno));
}

int
durable_snapshot(struct durable *d, struct store *store, char *err,
                 size_t errlen)
{
    char tmp[DURABLE_PATH_MAX], path[DURABLE_PATH_MAX];
    struct buf_writer out, part;
    struct wal_position pos;
    int64_t now = daemon_now_us();
    uint32_t crc;
    size_t done = 0;
    int fd, rc = -1;

    if (wal_rotate(d->wal, err, errlen) != 0)
        return -1;
    pos = wal_end(d->wal);
    buf_writer_create(&out, 4096);
    buf_writer_create(&part, 4096);
    buf_put_bytes(&out, DURABLE_SNAP_MAGIC, DURABLE_SNAP_MAGIC_LEN);
    buf_put_u8(&out, DURABLE_SNAP_VERSION);
    for (int i = 0; i < DURABLE_SNAP_RESERVED; i++)
        buf_put_u8(&out, 0);
    buf_put_u64(&out, pos.segment);
    buf_put_u64(&out, pos.offset);
    buf_put_svarint(&out, now);
    store_encode(store, &part);
    buf_put_string(&out, part.data, part.len);
    buf_writer_reset(&part);
    dedup_expire(d->dedup, now);
    dedup_encode(d->dedup, &part);
    buf_put_string(&out, part.data, part.len);
    buf_writer_reset(&part);
    dedup_expire(d->batches, now);
    dedup_encode(d->batches, &part);
    buf_put_string(&out, part.data, part.len);
    buf_writer_reset(&part);
    forward_encode(d->forward, &part);
    buf_put_string(&out, part.data, part.len);
    buf_writer_reset(&part);
    move_encode(d->move, &part);
    buf_put_string(&out, part.data, part.len);
    crc = crc32c(0, out.data, out.len);
    buf_put_u32(&out, crc);
    buf_writer_destroy(&part);

    durable_path(d, DURABLE_SNAP_TMP, tmp);
    durable_path(d, DURABLE_SNAP_NAME, path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
              DURABLE_FILE_MODE);
    if (fd < 0) {
        durable_fail(err, errlen, tmp, strerror(errno));
        goto out;
    }
    while (done < out.len) {
        ssize_t n = write(fd, out.data + done, out.len - done);

        if (n < 0) {
            durable_fail(err, errlen, tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            goto out;
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0) {
        durable_fail(err, errlen, tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        durable_fail(err, errlen, path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if (durable_fsync_dir(d, err, errlen) != 0)
        goto out;
    daemon_crash_point("snapshot");
    if (wal_trim(d->wal, &pos, err, errlen) != 0)
        goto out;
    d->logged_since_snapshot = 0;
    d->stats.snapshot_us = now;
    d->stats.snapshots++;
    rc = 0;
out:
    buf_writer_destroy(&out);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* The log                                                                 */
/* ---------------------------------------------------------------------- */

static int
durable_replay(void *ctx, const uint8_t *data, size_t len,
               const struct wal_position *pos, char *err, size_t errlen)
{
    struct durable *d = ctx;
    struct buf_reader in;
    uint8_t kind = 0;
    int64_t applied_us;

    buf_reader_init(&in, data, len);
    if (buf_get_u8(&in, &kind) == 0 && kind == DURABLE_RECORD_FORWARD_DONE
        && buf_remaining(&in) == FORWARD_KEY_SIZE) {
        forward_remove(d->forward, data + in.pos);
        return 0;
    }
    if (kind != DURABLE_RECORD_MESSAGE
        || buf_get_svarint(&in, &applied_us) != 0) {
        snprintf(err, errlen, "log record at segment %llu offset %llu: "
                 "unknown kind or truncated",
                 (unsigned long long)pos->segment,
                 (unsigned long long)pos->offset);
        return -1;
    }
    d->apply(d->ctx, data + in.pos, buf_remaining(&in), applied_us, 1);
    return 0;
}

struct durable *
durable_open(const char *dir, struct store *store, struct forward *forward,
             struct move *move, int64_t dedup_horizon_us, int no_fsync, durable_apply_fn apply,
             void *ctx, struct dedup **dedup, struct dedup **batches,
             char *err, size_t errlen)
{
    struct durable *d = xcalloc(1, sizeof(*d));
    struct wal_position from = {0, 0};
    struct wal_options options = {0};
    struct wal_open_stats ws;
    int64_t started = daemon_monotonic_us();
    int found;

    d->dir = xstrndup(dir, strlen(dir));
    d->no_fsync = no_fsync;
    d->forward = forward;
    d->move = move;
    d->apply = apply;
    d->ctx = ctx;
    if (mkdir(dir, DURABLE_DIR_MODE) != 0 && errno != EEXIST) {
        durable_fail(err, errlen, dir, strerror(errno));
        goto fail;
    }
    if (durable_load_snapshot(d, store, dedup_horizon_us, &from, &found, err,
                              errlen) != 0)
        goto fail;
    if (!found) {
        d->dedup = dedup_create(dedup_horizon_us);
        d->batches = dedup_create(dedup_horizon_us);
    }
    *dedup = d->dedup;
    *batches = d->batches;
    options.no_fsync = no_fsync;
    d->wal = wal_open(dir, found ? &from : NULL, &options, durable_replay, d,
                      &ws, err, errlen);
    if (d->wal == NULL)
        goto fail;
    d->stats.replayed_records = ws.records;
    d->stats.replayed_bytes = ws.bytes;
    d->stats.truncated_bytes = ws.truncated;
    d->stats.replay_us = daemon_monotonic_us() - started;
    d->logged_since_snapshot = ws.bytes;
    return d;

fail:
    *dedup = NULL;
    *batches = NULL;
    if (d->dedup != NULL)
        dedup_destroy(d->dedup);
    if (d->batches != NULL)
        dedup_destroy(d->batches);
    free(d->dir);
    free(d);
    return NULL;
}

void
durable_close(struct durable *d)
{
    if (d == NULL)
        return;
    wal_close(d->wal);
    dedup_destroy(d->dedup);
    dedup_destroy(d->batches);
    free(d->dir);
    free(d);
}

int
durable_log(struct durable *d, const void *message, size_t len,
            int64_t applied_us, char *err, size_t errlen)
{
    struct buf_writer rec;
    int rc;

    buf_writer_create(&rec, len + 16);
    buf_put_u8(&rec, DURABLE_RECORD_MESSAGE);
    buf_put_svarint(&rec, applied_us);
    buf_put_bytes(&rec, message, len);
    rc = wal_append(d->wal, rec.data, rec.len, NULL, err, errlen);
    if (rc == 0)
        d->logged_since_snapshot += rec.len;
    buf_writer_destroy(&rec);
    return rc;
}

int
durable_log_forward_done(struct durable *d,
                         const uint8_t key[FORWARD_KEY_SIZE], char *err,
                         size_t errlen)
{
    uint8_t rec[1 + FORWARD_KEY_SIZE];

    rec[0] = DURABLE_RECORD_FORWARD_DONE;
    memcpy(rec + 1, key, FORWARD_KEY_SIZE);
    if (wal_append(d->wal, rec, sizeof(rec), NULL, err, errlen) != 0)
        return -1;
    d->logged_since_snapshot += sizeof(rec);
    return 0;
}

int
durable_sync(struct durable *d, char *err, size_t errlen)
{
    return wal_sync(d->wal, err, errlen);
}

uint64_t
durable_log_since_snapshot(const struct durable *d)
{
    return d->logged_since_snapshot;
}

void
durable_stats(const struct durable *d, struct durable_stats *out)
{
    *out = d->stats;
    out->wal_bytes = wal_size(d->wal);
}
