"""The WAL's native CRC-32C: known answers, a reference implementation, any input size."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines._native import crc32c, record_crc
from pipelines.wal.format import BODY_HEADER, FRAME_LENGTH, RECORD_HEADER, encode_record, read_record

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
