"""Appending to the write-ahead log: group commit, fsync policy, rotation, a disk bound.

One appending thread (pipelines.wal.appender) calls append() for every message
and commit() after each batch the receiver handed over; commit() hands the
batch to the OS in one write, so a process crash (SIGKILL, OOM kill) loses
nothing that was committed.
Surviving power loss also needs fsync, which the policy controls:

    always     fsync in every commit, before the flusher may read the batch
    interval   fsync in a commit when the last one is older than fsync_interval_ms
    never      only when a segment is closed and when the flusher asks (sync())

A `tap` set by the flusher is handed the records of every write once they are in
the OS (on the appending thread, in log order, as LoggedRecords), so the flusher
can decode messages as they are logged instead of reading them back; records a
failed write dropped are never handed over.

The flusher thread reads up to `written`, calls sync() before it plans a flush
(so nothing is counted in ClickHouse that the log could lose), and release()
after a flush is checkpointed, which deletes segments holding only flushed
records.

When the log is at max_bytes, append() refuses the message and counts it
(stats.dropped_full); the gap in that publisher's sequence makes it show up
as lost_messages once the log accepts again. Nothing already in the log is
ever dropped to make room: that would lose data that was received.
"""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from pipelines._native import encode_small_records
from pipelines.errors import ConfigurationError
from pipelines.wal.checkpoint import fsync_directory
from pipelines.wal.format import (
    MAGIC_V1,
    MAX_FRAMES,
    SEGMENT_HEADER,
    SMALL_RECORD_BYTES,
    LoggedRecords,
    RecordError,
    SegmentHeaderError,
    WalRecord,
    encode_record_parts,
    list_segments,
    scan_segment,
    segment_header,
    segment_name,
)
from pipelines.wal.pressure import PressureGauge, WalStats
from sinks.owned_directory import owned_directory

log = logging.getLogger(__name__)

LOCK_FILE: Final = "LOCK"
# A commit is one write (and one release of the GIL, see format.CRC_SLICE) per this much.
_BUFFER_LIMIT: Final = 8 << 20
# Parts smaller than this on average are joined before the write: the kernel's cost per iovec is
# then more than the copy (1-record messages: 4.7 us per record joined, 5.4 with writev; 100-record
# messages: 0.35 joined, 0.31 with writev).
_JOIN_BELOW_BYTES: Final = 2048
# buffers per writev call (the system's limit, 1024 on Linux)
_IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16


class FsyncPolicy(enum.StrEnum):
    ALWAYS = "always"
    INTERVAL = "interval"
    NEVER = "never"


@dataclasses.dataclass(slots=True)
class _Segment:
    first: int
    path: Path
    size: int


class WalLockedError(ConfigurationError):
    """Another process (or writer) already appends to this log."""


class WalWriter:
    def __init__(
        self,
        directory: Path,
        *,
        fsync: FsyncPolicy = FsyncPolicy.INTERVAL,
        fsync_interval_ms: int = 200,
        segment_bytes: int = 64 << 20,
        max_bytes: int = 2 << 30,
        warn_fraction: float = 0.8,
    ) -> None:
        self.directory = directory
        self.policy = fsync
        self.fsync_interval_s = fsync_interval_ms / 1000
        self.segment_bytes = segment_bytes
        self.stats = WalStats(max_bytes=max_bytes)
        self.pressure = PressureGauge(self.stats, warn_fraction)
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self._fd = -1
        self._lock_fd = -1
        self.tap: Callable[[LoggedRecords], None] | None = None
        self._buffer: list[bytes] = []
        # what the tap is handed after the next write: the buffered records' frames, receive times, CRCs
        self._tap_frames: list[Sequence[bytes]] = []
        self._tap_received: list[int] = []
        self._tap_crcs: list[int] = []
        self._buffered = 0
        self._buffered_records = 0
        self._next = 0
        self._written = 0
        self._synced = 0
        self._last_fsync = time.monotonic()

    # -- opening and recovery -------------------------------------------------------------------

    def open(self, floor: int) -> int:
        """Lock the directory, repair a torn tail, and return the next position.

        `floor` is the checkpoint's flushed position: positions below it are
        never reused, even if the log lost its tail (power loss with fsync
        never/interval), so a position range always names the same records.
        """
        try:
            owned_directory(self.directory)  # the log holds raw frames: only the worker's user reads them
        except PermissionError as exc:
            msg = f"WAL directory: {exc}"
            raise ConfigurationError(msg) from None
        self._take_lock()
        end = self._recover_tail()
        self._next = max(end, floor)
        if self._next > end:
            log.warning(
                "WAL ends before its checkpoint (power loss?); continuing at the checkpoint "
                "wal_end=%d checkpoint=%d",
                end,
                floor,
            )
        if self._segments and self._next == end and _is_version_1(self._segments[-1]):
            # Records are appended in the current format only: a version-1 tail is left as it is
            # (still read, still released) and the log goes on in a new segment.
            self._retire_empty_tail()
            self._start_segment(self._next)
        elif not self._segments or self._next > end:
            self._start_segment(self._next)
        else:
            current = self._segments[-1]
            self._fd = os.open(current.path, os.O_WRONLY | os.O_APPEND)
        self._written = self._synced = self._next
        self.stats.disk_bytes = sum(s.size for s in self._segments)
        self.stats.segments = len(self._segments)
        self.pressure.update()
        return self._next

    def _retire_empty_tail(self) -> None:
        """Delete the last segment if it holds no record (its name is the next segment's)."""
        last = self._segments[-1]
        if last.size <= SEGMENT_HEADER.size:
            last.path.unlink()
            self._segments.pop()
            fsync_directory(self.directory)

    def _take_lock(self) -> None:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            msg = f"WAL directory {self.directory} is in use by another worker"
            raise WalLockedError(msg) from None
        self._lock_fd = fd

    def _recover_tail(self) -> int:
        """Load the segment list; truncate the last segment after its last whole record.

        Damage followed by intact records (a bit flip, a page lost in a power cut) stays where it
        is: the records after it are kept, and readers step over it and count what it cost.
        """
        for first, path in list_segments(self.directory):
            self._segments.append(_Segment(first, path, path.stat().st_size))
        if not self._segments:
            return 0
        last = self._segments[-1]
        good_offset, end = SEGMENT_HEADER.size, last.first
        problem: RecordError | None = None
        for offset, item in scan_segment(last.path):
            if isinstance(item, RecordError):
                problem = item
            elif item.position == end or (problem is not None and item.position > end):
                if problem is not None:
                    log.warning(
                        "WAL damaged inside its last segment, records after it kept segment=%s "
                        "positions_lost=%d reason=%s",
                        last.path.name,
                        item.position - end,
                        problem,
                    )
                problem = None
                good_offset, end = offset, item.position + 1
            else:
                # out of sequence with no damage before it: readers step over such a record too
                problem = RecordError(f"position {item.position} where {end} was expected")
        if problem is not None or last.size != good_offset:
            self._truncate(last, good_offset, problem)
        return end

    def _truncate(self, segment: _Segment, offset: int, problem: RecordError | None) -> None:
        log.warning(
            "WAL tail torn by a crash, truncated segment=%s at_byte=%d discarded_bytes=%d reason=%s",
            segment.path.name,
            offset,
            segment.size - offset,
            problem or "header only",
        )
        if isinstance(problem, SegmentHeaderError):
            # The header itself is torn: the file was being created when the process died.
            segment.path.unlink()
            self._segments.pop()
            fsync_directory(self.directory)
            return
        with segment.path.open("r+b") as stream:
            stream.truncate(offset)
            os.fsync(stream.fileno())
        segment.size = offset

    def _start_segment(self, first: int) -> None:
        path = self.directory / segment_name(first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.write(fd, segment_header(first))
        os.fsync(fd)
        fsync_directory(self.directory)
        self._fd = fd
        self._segments.append(_Segment(first, path, SEGMENT_HEADER.size))
        self.stats.segments = len(self._segments)
        self.stats.disk_bytes += SEGMENT_HEADER.size

    # -- the receive side -----------------------------------------------------------------------

    def append(self, frames: Sequence[bytes], received_ns: int) -> bool:
        """Buffer one message; False (and counted) when the log is full or the message cannot be logged."""
        try:
            # More frames than a record holds: keep the first ones; the decoder
            # rejects the message (frame_count) and counts it, as without a log.
            logged = list(frames[:MAX_FRAMES])
            parts, size, crc = encode_record_parts(self._next, received_ns, logged)
        except (struct.error, OverflowError) as exc:  # a frame of 4 GiB or more
            self.stats.dropped_unloggable += 1
            log.error("message cannot be logged, dropped (counted) error=%s", exc)
            return False
        if self.stats.disk_bytes + self._buffered + size > self.stats.max_bytes:
            self.stats.dropped_full += 1
            self.pressure.update(full=True)
            return False
        current = self._segments[-1]
        if current.size + self._buffered + size > self.segment_bytes and (
            self._buffered or current.size > SEGMENT_HEADER.size
        ):
            self.commit()
            self._rotate()
        self._buffer += parts
        if self.tap is not None:
            self._tap_frames.append(logged)
            self._tap_received.append(received_ns)
            self._tap_crcs.append(crc)
        self._buffered += size
        self._buffered_records += 1
        self._next += 1
        self.stats.appended += 1
        if self._buffered >= _BUFFER_LIMIT:
            self.commit()
        return True

    def append_many(self, messages: list[list[bytes]], received_ns: list[int]) -> None:
        """Buffer messages in order, the n-th received at received_ns[n], each as append() would.

        A run of small records that fits the log and its segment is framed in one native call
        and buffered as one piece: at 1 record per message, append()'s Python per message cost
        more than framing and checksumming it. Anything else (a large record, a full log, a
        segment to rotate) goes through append(), one message at a time.
        """
        at = 0
        while at < len(messages):
            try:
                records, crcs = encode_small_records(
                    self._next, messages, received_ns, at, SMALL_RECORD_BYTES
                )
            except OverflowError:  # a receive time out of range: append() judges the message
                records, crcs = b"", []
            taken = len(crcs)
            if not taken:
                self.append(messages[at], received_ns[at])
                at += 1
                continue
            size = len(records)
            if not self._room_for(size):
                for index in range(at, at + taken):
                    self.append(messages[index], received_ns[index])
                at += taken
                continue
            self._buffer.append(records)
            if self.tap is not None:
                self._tap_frames += messages[at : at + taken]
                self._tap_received += received_ns[at : at + taken]
                self._tap_crcs += crcs
            self._buffered += size
            self._buffered_records += taken
            self._next += taken
            self.stats.appended += taken
            at += taken
            if self._buffered >= _BUFFER_LIMIT:
                self.commit()

    def _room_for(self, size: int) -> bool:
        """Whether `size` more bytes fit under the log's bound and in the current segment."""
        held = self._buffered + size
        return self.stats.disk_bytes + held <= self.stats.max_bytes and (
            self._segments[-1].size + held <= self.segment_bytes
        )

    def commit(self) -> None:
        """Hand buffered records to the OS (and fsync, per policy). Receiver thread only."""
        if self._buffer:
            # the tap's columns are the last buffered records (all of them unless the tap was set
            # in between)
            first = self._next - len(self._tap_crcs)
            with self._lock:
                written = self._write_out(self._buffer, self._buffered)
            self._buffer.clear()
            self._buffered = 0
            self._buffered_records = 0
            records = LoggedRecords(first, self._tap_frames, self._tap_received, self._tap_crcs)
            self._tap_frames, self._tap_received, self._tap_crcs = [], [], []
            self.pressure.update()
            if written and self.tap is not None and records.crcs:
                self.tap(records)
        due = time.monotonic() - self._last_fsync >= self.fsync_interval_s
        if self.policy is FsyncPolicy.ALWAYS or (self.policy is FsyncPolicy.INTERVAL and due):
            self.sync()

    def _write_out(self, parts: list[bytes], size: int) -> bool:
        current = self._segments[-1]
        if size < len(parts) * _JOIN_BELOW_BYTES:
            parts = [b"".join(parts)]
        try:
            write_all(self._fd, parts)
        except OSError as exc:
            self._undo_partial_write(current, exc, self._buffered_records)
            return False
        current.size += size
        self.stats.disk_bytes += size
        self._written = self._next
        return True

    def _undo_partial_write(self, current: _Segment, exc: OSError, records: int) -> None:
        """A failed write (disk full, I/O error): cut the segment back and forget the batch.

        The batch's positions are reused, so the log has no hole; its messages
        are counted as dropped and show up downstream as a sequence gap.
        """
        self.stats.dropped_io_error += records
        self._next = self._written
        try:
            os.ftruncate(self._fd, current.size)
        except OSError:
            log.exception("WAL cannot truncate after a failed write segment=%s", current.path.name)
        log.error("WAL write failed, batch dropped (counted) records=%d error=%s", records, exc)

    def _rotate(self) -> None:
        with self._lock:
            self._fsync_fd(self._fd)
            self._synced = self._written
            os.close(self._fd)
            self._start_segment(self._next)

    # -- the flush side -------------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Records before this position are in the OS and may be read."""
        return self._written

    def sync(self) -> None:
        """fsync everything written so far (any thread)."""
        with self._lock:
            target = self._written
            if self._synced >= target or self._fd < 0:
                return
            fd = os.dup(self._fd)
        try:
            self._fsync_fd(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._synced = max(self._synced, target)

    def _fsync_fd(self, fd: int) -> None:
        started = time.perf_counter()
        os.fsync(fd)
        self._last_fsync = time.monotonic()
        self.stats.fsyncs += 1
        self.stats.fsync_seconds += time.perf_counter() - started

    def release(self, flushed: int) -> int:
        """Delete closed segments whose records are all before `flushed`; returns bytes freed."""
        freed = 0
        with self._lock:
            while len(self._segments) > 1 and self._segments[1].first <= flushed:
                segment = self._segments.pop(0)
                segment.path.unlink(missing_ok=True)
                freed += segment.size
            self.stats.disk_bytes -= freed
            self.stats.segments = len(self._segments)
        if freed:
            self.pressure.update()
        return freed

    def close(self) -> None:
        self.commit()
        with self._lock:
            if self._fd >= 0:
                if self._synced < self._written:
                    self._fsync_fd(self._fd)
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


def _is_version_1(segment: _Segment) -> bool:
    with segment.path.open("rb") as stream:
        return stream.read(len(MAGIC_V1)) == MAGIC_V1


def read_all(directory: Path) -> list[WalRecord]:
    """Every intact record in the log, in segment order, damage stepped over (tests and tools)."""
    records: list[WalRecord] = []
    for _, path in list_segments(directory):
        records.extend(item for _, item in scan_segment(path) if not isinstance(item, RecordError))
    return records


def write_all(fd: int, parts: list[bytes]) -> None:
    """Write every part in order with writev: the OS copies them once, no joined copy is made first.

    `parts` is consumed: a part the OS took only in part is replaced by its remainder.
    """
    index = 0
    while index < len(parts):
        batch = parts[index : index + _IOV_MAX]
        written = os.writev(fd, batch)
        for part in batch:
            if written < len(part):
                parts[index] = memoryview(part)[written:]  # type: ignore[call-overload]
                break
            written -= len(part)
            index += 1
