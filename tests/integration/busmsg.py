"""
busmsg: builds tally bus messages (schema/bus-batch.md) and slot numbers
(schema/slot-map.md) in Python, for tests that hand the aggregators a
message no frontend would make.
"""

import os
import struct
import time

FNV_BASIS = 0xcbf29ce484222325
FNV_PRIME = 0x100000001b3
KIND_EVENT = 1
KIND_MAP = 6
TYPE_COUNTER = 1


def slot(name):
    """FNV-1a-64 of NAME mod 4096."""
    h = FNV_BASIS
    for b in name.encode():
        h = ((h ^ b) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h % 4096


def names_in(lo, hi, count, prefix):
    """COUNT names PREFIX.m<i> whose slots lie in LO..HI."""
    out, i = [], 0
    while len(out) < count:
        n = '%s.m%d' % (prefix, i)
        if lo <= slot(n) <= hi:
            out.append(n)
        i += 1
    return out


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | 0x80 if v else b)
        if not v:
            return bytes(out)


def zigzag(v):
    return varint(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)


def string(b):
    if isinstance(b, str):
        b = b.encode()
    return varint(len(b)) + b


def entry(kind, payload):
    return bytes([kind]) + varint(len(payload)) + payload


def counter_event(name, value=1.0, generation=0):
    """An EVENT entry: counter NAME += VALUE, now, no source."""
    p = struct.pack('<HB', slot(name), TYPE_COUNTER) + varint(generation)
    p += string(name) + zigzag(int(time.time() * 1e6))
    p += struct.pack('<d', value) + string('')
    return entry(KIND_EVENT, p)


def map_entry(text):
    return entry(KIND_MAP, string(text))


def subbatch(entries, map_version, origin='test'):
    """A sub-batch with a random key, no flags, made now."""
    sb = os.urandom(16) + bytes([0]) + string(origin) + varint(map_version)
    sb += bytes([0]) + zigzag(int(time.time() * 1e6)) + varint(0)
    return sb + varint(len(entries)) + b''.join(entries)


def message(subbatches):
    body = varint(len(subbatches)) + b''.join(subbatches)
    return (b'TLYB' + bytes([1, 0, 0, 0])
            + struct.pack('<II', len(body), crc32c(body)) + body)
