/*
 * hash: the fixed hashes of the public contract.
 *
 *   hash_fnv1a64   64-bit FNV-1a (offset 0xcbf29ce484222325, prime
 *                  0x100000001b3). slot = hash_fnv1a64(name) % 4096; any
 *                  language can compute it (schema/slot-map.md).
 *   hash_mix64     a bijective 64-bit finalizer (the splitmix64 mixing
 *                  constants) that spreads FNV's weak low bits.
 *   hash_string64  hash_mix64(hash_fnv1a64(s)): what HyperLogLog hashes.
 *   hash_128       two independent 64-bit lanes, for cache keys and dedup
 *                  keys; not cryptographic.
 */
#ifndef TALLY_HASH_H
#define TALLY_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_FNV1A64_OFFSET 0xcbf29ce484222325ULL
#define HASH_FNV1A64_PRIME 0x100000001b3ULL

struct hash128 {
    uint64_t hi;
    uint64_t lo;
};

uint64_t hash_fnv1a64(const void *data, size_t len);
uint64_t hash_mix64(uint64_t x);
uint64_t hash_string64(const void *data, size_t len);
struct hash128 hash_128(const void *data, size_t len);
/* H as 16 bytes, hi then lo, each most significant byte first: the form
 * of batch keys and derived sub-batch keys (schema/dedup.md). */
void hash_128_bytes(struct hash128 h, uint8_t out[16]);

#endif
