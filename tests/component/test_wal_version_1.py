"""A log written before CRC-32C (version-1 segments) is still read, flushed and released."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from pipelines.wal.format import (
    BODY_HEADER,
    FRAME_LENGTH,
    MAGIC,
    MAGIC_V1,
    RECORD_HEADER,
    SEGMENT_HEADER,
    list_segments,
    segment_name,
)
from pipelines.wal.reader import WalReader
from pipelines.wal.writer import WalWriter, read_all

pytestmark = pytest.mark.component


def frames(i: int) -> list[bytes]:
    return [b"tyk.analytics", f"env-{i}".encode(), bytes([i % 256]) * 50]


def write_version_1(directory: Path, first: int, count: int) -> Path:
    """A segment as the first format wrote it: zlib's CRC-32 over each body."""
    directory.mkdir(parents=True, exist_ok=True)
    data = bytearray(SEGMENT_HEADER.pack(MAGIC_V1, first))
    for position in range(first, first + count):
        parts = frames(position)
        body = BODY_HEADER.pack(position, 1_000 + position, len(parts))
        body += b"".join(FRAME_LENGTH.pack(len(f)) + f for f in parts)
        data += RECORD_HEADER.pack(len(body), zlib.crc32(body)) + body
    path = directory / segment_name(first)
    path.write_bytes(bytes(data))
    return path


def magic(path: Path) -> bytes:
    return path.read_bytes()[: len(MAGIC)]


def test_version_1_records_read_back(tmp_path: Path) -> None:
    write_version_1(tmp_path, 0, 5)
    read = WalReader(tmp_path).read(0, 5)
    assert [r.frames for r in read.records] == [frames(i) for i in range(5)]
    assert read.damaged == 0


def test_the_writer_goes_on_in_a_new_segment(tmp_path: Path) -> None:
    old = write_version_1(tmp_path, 0, 5)
    writer = WalWriter(tmp_path)
    assert writer.open(0) == 5
    for i in range(5, 9):
        assert writer.append(frames(i), 1_000 + i)
    writer.commit()
    writer.close()
    segments = list_segments(tmp_path)
    assert [first for first, _ in segments] == [0, 5]
    assert magic(old) == MAGIC_V1
    assert magic(segments[1][1]) == MAGIC
    assert [r.frames for r in read_all(tmp_path)] == [frames(i) for i in range(9)]
    read = WalReader(tmp_path).read(0, 9)
    assert [r.position for r in read.records] == list(range(9))
    assert read.damaged == 0


def test_an_empty_version_1_tail_is_replaced(tmp_path: Path) -> None:
    write_version_1(tmp_path, 0, 3)
    write_version_1(tmp_path, 3, 0)
    writer = WalWriter(tmp_path)
    assert writer.open(0) == 3
    assert writer.append(frames(3), 1)
    writer.close()
    segments = list_segments(tmp_path)
    assert [first for first, _ in segments] == [0, 3]
    assert magic(segments[1][1]) == MAGIC
    assert len(read_all(tmp_path)) == 4


def test_damage_in_a_version_1_segment_is_still_detected(tmp_path: Path) -> None:
    path = write_version_1(tmp_path, 0, 3)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    read = WalReader(tmp_path).read(0, 3)
    assert [r.position for r in read.records] == [0, 1]
