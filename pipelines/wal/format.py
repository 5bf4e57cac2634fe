"""The on-disk format of the write-ahead log: segment files of checksummed records.

A segment file is named by the position of its first record (20 digits, so
names sort in log order) and holds:

    header   MAGIC (8 bytes) | first position (u64)
    record*  body length (u32) | CRC-32C of body (u32) | body

    body     position (u64) | receive time, unix ns (i64) | frame count (u16)
             | (frame length (u32) | frame bytes) * frame count

A position numbers records across all segments (0, 1, 2, ...), so a range of
positions names the same messages in every process that reads the log. The
CRC covers the whole body, so a record torn by a crash (short header, short
body) or damaged on disk fails the check and is never returned as data.
All integers are little-endian.

The checksum is CRC-32C (Castagnoli), computed by the native core with the
CPU's CRC instructions (pipelines._native). Segments written before it
(MAGIC_V1, zlib's CRC-32) are still read: the magic says which checksum a
segment's records carry, and the writer never appends to a version-1 segment.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Final

from pipelines._native import crc32c, encode_small_record, find_record, record_crc

MAGIC: Final = b"TPWAL02\n"
# Segments of the first format: the same layout, records checksummed with zlib's CRC-32.
MAGIC_V1: Final = b"TPWAL01\n"
SEGMENT_SUFFIX: Final = ".wal"
SEGMENT_HEADER: Final = struct.Struct("<8sQ")
RECORD_HEADER: Final = struct.Struct("<II")
BODY_HEADER: Final = struct.Struct("<QqH")
FRAME_LENGTH: Final = struct.Struct("<I")
# A record larger than this is taken as damage, not data (messages are limited to 16 MiB by default).
# (native/src/wal.rs's find_record holds the same bound.)
MAX_BODY_BYTES: Final = 1 << 30
MAX_FRAMES: Final = 0xFFFF
# CPython's zlib releases the GIL for buffers over 5 KiB. On the receive path, shared with
# CPU-bound Python threads, every release costs a wait of up to the switch interval (5 ms)
# to take the GIL back: that convoy made logging a 70 KB message ~10x slower than its CRC.
# Slices under the threshold keep the GIL: the same CRC, the same CPU time, no wait.
# (Only version-1 segments use zlib; the native CRC-32C keeps the GIL below 1 MiB.)
CRC_SLICE: Final = 4096
# A record up to this size is built whole, in one native pass: at 1 record per message the
# per-frame packing and the checksum call cost more than the copy (2.1-3.4 -> 1.0-1.5 us per
# message, bench.native_core); a larger one is written from its parts, so that its payload is
# copied only by the OS.
SMALL_RECORD_BYTES: Final = 2048

# A record checksum: (data, running crc) -> crc.
Checksum = Callable[[bytes | memoryview, int], int]


# Not frozen: a frozen dataclass is built through object.__setattr__, field by field, ~0.5 us more
# for every message logged (at 1 record per message, a tenth of the appender's Python).
@dataclasses.dataclass(slots=True)
class WalRecord:
    """One received message as the log holds it."""

    position: int
    received_ns: int
    frames: list[bytes]
    crc: int


@dataclasses.dataclass(slots=True)
class LoggedRecords:
    """Records one write just handed to the OS, as columns: positions first, first + 1, ..."""

    first: int
    frames: list[Sequence[bytes]]
    received_ns: list[int]
    crcs: list[int]


def segment_name(first_position: int) -> str:
    return f"{first_position:020d}{SEGMENT_SUFFIX}"


def segment_first_position(path: Path) -> int | None:
    """The first position encoded in a segment's file name, or None if it is not a segment."""
    stem = path.name.removesuffix(SEGMENT_SUFFIX)
    if path.suffix != SEGMENT_SUFFIX or len(stem) != 20 or not stem.isdigit():
        return None
    return int(stem)


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """(first position, path) of every segment in the directory, in log order."""
    found = []
    for path in directory.iterdir():
        first = segment_first_position(path)
        if first is not None and path.is_file():  # a directory of that name holds no records
            found.append((first, path))
    return sorted(found)


def segment_header(first_position: int) -> bytes:
    return SEGMENT_HEADER.pack(MAGIC, first_position)


def read_segment_header(data: bytes) -> int | None:
    """The first position from a segment header, or None if the header is not ours."""
    if len(data) < SEGMENT_HEADER.size:
        return None
    magic, first = SEGMENT_HEADER.unpack_from(data)
    return int(first) if magic in (MAGIC, MAGIC_V1) else None


def segment_checksum(data: bytes) -> Checksum:
    """The checksum of the records of the segment whose header is `data` (CRC-32C unless version 1)."""
    return crc32 if data[: len(MAGIC_V1)] == MAGIC_V1 else crc32c


def encode_record_parts(
    position: int, received_ns: int, frames: Sequence[bytes]
) -> tuple[list[bytes], int, int]:
    """One record as the pieces to write in order, its size and its CRC.

    The frames of a large record are not copied here: at ~70 KB per message,
    every copy of the payload costs the receiver as much as logging it, so the
    writer hands the pieces to the OS as they are (writev). A small record
    (SMALL_RECORD_BYTES) comes as one piece, built by the native core.
    """
    if len(frames) > MAX_FRAMES:
        msg = f"a message has at most {MAX_FRAMES} frames, got {len(frames)}"
        raise ValueError(msg)
    small = encode_small_record(position, received_ns, frames, SMALL_RECORD_BYTES)
    if small is not None:
        record, crc = small
        return [record], len(record), crc
    head = BODY_HEADER.pack(position, received_ns, len(frames))
    parts = [b"", head]
    size = len(head)
    for frame in frames:
        length = FRAME_LENGTH.pack(len(frame))
        parts.append(length)
        parts.append(frame)
        size += len(length) + len(frame)
    # one native call for the whole body (CRC-32C, no copy of the frames)
    crc = record_crc(head, frames)
    parts[0] = RECORD_HEADER.pack(size, crc)
    return parts, RECORD_HEADER.size + size, crc


def encode_record(position: int, received_ns: int, frames: Sequence[bytes]) -> tuple[bytes, int]:
    """The bytes of one record and its CRC."""
    parts, _, crc = encode_record_parts(position, received_ns, frames)
    return b"".join(parts), crc


def crc32(data: bytes | memoryview, crc: int = 0) -> int:
    """zlib.crc32 (version-1 segments), computed without releasing the GIL (see CRC_SLICE)."""
    if len(data) <= CRC_SLICE:
        return zlib.crc32(data, crc)
    view = memoryview(data)
    for offset in range(0, len(view), CRC_SLICE):
        crc = zlib.crc32(view[offset : offset + CRC_SLICE], crc)
    return crc


class RecordError(ValueError):
    """A record that is torn or damaged (its bytes cannot be trusted)."""


class SegmentHeaderError(RecordError):
    """A segment whose header is missing or not ours (e.g. torn while the file was created)."""


def decode_body(body: bytes, crc: int) -> WalRecord:
    position, received_ns, count = BODY_HEADER.unpack_from(body)
    offset = BODY_HEADER.size
    frames = []
    for _ in range(count):
        if offset + FRAME_LENGTH.size > len(body):
            msg = "frame length past the end of the record"
            raise RecordError(msg)
        (length,) = FRAME_LENGTH.unpack_from(body, offset)
        offset += FRAME_LENGTH.size
        if offset + length > len(body):
            msg = "frame past the end of the record"
            raise RecordError(msg)
        frames.append(body[offset : offset + length])
        offset += length
    if offset != len(body):
        msg = "bytes after the last frame"
        raise RecordError(msg)
    return WalRecord(position, received_ns, frames, crc)


def read_record(stream: IO[bytes], checksum: Checksum = crc32c) -> WalRecord | None:
    """The next record of a stream; None at a clean end; RecordError if torn or damaged.

    `checksum` is the segment's (segment_checksum): CRC-32C unless it is a version-1 segment.
    """
    header = stream.read(RECORD_HEADER.size)
    if not header:
        return None
    if len(header) < RECORD_HEADER.size:
        msg = "torn record header"
        raise RecordError(msg)
    length, crc = RECORD_HEADER.unpack(header)
    if length < BODY_HEADER.size or length > MAX_BODY_BYTES:
        msg = f"implausible record length {length}"
        raise RecordError(msg)
    body = stream.read(length)
    if len(body) < length:
        msg = "torn record body"
        raise RecordError(msg)
    if checksum(body, 0) != crc:
        msg = "checksum mismatch"
        raise RecordError(msg)
    return decode_body(body, crc)


# Searching for the next record after damage checksums at most this many times the bytes searched.
RESYNC_BUDGET: Final = 4
# No position bound: the last segment's records may go on past any position read so far.
NO_BOUND: Final = (1 << 64) - 1


def resume_after_damage(
    stream: IO[bytes], offset: int, checksum: Checksum, first: int, bound: int
) -> int | None:
    """Where reading resumes after the damaged record at `offset`: the next intact record whose
    position is in [first, bound), the stream left there; None (stream at its end) if there is none.

    Every offset after the damage is tried (natively, native/src/wal.rs): a candidate must have
    a position it could have that far in, pass the checksum and have frames that fill its body.
    The checksums are bounded by RESYNC_BUDGET times the bytes searched, so bytes crafted to look
    like records (a payload holding fake record headers) end the search instead of stalling it.
    Version-1 segments (zlib's CRC-32) are not searched: reading ends at their damage.
    """
    if checksum is not crc32c:
        return None
    stream.seek(offset)
    rest = stream.read()
    # start at 1: the record at `offset` itself is the damaged one
    found = find_record(rest, 1, first, bound, RESYNC_BUDGET * len(rest) + (1 << 20))
    if found is None:
        return None
    stream.seek(offset + found)
    return offset + found


def scan_segment(path: Path) -> Iterator[tuple[int, WalRecord | RecordError]]:
    """(byte offset after the item, record or error), in order; an error's offset is where it begins.

    After a torn or damaged record the scan resumes at the next intact record whose position
    follows the last one read (resume_after_damage): an error is the last item only when
    nothing intact follows it.
    """
    with path.open("rb", buffering=1 << 20) as stream:
        header = stream.read(SEGMENT_HEADER.size)
        first = read_segment_header(header)
        if first is None:
            yield SEGMENT_HEADER.size, SegmentHeaderError("not a tykpulse WAL segment")
            return
        checksum = segment_checksum(header)
        offset = SEGMENT_HEADER.size
        following = first  # the lowest position a record found after damage may have
        while True:
            try:
                record = read_record(stream, checksum)
            except RecordError as exc:
                yield offset, exc
                resumed = resume_after_damage(stream, offset, checksum, following, NO_BOUND)
                if resumed is None:
                    return
                offset = resumed
                continue
            if record is None:
                return
            offset = stream.tell()
            following = max(following, record.position + 1)
            yield offset, record
