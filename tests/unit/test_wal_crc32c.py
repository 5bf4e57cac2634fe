"""The WAL's native CRC-32C: known answers, a reference implementation, any input size."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines._native import crc32c, record_crc
from pipelines.wal.format import (
    BODY_HEADER,
    FRAME_LENGTH,
    RECORD_HEADER,
    SMALL_RECORD_BYTES,
    encode_record,
    encode_record_parts,
    read_record,
)

pytestmark = pytest.mark.unit

_POLY = 0x82F63B78  # CRC-32C (Castagnoli), reflected


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _table()


def reference_crc32c(data: bytes, crc: int = 0) -> int:
    """The textbook byte-at-a-time CRC-32C, to check the native one against."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_known_answers() -> None:
    # RFC 3720, appendix B.4
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@given(st.binary(max_size=3000), st.integers(0, 0xFFFFFFFF))
def test_matches_the_reference(data: bytes, start: int) -> None:
    assert crc32c(data, start) == reference_crc32c(data, start)


@given(st.binary(max_size=2000), st.integers(0, 2000))
def test_continues_across_pieces(data: bytes, cut: int) -> None:
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


@pytest.mark.parametrize("size", [(1 << 20) - 1, 1 << 20, (3 << 20) + 5])
def test_large_buffers_released_from_the_gil_agree(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    pieces = 0
    for offset in range(0, size, 65536):
        pieces = crc32c(data[offset : offset + 65536], pieces)
    assert crc32c(data) == pieces


def test_any_buffer_is_accepted() -> None:
    data = b"tyk.analytics" * 100
    assert crc32c(memoryview(data)) == crc32c(bytearray(data)) == crc32c(data)
    with pytest.raises(TypeError):
        crc32c("text")  # type: ignore[arg-type]  # the stub says a buffer; the module checks too


@given(st.lists(st.binary(max_size=300), max_size=6))
def test_a_record_checksum_covers_its_whole_body(frames: list[bytes]) -> None:
    head = BODY_HEADER.pack(7, 11, len(frames))
    body = head + b"".join(FRAME_LENGTH.pack(len(f)) + f for f in frames)
    assert record_crc(head, frames) == reference_crc32c(body)
    data, crc = encode_record(7, 11, frames)
    assert crc == reference_crc32c(body)
    assert data[RECORD_HEADER.size :] == body
    record = read_record(io.BytesIO(data))
    assert record is not None
    assert record.frames == frames


@given(
    st.lists(st.binary(max_size=1200), max_size=4),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
)
def test_small_records_built_whole_are_laid_out_as_large_ones(
    frames: list[bytes], position: int, received_ns: int
) -> None:
    """A record up to SMALL_RECORD_BYTES is built in one native pass, a larger one from its parts:
    both must be the layout format.py describes, byte for byte."""
    head = BODY_HEADER.pack(position, received_ns, len(frames))
    body = head + b"".join(FRAME_LENGTH.pack(len(f)) + f for f in frames)
    expected = RECORD_HEADER.pack(len(body), reference_crc32c(body)) + body
    parts, size, crc = encode_record_parts(position, received_ns, frames)
    assert b"".join(parts) == expected
    assert (size, crc) == (len(expected), reference_crc32c(body))
    assert (len(parts) == 1) == (len(expected) <= SMALL_RECORD_BYTES)


@pytest.mark.parametrize("frame", [b"small", b"x" * SMALL_RECORD_BYTES])
@pytest.mark.parametrize(("position", "received_ns"), [(-1, 0), (2**64, 0), (0, 2**63), (0, -(2**63) - 1)])
def test_a_record_out_of_the_layouts_range_is_refused_either_way(
    frame: bytes, position: int, received_ns: int
) -> None:
    # the writer counts such a message as dropped_unloggable (it catches both)
    with pytest.raises((OverflowError, struct.error)):
        encode_record_parts(position, received_ns, [frame])
