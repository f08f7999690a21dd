/*
 * buf: growable writer and bounds-checked reader for the binary formats.
 * Every reader function checks the remaining length before touching a byte,
 * so a decoder built on them cannot read out of bounds.
 */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

#define BUF_VARINT_MAX_BYTES 10

void
buf_writer_create(struct buf_writer *w, size_t initial_capacity)
{
    w->cap = initial_capacity < 16 ? 16 : initial_capacity;
    w->data = xmalloc(w->cap);
    w->len = 0;
}

void
buf_writer_destroy(struct buf_writer *w)
{
    free(w->data);
    w->data = NULL;
    w->len = w->cap = 0;
}

uint8_t *
buf_writer_release(struct buf_writer *w, size_t *len)
{
    uint8_t *data = w->data;

    if (len != NULL)
        *len = w->len;
    w->data = NULL;
    w->len = w->cap = 0;
    return data;
}

void
buf_writer_reset(struct buf_writer *w)
{
    w->len = 0;
}

static uint8_t *
buf_reserve(struct buf_writer *w, size_t n)
{
    if (w->cap - w->len < n) {
        size_t cap = w->cap == 0 ? 16 : w->cap;

        while (cap - w->len < n)
            cap *= 2;
        w->data = xrealloc(w->data, cap);
        w->cap = cap;
    }
    return w->data + w->len;
}

void
buf_put_u8(struct buf_writer *w, uint8_t v)
{
    *buf_reserve(w, 1) = v;
    w->len += 1;
}

void
buf_put_u16(struct buf_writer *w, uint16_t v)
{
    uint8_t *p = buf_reserve(w, 2);

    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    w->len += 2;
}

void
buf_put_u32(struct buf_writer *w, uint32_t v)
{
    uint8_t *p = buf_reserve(w, 4);

    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    w->len += 4;
}

void
buf_put_u64(struct buf_writer *w, uint64_t v)
{
    uint8_t *p = buf_reserve(w, 8);

    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    w->len += 8;
}

void
buf_put_double(struct buf_writer *w, double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    buf_put_u64(w, bits);
}

void
buf_put_varint(struct buf_writer *w, uint64_t v)
{
    uint8_t *p = buf_reserve(w, BUF_VARINT_MAX_BYTES);
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    w->len += n;
}

void
buf_put_base64(struct buf_writer *out, const void *data, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const uint8_t *p = data;
    size_t i;

    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

        buf_put_u8(out, (uint8_t)alphabet[v >> 18 & 63]);
        buf_put_u8(out, (uint8_t)alphabet[v >> 12 & 63]);
        buf_put_u8(out, (uint8_t)alphabet[v >> 6 & 63]);
        buf_put_u8(out, (uint8_t)alphabet[v & 63]);
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;

        buf_put_u8(out, (uint8_t)alphabet[v >> 18 & 63]);
        buf_put_u8(out, (uint8_t)alphabet[v >> 12 & 63]);
        buf_put_bytes(out, "==", 2);
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;

        buf_put_u8(out, (uint8_t)alphabet[v >> 18 & 63]);
        buf_put_u8(out, (uint8_t)alphabet[v >> 12 & 63]);
        buf_put_u8(out, (uint8_t)alphabet[v >> 6 & 63]);
        buf_put_u8(out, '=');
    }
}

int
buf_compare(const void *a, size_t alen, const void *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

uint64_t
buf_zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

int64_t
buf_unzigzag(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

void
buf_put_svarint(struct buf_writer *w, int64_t v)
{
    buf_put_varint(w, buf_zigzag(v));
}

void
buf_put_bytes(struct buf_writer *w, const void *p, size_t n)
{
    if (n == 0)
        return;
    memcpy(buf_reserve(w, n), p, n);
    w->len += n;
}

void
buf_put_string(struct buf_writer *w, const void *p, size_t n)
{
    buf_put_varint(w, n);
    buf_put_bytes(w, p, n);
}

void
buf_patch_u32(struct buf_writer *w, size_t offset, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        w->data[offset + (size_t)i] = (uint8_t)(v >> (8 * i));
}

void
buf_reader_init(struct buf_reader *r, const void *data, size_t len)
{
    r->data = data;
    r->len = len;
    r->pos = 0;
}

size_t
buf_remaining(const struct buf_reader *r)
{
    return r->len - r->pos;
}

int
buf_get_u8(struct buf_reader *r, uint8_t *v)
{
    if (buf_remaining(r) < 1)
        return -1;
    *v = r->data[r->pos++];
    return 0;
}

int
buf_get_u16(struct buf_reader *r, uint16_t *v)
{
    if (buf_remaining(r) < 2)
        return -1;
    *v = (uint16_t)(r->data[r->pos] | (r->data[r->pos + 1] << 8));
    r->pos += 2;
    return 0;
}

int
buf_get_u32(struct buf_reader *r, uint32_t *v)
{
    uint32_t x = 0;

    if (buf_remaining(r) < 4)
        return -1;
    for (int i = 0; i < 4; i++)
        x |= (uint32_t)r->data[r->pos + (size_t)i] << (8 * i);
    r->pos += 4;
    *v = x;
    return 0;
}

int
buf_get_u64(struct buf_reader *r, uint64_t *v)
{
    uint64_t x = 0;

    if (buf_remaining(r) < 8)
        return -1;
    for (int i = 0; i < 8; i++)
        x |= (uint64_t)r->data[r->pos + (size_t)i] << (8 * i);
    r->pos += 8;
    *v = x;
    return 0;
}

int
buf_get_double(struct buf_reader *r, double *v)
{
    uint64_t bits;

    if (buf_get_u64(r, &bits) != 0)
        return -1;
    memcpy(v, &bits, sizeof(*v));
    return 0;
}

int
buf_get_varint(struct buf_reader *r, uint64_t *v)
{
    uint64_t x = 0;

    for (int i = 0; i < BUF_VARINT_MAX_BYTES; i++) {
        uint8_t b;

        if (r->pos >= r->len)
            return -1;
        b = r->data[r->pos++];
        if (i == BUF_VARINT_MAX_BYTES - 1 && b > 1)
            return -1;             /* more than 64 bits */
        if (i > 0 && b == 0)
            return -1;             /* overlong: not the shortest form */
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

int
buf_get_svarint(struct buf_reader *r, int64_t *v)
{
    uint64_t u;

    if (buf_get_varint(r, &u) != 0)
        return -1;
    *v = buf_unzigzag(u);
    return 0;
}

int
buf_get_bytes(struct buf_reader *r, const uint8_t **p, size_t n)
{
    if (buf_remaining(r) < n)
        return -1;
    *p = r->data + r->pos;
    r->pos += n;
    return 0;
}

int
buf_get_string(struct buf_reader *r, const uint8_t **p, size_t *n, size_t max)
{
    uint64_t len;

    if (buf_get_varint(r, &len) != 0 || len > max || len > buf_remaining(r))
        return -1;
    *n = (size_t)len;
    return buf_get_bytes(r, p, (size_t)len);
}
