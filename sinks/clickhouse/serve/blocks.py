"""ClickHouse's own compressed block format, for `compress=1` and `decompress=1`.

Clients that compress the way ClickHouse's native protocol does (clickhouse-go
with LZ4/ZSTD over HTTP, the JDBC driver's default) send request bodies as, and
ask for responses in, a sequence of blocks:

    16 bytes   CityHash128 (v1.0.2) of the rest of the block, high 64 bits first, each little-endian
     1 byte    method: 0x82 LZ4 (raw block), 0x90 ZSTD, 0x02 none
     4 bytes   compressed size, header (9 bytes) included, little-endian
     4 bytes   uncompressed size, little-endian
     ...       the compressed data

The layout is the one MergeTree column files use on disk; the tests check it
against files the engine wrote. Decompression trusts no size a client sent: a
block whose stated size would take the output past `max_size` is refused
before anything is allocated for it, and a zstd block cannot expand past its
stated size. Nor are blocks free: each costs a checksum and a decompressor call
whatever it holds (an empty one is 25 bytes), so a body may hold at most 1,024
blocks plus one per 4 KiB they decode to, as codecs.py allows gzip members and
frames (clients write blocks of up to 1 MiB, as `max_compress_block_size` does).
"""

from __future__ import annotations

import struct
import sys
from typing import Final

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

from sinks.clickhouse.serve.codecs import DEFAULT_MAX_SIZE, members_allowed, too_large
from sinks.clickhouse.serve.errors import CANNOT_DECOMPRESS, NOT_IMPLEMENTED, ServeError

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

NONE: Final = 0x02
LZ4: Final = 0x82
ZSTD: Final = 0x90
METHODS: Final = {"lz4": LZ4, "zstd": ZSTD, "none": NONE}
HEADER: Final = 9
CHECKSUM: Final = 16
MAX_BLOCK: Final = 1 << 20
_MASK: Final = (1 << 64) - 1


def checksum(block: bytes) -> bytes:
    value = CityHash128(block)
    return struct.pack("<QQ", value >> 64, value & _MASK)


def _compress(chunk: bytes, method: int) -> bytes:
    if method == LZ4:
        return bytes(lz4.block.compress(chunk, store_size=False))
    if method == ZSTD:
        return zstd.compress(chunk)
    return chunk


def compress_blocks(data: bytes, method: str = "lz4") -> bytes:
    code = METHODS.get(method.lower())
    if code is None:
        msg = f"Unknown network compression method {method!r}; use lz4, zstd or none"
        raise ServeError(NOT_IMPLEMENTED, msg)
    out = bytearray()
    for start in range(0, max(len(data), 1), MAX_BLOCK):
        chunk = data[start : start + MAX_BLOCK]
        payload = _compress(chunk, code)
        block = struct.pack("<BII", code, HEADER + len(payload), len(chunk)) + payload
        out += checksum(block) + block
    return bytes(out)


def _decompress(block: bytes, method: int, size: int) -> bytes:
    payload = block[HEADER:]
    if method == LZ4:
        return bytes(lz4.block.decompress(payload, uncompressed_size=size))
    if method == ZSTD:
        # one frame, and never more than the header said: the header is what the size check trusted
        stream = zstd.ZstdDecompressor()
        chunk = stream.decompress(payload, size + 1)
        if not stream.eof:
            msg = f"ZSTD block is not one whole frame of {size} bytes"
            raise ValueError(msg)
        return chunk
    if method == NONE:
        return payload
    msg = f"Unknown compression method byte 0x{method:02x}"
    raise ServeError(CANNOT_DECOMPRESS, msg)


def decompress_blocks(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The concatenated contents of the blocks (raises ServeError CANNOT_DECOMPRESS, or
    BAD_ARGUMENTS/413 when they hold more than `max_size` bytes)."""
    out = bytearray()
    offset = 0
    blocks = 0
    while offset < len(data):
        # an empty block is 25 bytes and costs ~4 us: 256 MiB of them held the server ~40 s
        if blocks >= members_allowed(len(out)):
            msg = f"{blocks} compressed blocks holding {len(out)} bytes and more to come: too many for that"
            raise ServeError(CANNOT_DECOMPRESS, msg)
        blocks += 1
        if len(data) - offset < CHECKSUM + HEADER:
            msg = "Truncated compressed block header"
            raise ServeError(CANNOT_DECOMPRESS, msg)
        method, size, plain = struct.unpack_from("<BII", data, offset + CHECKSUM)
        block = data[offset + CHECKSUM : offset + CHECKSUM + size]
        if len(block) != size or size < HEADER:
            msg = f"Truncated compressed block: {len(block)} of {size} bytes"
            raise ServeError(CANNOT_DECOMPRESS, msg)
        if checksum(block) != data[offset : offset + CHECKSUM]:
            msg = "Checksum doesn't match: corrupted data"
            raise ServeError(CANNOT_DECOMPRESS, msg)
        if len(out) + plain > max_size:
            raise too_large(max_size)
        try:
            chunk = _decompress(block, method, plain)
        except (RuntimeError, ValueError, zstd.ZstdError) as exc:
            msg = f"Cannot decompress block: {exc}"
            raise ServeError(CANNOT_DECOMPRESS, msg) from exc
        if len(chunk) != plain:
            msg = f"Block decompressed to {len(chunk)} bytes, header says {plain}"
            raise ServeError(CANNOT_DECOMPRESS, msg)
        out += chunk
        offset += CHECKSUM + size
    return bytes(out)
