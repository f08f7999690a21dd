/*
 * crc32c: CRC-32C (Castagnoli), the checksum of the bus codec's message
 * body. Reflected polynomial 0x82F63B78, initial value and final xor
 * 0xFFFFFFFF, as in iSCSI (RFC 3720) and ext4, so any language's CRC-32C
 * library computes the same value.
 *
 *   crc32c(0, "123456789", 9) == 0xE3069283
 *   crc32c(crc32c(0, a, n), b, m) == crc32c(0, a || b, n + m)
 */
#ifndef TALLY_CRC32C_H
#define TALLY_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#define CRC32C_POLY_REFLECTED 0x82F63B78u

/* Returns the CRC-32C of LEN bytes at DATA (borrowed; may be NULL when LEN
 * is 0), continuing from INIT: pass 0 to start, or a previous result to
 * extend it over more bytes. Pure; thread-safe. */
uint32_t crc32c(uint32_t init, const void *data, size_t len);

/* The same, always by table: what crc32c does on a CPU without SSE4.2.
 * Exposed so that tests compare both paths. */
uint32_t crc32c_portable(uint32_t init, const void *data, size_t len);

#endif
