"""ClickHouse's compressed block format (`decompress=1`): what clients write decodes, and a body of
many tiny blocks is refused instead of costing a checksum and a decompressor call per 25 bytes.

Found by attack: an anonymous reader's POST with `decompress=1` and 64 MiB of empty blocks held the
server 10 s (one core, the GIL held in the loop); the 256 MiB allowed, ~40 s. The same allowance as
gzip members and lz4/zstd frames (codecs.py): 1,024 blocks, and one more per 4 KiB they decode to.
"""

from __future__ import annotations

import struct

import lz4.block
import pytest

from sinks.clickhouse.serve.blocks import (
    HEADER,
    LZ4,
    NONE,
    checksum,
    compress_blocks,
    decompress_blocks,
)
from sinks.clickhouse.serve.errors import CANNOT_DECOMPRESS, ServeError

pytestmark = pytest.mark.unit


def _block(method: int, payload: bytes, plain: int) -> bytes:
    block = struct.pack("<BII", method, HEADER + len(payload), plain) + payload
    return checksum(block) + block


EMPTY = _block(NONE, b"", 0)


def test_a_body_of_empty_blocks_is_refused() -> None:
    body = EMPTY * ((1 << 20) // len(EMPTY))  # 1 MiB: 41,943 blocks holding nothing (old code: decoded)
    with pytest.raises(ServeError) as info:
        decompress_blocks(body)
    assert info.value.code == CANNOT_DECOMPRESS
    assert decompress_blocks(EMPTY * 1024) == b""  # the allowance itself is decoded


def test_one_byte_blocks_past_the_allowance_are_refused() -> None:
    one = _block(LZ4, bytes(lz4.block.compress(b"x", store_size=False)), 1)
    with pytest.raises(ServeError) as info:
        decompress_blocks(one * 2000)
    assert info.value.code == CANNOT_DECOMPRESS


@pytest.mark.parametrize("block_bytes", [4096, 64 << 10, 1 << 20])
def test_what_clients_write_decodes(block_bytes: int) -> None:
    # clients write a block per chunk of data (ClickHouse's max_compress_block_size: 1 MiB); even 4 KiB
    # blocks are within the allowance, however many there are
    data = bytes(range(256)) * (8 << 20 >> 8)  # 8 MiB: 2,048 blocks of 4 KiB
    body = b"".join(
        compress_blocks(data[start : start + block_bytes]) for start in range(0, len(data), block_bytes)
    )
    assert decompress_blocks(body) == data
