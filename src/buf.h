/*
 * buf: byte buffers for the binary formats (bus codec, state encodings,
 * cache values, WAL). A writer grows as needed; a reader never reads past
 * its end and reports a short or malformed field with -1.
 *
 * Integers are little-endian. A "varint" is unsigned LEB128 of at most 10
 * bytes in its shortest form (a longer, overlong or overflowing one is
 * malformed, so equal values have equal bytes); signed values use
 * zigzag before LEB128. Doubles are IEEE-754 binary64, little-endian.
 */
#ifndef TALLY_BUF_H
#define TALLY_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf_writer {
    uint8_t *data;      /* owned; grows with xrealloc */
    size_t len;
    size_t cap;
};

struct buf_reader {
    const uint8_t *data;   /* borrowed */
    size_t len;
    size_t pos;
};

/* Writer lifecycle. buf_writer_destroy frees DATA; buf_writer_release hands
 * DATA (and its length) to the caller and leaves the writer empty. */
void buf_writer_create(struct buf_writer *w, size_t initial_capacity);
void buf_writer_destroy(struct buf_writer *w);
uint8_t *buf_writer_release(struct buf_writer *w, size_t *len);
void buf_writer_reset(struct buf_writer *w);   /* len = 0, keeps memory */

void buf_put_u8(struct buf_writer *w, uint8_t v);
void buf_put_u16(struct buf_writer *w, uint16_t v);
void buf_put_u32(struct buf_writer *w, uint32_t v);
void buf_put_u64(struct buf_writer *w, uint64_t v);
void buf_put_double(struct buf_writer *w, double v);
void buf_put_varint(struct buf_writer *w, uint64_t v);
void buf_put_svarint(struct buf_writer *w, int64_t v);   /* zigzag */
void buf_put_bytes(struct buf_writer *w, const void *p, size_t n);
/* varint length, then the bytes */
void buf_put_string(struct buf_writer *w, const void *p, size_t n);
/* Overwrites 4 bytes at OFFSET (which must already be written). */
void buf_patch_u32(struct buf_writer *w, size_t offset, uint32_t v);

/* The reader borrows DATA; it must outlive the reader and anything decoded
 * from it as a borrowed pointer. */
void buf_reader_init(struct buf_reader *r, const void *data, size_t len);
size_t buf_remaining(const struct buf_reader *r);

/* Each returns 0 and stores the value, or -1 (short or malformed input; the
 * reader position is then unspecified and the reader must be abandoned). */
int buf_get_u8(struct buf_reader *r, uint8_t *v);
int buf_get_u16(struct buf_reader *r, uint16_t *v);
int buf_get_u32(struct buf_reader *r, uint32_t *v);
int buf_get_u64(struct buf_reader *r, uint64_t *v);
int buf_get_double(struct buf_reader *r, double *v);
int buf_get_varint(struct buf_reader *r, uint64_t *v);
int buf_get_svarint(struct buf_reader *r, int64_t *v);
/* Points *P into the reader's data (borrowed), N bytes. */
int buf_get_bytes(struct buf_reader *r, const uint8_t **p, size_t n);
/* A varint length no larger than MAX, then that many bytes (borrowed). */
int buf_get_string(struct buf_reader *r, const uint8_t **p, size_t *n,
                   size_t max);

/* Byte-wise order of two byte strings, the shorter first on a common
 * prefix: <0, 0 or >0 like memcmp. */
int buf_compare(const void *a, size_t alen, const void *b, size_t blen);

/* Appends the standard base64 (RFC 4648, with padding) of LEN bytes at
 * DATA to OUT; no NUL is added. */
void buf_put_base64(struct buf_writer *out, const void *data, size_t len);

uint64_t buf_zigzag(int64_t v);
int64_t buf_unzigzag(uint64_t v);

#endif
