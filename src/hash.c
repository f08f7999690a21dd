/*
 * hash: FNV-1a 64 (the slot function), a 64-bit finalizer, and a 128-bit
 * hash built from two FNV-1a lanes with different offsets, each finalized.
 */
#include "hash.h"

/* A second offset basis for the other 128-bit lane: FNV-1a's offset
 * folded with the 64-bit golden ratio. */
#define HASH_LANE2_OFFSET (HASH_FNV1A64_OFFSET ^ 0x9e3779b97f4a7c15ULL)

static uint64_t
hash_fnv1a64_from(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= HASH_FNV1A64_PRIME;
    }
    return h;
}

uint64_t
hash_fnv1a64(const void *data, size_t len)
{
    return hash_fnv1a64_from(HASH_FNV1A64_OFFSET, data, len);
}

uint64_t
hash_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t
hash_string64(const void *data, size_t len)
{
    return hash_mix64(hash_fnv1a64(data, len));
}

struct hash128
hash_128(const void *data, size_t len)
{
    struct hash128 h;

    h.hi = hash_mix64(hash_fnv1a64(data, len));
    h.lo = hash_mix64(hash_fnv1a64_from(HASH_LANE2_OFFSET, data, len) ^ len);
    return h;
}

void
hash_128_bytes(struct hash128 h, uint8_t out[16])
{
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(h.hi >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(h.lo >> (56 - 8 * i));
    }
}
