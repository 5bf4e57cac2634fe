"""The WAL record format: round trips, and every kind of damage is detected."""

from __future__ import annotations

import io
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.wal.format import (
    RECORD_HEADER,
    RecordError,
    WalRecord,
    crc32,
    encode_record,
    read_record,
    read_segment_header,
    segment_first_position,
    segment_header,
    segment_name,
)
from pipelines.wal.reader import chain_crcs, chain_digest

pytestmark = pytest.mark.unit

FRAMES = [b"tyk.analytics", b"\x87\xa1v\x01", b"\x90" * 300]


def test_a_record_reads_back_exactly() -> None:
    data, crc = encode_record(42, 1_795_774_500_123_456_789, FRAMES)
    record = read_record(io.BytesIO(data))
    assert record is not None
    assert (record.position, record.received_ns, record.frames, record.crc) == (
        42,
        1_795_774_500_123_456_789,
        FRAMES,
        crc,
    )


def test_empty_frames_and_zero_frames_round_trip() -> None:
    for frames in ([], [b""], [b"", b"x", b""]):
        data, _ = encode_record(0, 0, frames)
        record = read_record(io.BytesIO(data))
        assert record is not None
        assert record.frames == frames


def test_clean_end_of_stream_is_none() -> None:
    assert read_record(io.BytesIO(b"")) is None


@pytest.mark.parametrize("cut", [1, RECORD_HEADER.size - 1, RECORD_HEADER.size, RECORD_HEADER.size + 5, -1])
def test_a_torn_record_is_an_error_never_data(cut: int) -> None:
    data, _ = encode_record(7, 1, FRAMES)
    with pytest.raises(RecordError):
        read_record(io.BytesIO(data[:cut]))


def test_a_flipped_bit_fails_the_checksum() -> None:
    data, _ = encode_record(7, 1, FRAMES)
    for index in range(RECORD_HEADER.size, len(data), 37):
        damaged = bytearray(data)
        damaged[index] ^= 0x01
        with pytest.raises(RecordError):
            read_record(io.BytesIO(bytes(damaged)))


def test_an_implausible_length_is_damage() -> None:
    data, _ = encode_record(7, 1, FRAMES)
    damaged = RECORD_HEADER.pack(0xFFFFFFFF, 0) + data[RECORD_HEADER.size :]
    with pytest.raises(RecordError, match="implausible"):
        read_record(io.BytesIO(damaged))


def test_segment_names_sort_in_log_order_and_parse_back() -> None:
    names = [segment_name(p) for p in (0, 9, 10, 123_456_789_012)]
    assert names == sorted(names)
    from pathlib import Path

    assert [segment_first_position(Path(n)) for n in names] == [0, 9, 10, 123_456_789_012]
    assert segment_first_position(Path("checkpoint.json")) is None
    assert segment_first_position(Path("12.wal")) is None


def test_segment_header_round_trip_and_foreign_files() -> None:
    assert read_segment_header(segment_header(77)) == 77
    assert read_segment_header(b"NOTWAL00" + bytes(8)) is None
    assert read_segment_header(b"short") is None


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 70_000, 1 << 20])
def test_the_sliced_crc_is_zlibs_crc(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert crc32(data) == zlib.crc32(data)
    assert crc32(data, 12345) == zlib.crc32(data, 12345)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=50), st.integers(0, 2**32 - 1))
def test_crcs_chained_at_once_are_chained_one_record_at_a_time(crcs: list[int], start: int) -> None:
    """The live range chains a write's CRCs in one call; a read-back chains record by record."""
    one_by_one = start
    for position, crc in enumerate(crcs):
        one_by_one = chain_digest(one_by_one, WalRecord(position, 0, [], crc))
    assert chain_crcs(start, crcs) == one_by_one
