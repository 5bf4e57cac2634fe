"""Damage inside a WAL segment costs the records it touches, not the rest of the segment.

Ground truth is the bytes: a record counts as touched when any of its bytes differ from what the
writer wrote; every untouched record must be read back whole, by the reader and after the writer
reopens the segment, and the positions lost are counted as damaged.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.errors import ConfigurationError
from pipelines.wal.build import resume_checkpoint
from pipelines.wal.checkpoint import CHECKPOINT_FILE
from pipelines.wal.format import SEGMENT_HEADER, list_segments
from pipelines.wal.reader import WalReader
from pipelines.wal.writer import WalWriter, read_all

pytestmark = pytest.mark.component


def frames(position: int, size: int) -> list[bytes]:
    return [b"tyk.analytics", f"env-{position}".encode(), bytes((position + i) % 251 for i in range(size))]


def write_segment(directory: Path, sizes: list[int]) -> list[tuple[int, int]]:
    """One segment of records of the given payload sizes; each record's [start, end) in the file."""
    writer = WalWriter(directory, segment_bytes=1 << 24, max_bytes=1 << 26)
    writer.open(0)
    extents, offset = [], SEGMENT_HEADER.size
    for position, size in enumerate(sizes):
        assert writer.append(frames(position, size), position)
        writer.commit()
        end = list_segments(directory)[-1][1].stat().st_size
        extents.append((offset, end))
        offset = end
    writer.close()
    return extents


def damage(path: Path, regions: list[tuple[float, int, int]]) -> bytes:
    """Overwrite each region: (start as a fraction of the records' bytes, length, fill byte; -1 flips)."""
    data = bytearray(path.read_bytes())
    original = bytes(data)
    body = len(data) - SEGMENT_HEADER.size
    for fraction, length, fill in regions:
        start = SEGMENT_HEADER.size + int(fraction * body)
        for i in range(start, min(start + length, len(data))):
            data[i] = data[i] ^ 0x5A if fill < 0 else fill
    path.write_bytes(bytes(data))
    return original


def write_and_damage(directory: Path, sizes: list[int], regions: list[tuple[float, int, int]]) -> list[int]:
    """Write one segment, damage it; the positions of the records whose bytes are untouched."""
    extents = write_segment(directory, sizes)
    path = list_segments(directory)[0][1]
    before = damage(path, regions)
    after = path.read_bytes()
    return [p for p, (start, end) in enumerate(extents) if before[start:end] == after[start:end]]


regions = st.lists(
    st.tuples(st.floats(0, 0.999), st.integers(1, 300), st.integers(-1, 255)), min_size=1, max_size=4
)
sizes = st.lists(st.integers(0, 700), min_size=1, max_size=40)


@given(sizes=sizes, regions=regions)
def test_every_untouched_record_is_read_and_the_rest_counted(
    sizes: list[int], regions: list[tuple[float, int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        kept = write_and_damage(directory, sizes, regions)

        read = WalReader(directory).read(0, len(sizes))

        assert [r.position for r in read.records] == kept
        assert [r.frames for r in read.records] == [frames(p, sizes[p]) for p in kept]
        assert read.damaged == len(sizes) - len(kept)
        assert read.end == len(sizes)


@given(sizes=sizes, regions=regions)
def test_the_writer_keeps_every_untouched_record_of_its_last_segment(
    sizes: list[int], regions: list[tuple[float, int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        kept = write_and_damage(directory, sizes, regions)

        writer = WalWriter(directory, segment_bytes=1 << 24, max_bytes=1 << 26)
        next_position = writer.open(0)
        # the log goes on after the last record it still holds (a damaged tail is cut off)
        assert next_position == (kept[-1] + 1 if kept else 0)
        assert writer.append(frames(next_position, 5), 0)
        writer.commit()
        writer.close()

        assert [r.position for r in read_all(directory)] == [*kept, next_position]
        read = WalReader(directory).read(0, next_position + 1)
        assert [r.position for r in read.records] == [*kept, next_position]
        assert read.damaged == next_position - len(kept)


def test_a_bit_flip_early_in_a_large_segment_costs_one_record(tmp_path: Path) -> None:
    """The case that used to cost the segment: before resuming, 1 record kept of 2,000."""
    extents = write_segment(tmp_path, [300] * 2_000)
    path = list_segments(tmp_path)[0][1]
    data = bytearray(path.read_bytes())
    data[extents[1][0] + 20] ^= 0x01
    path.write_bytes(bytes(data))

    read = WalReader(tmp_path).read(0, 2_000)
    assert [r.position for r in read.records] == [0, *range(2, 2_000)]
    assert read.damaged == 1

    writer = WalWriter(tmp_path, segment_bytes=1 << 24, max_bytes=1 << 26)
    assert writer.open(0) == 2_000
    writer.close()
    assert len(read_all(tmp_path)) == 1_999


def fake_headers(size: int, position: int) -> bytes:
    """A payload of fake record headers, each claiming a body that runs to the payload's end."""
    count = size // 30
    return b"".join(
        struct.pack("<IIQqHI", size - i * 30 - 8, 0, position, 0, 1, size - i * 30 - 30) for i in range(count)
    )


def test_a_payload_of_fake_record_headers_ends_the_search_instead_of_stalling_it(tmp_path: Path) -> None:
    """Without a bound, resuming past this payload checksums ~140 k candidate bodies of ~2 MiB each."""
    writer = WalWriter(tmp_path, segment_bytes=1 << 24, max_bytes=1 << 26)
    writer.open(0)
    for position in range(6):
        payload = fake_headers(4 << 20, 3) if position == 3 else b"p%d" % position
        assert writer.append([b"tyk.analytics", b"env", payload], position)
        writer.commit()
    writer.close()
    path = list_segments(tmp_path)[0][1]
    data = bytearray(path.read_bytes())
    data[SEGMENT_HEADER.size + 3 * 56 + 4] ^= 0x01  # record 3's checksum (records 0-2 are 56 bytes each)
    path.write_bytes(bytes(data))

    read = WalReader(tmp_path).read(0, 6)

    # the search gave up inside record 3's payload: the rest of the segment is skipped and counted
    assert [r.position for r in read.records] == [0, 1, 2]
    assert read.damaged == 3


def test_a_directory_named_like_a_segment_is_stepped_over_like_a_lost_one(tmp_path: Path) -> None:
    # Found by attack: the worker raised IsADirectoryError at every start, draining nothing.
    writer = WalWriter(tmp_path, segment_bytes=400, max_bytes=1 << 26)
    writer.open(0)
    for position in range(12):
        assert writer.append(frames(position, 200), position)
        writer.commit()
    writer.close()
    segments = list_segments(tmp_path)
    assert len(segments) >= 4
    first, victim = segments[1]
    lost = segments[2][0] - first
    victim.unlink()
    victim.mkdir()
    read = WalReader(tmp_path).read(0, 12)
    assert [r.position for r in read.records] == [p for p in range(12) if not first <= p < first + lost]
    reopened = WalWriter(tmp_path, segment_bytes=400, max_bytes=1 << 26)
    assert reopened.open(12) == 12
    reopened.close()


@pytest.mark.parametrize("content", [b"", b"\x00garbage{", b'{"wal_id": 7}'])
def test_a_damaged_checkpoint_is_a_clear_error_naming_it(tmp_path: Path, content: bytes) -> None:
    # Found by attack: an empty or garbled checkpoint.json ended every start in a msgspec traceback
    # that named no file. It is not guessed at: it says what the log holds that was already counted.
    (tmp_path / CHECKPOINT_FILE).write_bytes(content)
    with pytest.raises(ConfigurationError, match=CHECKPOINT_FILE) as info:
        resume_checkpoint(tmp_path)
    assert "move it aside" in str(info.value)


@pytest.mark.parametrize(
    "fields",
    [
        {"flushed": -5},
        {"flushed": (1 << 64) - 1},
        {"inflight": {"start": 0, "end": -3, "digest": 1}},
        {"inflight": {"start": 9, "end": 4, "digest": 1}},
        {"inflight": {"start": 0, "end": 4, "digest": -1}},
    ],
)
def test_a_checkpoint_whose_positions_cannot_be_is_a_clear_error(
    tmp_path: Path, fields: dict[str, object]
) -> None:
    # Found by attack: `"flushed": -5` in an otherwise sound checkpoint made `tykpulse run` read the
    # log from a position no segment holds, skip its 38 good records as damaged and delete them.
    (tmp_path / CHECKPOINT_FILE).write_bytes(msgspec.json.encode({"wal_id": "abc", **fields}))
    with pytest.raises(ConfigurationError, match=CHECKPOINT_FILE):
        resume_checkpoint(tmp_path)
