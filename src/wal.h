/*
 * wal: an aggregator's write-ahead log. An append-only sequence of
 * records in numbered segment files in one directory, made durable in
 * groups (many appends, one fdatasync). Layout: schema/wal.md.
 *
 *   dir/wal-0000000000000001.log   segment header, record, record, ...
 *   dir/wal-0000000000000002.log   (after wal_rotate)
 *
 *   open:   scan segments in order, hand every record at or after FROM to
 *           the replay callback; a torn record at the very end of the last
 *           segment (a crash mid-write) is cut off; damage anywhere else
 *           stops the open with the file and offset
 *   write:  wal_append ... wal_append, wal_sync (group commit)
 *   trim:   wal_rotate, then wal_trim once a snapshot covers the old
 *           segments
 *
 * A record is opaque bytes to this module (the aggregator logs bus
 * messages). Not thread-safe: one thread owns a struct wal.
 */
#ifndef TALLY_WAL_H
#define TALLY_WAL_H

#include <stddef.h>
#include <stdint.h>

#define WAL_ERR_MAX 256
#define WAL_RECORD_MAX (64u * 1024u * 1024u + 1024u)   /* payload bytes */
#define WAL_SEGMENT_MAX_DEFAULT (64u * 1024u * 1024u)

/* A place in the log: a segment number and a byte offset in it. Positions
 * order by (segment, offset). */
struct wal_position {
    uint64_t segment;
    uint64_t offset;
};

struct wal_options {
    uint64_t segment_max;   /* rotate when a segment would grow past this;
                               0 = WAL_SEGMENT_MAX_DEFAULT */
    int no_fsync;           /* UNSAFE, for tests and benchmarks only:
                               wal_sync does not fsync */
};

/* What wal_open found. */
struct wal_open_stats {
    uint64_t segments;      /* segment files read */
    uint64_t records;       /* records handed to replay */
    uint64_t bytes;         /* their payload bytes */
    uint64_t truncated;     /* bytes of a torn tail cut off (0 if none) */
};

/* Called for each record at or after the open's FROM position, in order.
 * DATA (LEN bytes) is borrowed for the call; POS is where the record
 * starts. Returns 0 to go on, -1 to stop the open (the open then fails
 * with the reason the callback wrote into ERR). */
typedef int (*wal_replay_fn)(void *ctx, const uint8_t *data, size_t len,
                             const struct wal_position *pos, char *err,
                             size_t errlen);

struct wal;

/* Opens the log in DIR (created if missing, one level; borrowed), replays
 * the records at or after FROM (NULL: all; borrowed) through REPLAY (not
 * NULL) and leaves the log ready to append after the last good record. A
 * FROM older than every segment on disk replays everything; a FROM past
 * the end of the log is an error. An empty directory starts segment 1.
 * OPTIONS and STATS may be NULL; STATS is filled in on success. Returns a
 * new wal owned by the
 * caller (wal_close), or NULL with a reason in ERR, e.g.
 * "wal-0000000000000003.log: bad record checksum at offset 4096 (not the
 * end of the log)". Records are replayed while the log is read, so a
 * failed open may already have replayed some: the caller discards what
 * REPLAY built. */
struct wal *wal_open(const char *dir, const struct wal_position *from,
                     const struct wal_options *options, wal_replay_fn replay,
                     void *ctx, struct wal_open_stats *stats, char *err,
                     size_t errlen);
/* Appends one record of LEN bytes (1..WAL_RECORD_MAX; DATA borrowed).
 * Rotates first when the segment would grow past segment_max and already
 * holds a record (a larger record gets a segment of its own). 0, or -1
 * with a reason (e.g. "No space left on device"): then nothing of this
 * record is left in the log, and earlier records are unaffected (if even
 * undoing a partial write fails, every later append fails until the log
 * is reopened). *POS (may be NULL) receives where the record starts. */
int wal_append(struct wal *w, const void *data, size_t len,
               struct wal_position *pos, char *err, size_t errlen);
/* Makes every appended record durable (fdatasync of the current segment;
 * a new segment and its directory entry were made durable when it was
 * created). 0, or -1 with a reason; after a
 * failure the records appended since the last successful sync must be
 * treated as not written (the caller may retry the sync). */
int wal_sync(struct wal *w, char *err, size_t errlen);
/* The position just after the last appended record. */
struct wal_position wal_end(const struct wal *w);
/* Makes the current segment durable (fdatasync) and closes it, then
 * starts the next one, durable at once (fdatasync, fsync of DIR): a
 * snapshot may name wal_end right after. */
int wal_rotate(struct wal *w, char *err, size_t errlen);
/* Removes the segments numbered below BEFORE's segment (borrowed): whole
 * segments only, never the current one; then fsyncs the directory. A
 * BEFORE past wal_end is an error. */
int wal_trim(struct wal *w, const struct wal_position *before, char *err,
             size_t errlen);
/* Bytes in all segments of the log. */
uint64_t wal_size(const struct wal *w);
/* Closes the files and frees W (NULL is fine). Does not sync. */
void wal_close(struct wal *w);

#endif
