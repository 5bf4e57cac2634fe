"""Reading ranges of the write-ahead log back, in order, for flushing and replay.

The flusher reads [start, end) ranges one after the other; the reader keeps a
cursor (segment, byte offset) so consecutive ranges do not rescan. Records
are only read below the writer's `written` position, so a record being
appended is never seen half-written.

A damaged record (bad checksum) inside the log leaves the next record boundary
unknown: the reader searches the rest of the segment for the next intact record
whose position follows the sequence (format.resume_after_damage) and reads on
from there; if there is none it skips to the next segment (or to the end of the
range if there is none). The positions skipped are counted as `damaged` and the
flusher goes on; the messages lost this way show up as sequence gaps
(lost_messages) downstream, never as silently missing data.

A record's position is not trusted for its checksum alone: within a segment
positions follow one another from the segment's first. A record out of that
sequence (behind it, or at or past the range's end or the next segment's
first) is stepped over and counted as damaged, and the records after it are
read on; a forward jump within those bounds counts the positions it skips.
Only records with start <= position < end are ever returned.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import zlib
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import IO

from pipelines._native import crc32c
from pipelines.wal.format import (
    SEGMENT_HEADER,
    Checksum,
    RecordError,
    WalRecord,
    list_segments,
    read_record,
    read_segment_header,
    resume_after_damage,
    segment_checksum,
)

log = logging.getLogger(__name__)


def chain_digest(digest: int, record: WalRecord) -> int:
    """The running digest of a range with one more record (start from 0)."""
    return zlib.crc32(record.crc.to_bytes(4, "little"), digest)


def chain_crcs(digest: int, crcs: Sequence[int]) -> int:
    """The running digest of a range with more records, given their CRCs: as chain_digest record
    by record (a CRC continued over pieces is the CRC of the pieces joined)."""
    return zlib.crc32(struct.pack(f"<{len(crcs)}I", *crcs), digest)


def seal_digest(digest: int, start: int, end: int) -> int:
    """The digest of the range [start, end) whose records chained to `digest`."""
    return zlib.crc32(f"{start}-{end}".encode(), digest)


@dataclasses.dataclass(slots=True)
class RangeRead:
    """What one read of [start, end) saw: records, positions skipped as damaged, and a digest."""

    start: int
    end: int
    records: list[WalRecord] = dataclasses.field(default_factory=list)
    damaged: int = 0
    chain: int = 0  # the records' CRCs chained; `digest` seals it with the bounds
    bytes: int = 0

    @property
    def digest(self) -> int:
        return seal_digest(self.chain, self.start, self.end)


@dataclasses.dataclass(slots=True)
class _Cursor:
    position: int
    segment_first: int
    offset: int
    expected: int  # the position the record at `offset` must have


@dataclasses.dataclass(frozen=True, slots=True)
class _Scan:
    """One segment being scanned: records from `expected` on, none at or past `bound`."""

    path: Path
    segment_first: int
    expected: int
    bound: int
    checksum: Checksum


class WalReader:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cursor: _Cursor | None = None
        self.damaged_total = 0
        # records stepped over for a position out of sequence (part of damaged_total)
        self.out_of_sequence_total = 0
        # each segment's checksum, from its header (segments are few; forgotten when deleted)
        self._checksums: dict[Path, Checksum] = {}

    def read(self, start: int, end: int, *, max_bytes: int | None = None) -> RangeRead:
        """Records with start <= position < end (stopping early past max_bytes of record data).

        The result's `end` is where the read stopped; the digest (a CRC over the
        records' CRCs and positions) identifies exactly which bytes were read.
        """
        result = RangeRead(start, start)
        self.extend(result, end, max_bytes=max_bytes)
        return result

    def extend(self, result: RangeRead, end: int, *, max_bytes: int | None = None) -> None:
        """Read on from result.end to `end`, as if the first read had gone that far."""
        position = result.end
        damaged = 0
        out_of_sequence = self.out_of_sequence_total
        for item in self._records_from(position, end):
            if isinstance(item, int):
                damaged += item - position
                position = item
                continue
            result.records.append(item)
            result.bytes += sum(len(f) for f in item.frames)
            result.chain = chain_digest(result.chain, item)
            position = item.position + 1
            if max_bytes is not None and result.bytes >= max_bytes:
                break
        result.end = position
        damaged += self.out_of_sequence_total - out_of_sequence
        result.damaged += damaged
        self.damaged_total += damaged

    def _records_from(self, start: int, end: int) -> Iterator[WalRecord | int]:
        """Records from `start`; an int means 'skipped to this position' (damage)."""
        position = start
        while position < end:
            located = self._locate(position)
            if located is None:
                log.error("WAL has no segment holding position=%d; skipping to end=%d", position, end)
                yield end
                return
            path, segment_first, offset, expected, next_first = located
            bound = end if next_first is None else min(next_first, end)
            with path.open("rb", buffering=1 << 20) as stream:
                checksum = self._checksum(path, stream)
                stream.seek(offset)
                scan = _Scan(path, segment_first, expected, bound, checksum)
                position = yield from self._scan(stream, scan, position, end)
            if position >= end:
                return
            # The segment ended (cleanly or damaged) before `end`: go on in the next one.
            target = end if next_first is None else min(next_first, end)
            if target > position:
                log.error(
                    "WAL damaged, skipping records segment=%s from=%d to=%d", path.name, position, target
                )
                yield target
            position = target

    def _checksum(self, path: Path, stream: IO[bytes]) -> Checksum:
        checksum = self._checksums.get(path)
        if checksum is None:
            stream.seek(0)
            header = stream.read(SEGMENT_HEADER.size)
            checksum = segment_checksum(header) if read_segment_header(header) is not None else crc32c
            if len(self._checksums) > 1024:
                self._checksums.clear()
            self._checksums[path] = checksum
        return checksum

    def _scan(
        self, stream: IO[bytes], scan: _Scan, position: int, end: int
    ) -> Generator[WalRecord | int, None, int]:
        offset = stream.tell()
        expected = scan.expected
        while position < end:
            try:
                record = read_record(stream, scan.checksum)
            except RecordError as exc:
                resumed = resume_after_damage(stream, offset, scan.checksum, expected, scan.bound)
                log.error(
                    "WAL record unreadable segment=%s offset=%d reason=%s resumed_at=%s",
                    scan.path.name,
                    offset,
                    exc,
                    resumed,
                )
                if resumed is None:
                    break
                offset = resumed
                continue
            if record is None:
                break
            record_offset, offset = offset, stream.tell()
            if record.position != expected and not expected < record.position < scan.bound:
                # behind the sequence, or where no record of this segment and range can be
                self.out_of_sequence_total += 1
                log.error(
                    "WAL record out of sequence, skipped segment=%s offset=%d expected=%d found=%d",
                    scan.path.name,
                    record_offset,
                    expected,
                    record.position,
                )
                continue
            expected = record.position + 1
            if record.position < position:
                continue  # before the range: scanning from the segment's start
            if record.position != position:
                log.error(
                    "WAL position jump segment=%s expected=%d found=%d",
                    scan.path.name,
                    position,
                    record.position,
                )
                yield record.position
                position = record.position
            yield record
            position += 1
        self._cursor = _Cursor(position, scan.segment_first, offset, expected)
        return position

    def _locate(self, position: int) -> tuple[Path, int, int, int, int | None] | None:
        """(segment path, its first position, byte offset to scan from, the position of the
        record there, next segment's first)."""
        segments = list_segments(self.directory)
        index = max((i for i, (first, _) in enumerate(segments) if first <= position), default=None)
        if index is None:
            return None
        first, path = segments[index]
        next_first = segments[index + 1][0] if index + 1 < len(segments) else None
        cursor = self._cursor
        if cursor is not None and cursor.segment_first == first and cursor.position == position:
            return path, first, cursor.offset, cursor.expected, next_first
        with path.open("rb") as stream:
            if read_segment_header(stream.read(SEGMENT_HEADER.size)) is None:
                return path, first, 0, first, next_first
        return path, first, SEGMENT_HEADER.size, first, next_first
