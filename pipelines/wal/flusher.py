"""The durable flush path: write-ahead log -> rollups -> ClickHouse, exactly once.

The receiver only appends raw messages to the log (append, received). The
flusher reads the log in position ranges [start, end) and, for each range:

1. plan: fsync the log through `end`, decode and aggregate the range's
   records (the same Ingestor code as ever), and record the range in the
   checkpoint as in flight;
2. send: insert every partial rollup with the token
   `<wal id>-<start>-<end>-<digest>`, retrying with exponential backoff while
   ClickHouse is unavailable; an insert ClickHouse refuses repeatedly goes to
   the dead-letter file with the reason;
3. commit: move the checkpoint's `flushed` to `end` (with the publishers'
   sequence positions) and delete segments that are entirely flushed.

A crash anywhere is repaired by the next start: the in-flight range is read
again from the log with the same bounds, so it gets the same token and
ClickHouse drops whatever part of it had landed; the rest of the log is
flushed in new ranges. Ranges drain strictly in order, one at a time, so
memory holds one range (at most wal_flush_max_bytes of messages) whatever
the length of an outage. The Ingestor's clock is the receive time of the
record being replayed, so a replay judges timestamps as the first pass did.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import pyarrow as pa

from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from pipelines.wal.checkpoint import Checkpoint, InFlight, SequencePosition, store_checkpoint
from pipelines.wal.deadletter import DeadLetters
from pipelines.wal.format import WalRecord
from pipelines.wal.reader import RangeRead, WalReader
from pipelines.wal.writer import WalWriter
from pipelines.windows.batch import Batch
from sinks.clickhouse.contract import TABLES_BY_NAME, WINDOW_COLUMN, Rollup
from sinks.errors import SinkError, SinkRejectedError

if TYPE_CHECKING:
    from pipelines.runners.local import RunSummary

log = logging.getLogger(__name__)

DRAIN_SLICE_S: Final = 5.0
# ClickHouse's UNKNOWN_TABLE and UNKNOWN_DATABASE.
SCHEMA_MISSING_CODES: Final = frozenset({60, 81})
# Sequence positions of publishers silent this long are dropped from the checkpoint.
SEQUENCE_TTL_NS: Final = 7 * 24 * 3600 * 1_000_000_000


class RollupSink(Protocol):
    def setup(self) -> None: ...

    def write(self, partials: Mapping[str, pa.Table], token: str) -> int: ...


class FlushObserver(Protocol):
    """Told what each flush did (pipelines.observe.watch.WorkerWatch: metrics, liveness, /status)."""

    def took(self, batch: Batch) -> None: ...

    def wrote(self, seconds: float, rows: int) -> None: ...

    def failed(self, error: SinkError) -> None: ...

    wal_readings: Callable[[], dict[str, float]] | None


class ArchiveOutput(Protocol):
    """An extra table written in the same flush, under the same token (the raw-event archive)."""

    name: str

    def setup(self) -> None: ...

    def build(self, records: Sequence[WalRecord]) -> pa.Table: ...

    def write(self, table: pa.Table, token: str) -> int: ...


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float = 0.5
    max_s: float = 30.0
    refusals_before_dead_letter: int = 3
    flush_max_bytes: int = 128 << 20


def in_key_order(name: str, table: pa.Table) -> pa.Table:
    """Rows sorted by their keys, so a range aggregated again is the same block, row for row.

    ClickHouse 26 deduplicates a token whatever the row order; older servers
    derive per-part ids from the order of the partitions in the block.
    """
    if table.num_rows < 2:
        return table
    table_def = TABLES_BY_NAME[name]
    windowed = [WINDOW_COLUMN] if isinstance(table_def, Rollup) else []
    keys = [*windowed, *(k.name for k in table_def.keys)]
    return table.sort_by([(key, "ascending") for key in keys])


class ReceiveClock:
    """The Ingestor's clock while flushing: the receive time of the record being ingested."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


@dataclasses.dataclass(slots=True)
class Flight:
    """A planned range and everything computed from it, kept until it is committed."""

    range: InFlight
    token: str
    partials: dict[str, pa.Table]
    messages: int
    records: int
    sequences: list[SequencePosition]
    planned_at: float = dataclasses.field(default_factory=time.perf_counter)
    rows: int = 0
    done: set[str] = dataclasses.field(default_factory=set)
    refusals: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass(slots=True)
class FlushStats:
    flushes: int = 0
    rows_written: int = 0
    records_written: int = 0
    failed_attempts: int = 0
    dead_lettered_rows: int = 0


class DurableFlusher:
    def __init__(
        self,
        writer: WalWriter,
        checkpoint: Checkpoint,
        ingestor: Ingestor,
        clock: ReceiveClock,
        sink: RollupSink,
        *,
        retry: RetryPolicy | None = None,
        dead_letters: DeadLetters,
        archive: ArchiveOutput | None = None,
        observer: FlushObserver | None = None,
    ) -> None:
        self.writer = writer
        self.reader = WalReader(writer.directory)
        self.checkpoint = checkpoint
        self.ingestor = ingestor
        self.clock = clock
        self.sink = sink
        self.retry = retry or RetryPolicy()
        self.dead_letters = dead_letters
        self.archive = archive
        self.observer = observer
        self.stats = FlushStats()
        self._flight: Flight | None = None
        self._ready = False
        self._retry_at = 0.0
        self._delay = self.retry.initial_s
        self._seen: dict[tuple[str, int], tuple[int, int]] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the log for appending and resume from the checkpoint (before receiving starts)."""
        end = self.writer.open(self.checkpoint.flushed)
        for position in self.checkpoint.sequences:
            self.ingestor.sequences.restore(position.node, position.boot, position.last_seq)
            self._seen[(position.node, position.boot)] = (position.last_seq, position.seen_ns)
        store_checkpoint(self.writer.directory, self.checkpoint)
        backlog = end - self.checkpoint.flushed
        log.info(
            "WAL open dir=%s wal_id=%s flushed=%d end=%d backlog_records=%d inflight=%s publishers=%d",
            self.writer.directory,
            self.checkpoint.wal_id,
            self.checkpoint.flushed,
            end,
            backlog,
            self.checkpoint.inflight,
            len(self.checkpoint.sequences),
        )

    def append(self, frames: list[bytes]) -> None:
        """Receiver thread: log one message."""
        self.writer.append(frames, time.time_ns())

    def received(self) -> None:
        """Receiver thread: the batch drained from the sockets is complete; hand it to the OS."""
        self.writer.commit()

    @property
    def backlog(self) -> int:
        """Records in the log not yet committed to ClickHouse."""
        return self.writer.written - self.checkpoint.flushed

    def report_to(self, observer: FlushObserver) -> None:
        """Tell `observer` what every flush does, and let it read the log's numbers."""
        self.observer = observer
        observer.wal_readings = self.readings

    def readings(self) -> dict[str, float]:
        """The log's numbers for metrics and `tykpulse status` (read from another thread: plain ints)."""
        stats = self.writer.stats
        return {
            "disk_bytes": stats.disk_bytes,
            "max_bytes": stats.max_bytes,
            "used_ratio": round(stats.used_fraction, 4),
            "backlog_records": self.backlog,
            "appended": stats.appended,
            "dropped_full": stats.dropped_full,
            "dropped_io_error": stats.dropped_io_error,
            "dropped_unloggable": stats.dropped_unloggable,
            "fsyncs": stats.fsyncs,
            "damaged_records": self.reader.damaged_total,
            "failed_attempts": self.stats.failed_attempts,
            "dead_lettered_rows": self.stats.dead_lettered_rows,
        }

    def caught_up(self) -> bool:
        return self._flight is None and self.backlog <= 0

    def finish(self, timeout_s: float) -> bool:
        """After receiving stopped: write everything the log holds, for at most timeout_s."""
        self.writer.commit()
        deadline = time.monotonic() + timeout_s
        while True:
            self.flush(deadline=deadline)
            if self.caught_up():
                return True
            wait = min(self._retry_at, deadline) - time.monotonic()
            if time.monotonic() >= deadline:
                log.warning(
                    "shutdown timeout: records stay in the WAL and are written at next start backlog=%d",
                    self.backlog,
                )
                return False
            time.sleep(max(wait, 0.01))

    def close(self) -> None:
        self.writer.close()
        stats = self.writer.stats
        log.info(
            "WAL closed backlog_records=%d appended=%d dropped_full=%d dropped_io_error=%d fsyncs=%d "
            "damaged_records=%d flushes=%d failed_attempts=%d dead_lettered_rows=%d",
            self.backlog,
            stats.appended,
            stats.dropped_full,
            stats.dropped_io_error,
            stats.fsyncs,
            self.reader.damaged_total,
            self.stats.flushes,
            self.stats.failed_attempts,
            self.stats.dead_lettered_rows,
        )

    def summarise(self, summary: RunSummary) -> None:
        summary.flushes = self.stats.flushes
        summary.rows_written = self.stats.rows_written
        summary.records_written = self.stats.records_written
        summary.unwritten_flushes = 0 if self.caught_up() else 1

    # -- the flush cycle ------------------------------------------------------------------------

    def flush(self, *, deadline: float | None = None) -> None:
        """Flush, in order, what was logged before this call: until done, a failure or the deadline.

        Only what was logged before the call is taken, so a busy firehose does
        not turn one flush into a stream of tiny inserts; without a deadline a
        call returns after DRAIN_SLICE_S, so a long backlog does not hold off
        the caller's stop checks.
        """
        target = self.writer.written
        if deadline is None:
            deadline = time.monotonic() + DRAIN_SLICE_S
        while time.monotonic() < deadline:
            if time.monotonic() < self._retry_at:
                return
            if not self._ready and not self._setup():
                return
            if self._flight is None:
                if self.checkpoint.flushed >= target:
                    return
                self._flight = self._plan(target)
                if self._flight is None:
                    return
            if not self._send(self._flight):
                return
            self._commit(self._flight)
            self._flight = None

    def _setup(self) -> bool:
        try:
            self.sink.setup()
            if self.archive is not None:
                self.archive.setup()
        except SinkError as exc:
            self._failed(exc, "ClickHouse setup")
            return False
        self._ready = True
        return True

    def _plan(self, limit: int) -> Flight | None:
        start = self.checkpoint.flushed
        inflight = self.checkpoint.inflight
        if inflight is not None and inflight.start == start:
            read = self.reader.read(start, min(inflight.end, limit))
            if read.digest != inflight.digest or read.end != inflight.end:
                log.warning(
                    "WAL range in flight at the crash reads back differently (log tail lost?); "
                    "it gets a new token planned=%s read_end=%d",
                    inflight,
                    read.end,
                )
        else:
            if limit <= start:
                return None
            # What ClickHouse counts must never be lost by the log, so the range is
            # made durable before it is planned (one fsync per flush in every policy).
            self.writer.sync()
            read = self.reader.read(start, limit, max_bytes=self.retry.flush_max_bytes)
        flight = self._aggregate(read)
        self.checkpoint.inflight = flight.range
        store_checkpoint(self.writer.directory, self.checkpoint)
        return flight

    def _aggregate(self, read: RangeRead) -> Flight:
        ingest = self.ingestor.ingest
        for record in read.records:
            self.clock.now_ns = record.received_ns
            ingest(record.frames, record.received_ns)
        batch = self.ingestor.take()
        if self.observer is not None:
            self.observer.took(batch)
        partials = {name: in_key_order(name, table) for name, table in compute(batch).items()}
        if self.archive is not None:
            partials[self.archive.name] = self.archive.build(read.records)
        last_received = read.records[-1].received_ns if read.records else 0
        span = InFlight(read.start, read.end, read.digest)
        return Flight(
            range=span,
            token=f"{self.checkpoint.wal_id}-{span.start}-{span.end}-{span.digest:08x}",
            partials=partials,
            messages=len(read.records),
            records=batch.records,
            sequences=self._sequence_positions(last_received),
        )

    def _sequence_positions(self, now_ns: int) -> list[SequencePosition]:
        for publisher in self.ingestor.sequences.publishers():
            key = (publisher.node, publisher.boot)
            previous = self._seen.get(key)
            if previous is None or previous[0] != publisher.last_seq:
                self._seen[key] = (publisher.last_seq, now_ns)
        horizon = now_ns - SEQUENCE_TTL_NS
        return [
            SequencePosition(node, boot, last_seq, seen)
            for (node, boot), (last_seq, seen) in self._seen.items()
            if seen >= horizon
        ]

    def _send(self, flight: Flight) -> bool:
        for name, table in flight.partials.items():
            if name in flight.done or table.num_rows == 0:
                continue
            try:
                if self.archive is not None and name == self.archive.name:
                    rows = self.archive.write(table, flight.token)
                else:
                    rows = self.sink.write({name: table}, flight.token)
            except SinkRejectedError as exc:
                if exc.code in SCHEMA_MISSING_CODES:
                    # The server lost the schema (a new server, a dropped database): this
                    # is not a refusal of the rows. Apply the schema again, then retry.
                    self._ready = False
                    self._failed(exc, f"insert {name} (schema missing)")
                    return False
                flight.refusals[name] += 1
                if flight.refusals[name] < self.retry.refusals_before_dead_letter:
                    self._failed(exc, f"insert {name} (refused {flight.refusals[name]} times)")
                    return False
                self.dead_letters.add(
                    token=flight.token, table=exc.table or name, rows=table, reason=str(exc), code=exc.code
                )
                self.stats.dead_lettered_rows += table.num_rows
            except SinkError as exc:
                self._failed(exc, f"insert {name}")
                return False
            else:
                self.stats.rows_written += rows
                flight.rows += rows
            flight.done.add(name)
        return True

    def _commit(self, flight: Flight) -> None:
        self.checkpoint.flushed = flight.range.end
        self.checkpoint.inflight = None
        self.checkpoint.sequences = flight.sequences
        store_checkpoint(self.writer.directory, self.checkpoint)
        self.writer.release(self.checkpoint.flushed)
        self.stats.flushes += 1
        self.stats.records_written += flight.records
        if self.observer is not None:
            self.observer.wrote(time.perf_counter() - flight.planned_at, flight.rows)
        if self._delay > self.retry.initial_s:
            log.info("ClickHouse writes succeed again; draining the WAL backlog=%d", self.backlog)
        self._delay = self.retry.initial_s
        self._retry_at = 0.0
        log.debug("flushed token=%s messages=%d records=%d", flight.token, flight.messages, flight.records)

    def _failed(self, exc: SinkError, action: str) -> None:
        self.stats.failed_attempts += 1
        if self.observer is not None:
            self.observer.failed(exc)
        self._retry_at = time.monotonic() + self._delay
        log.warning(
            "%s failed, the WAL keeps the data; retrying in %.1fs backlog=%d error=%s",
            action,
            self._delay,
            self.backlog,
            exc,
        )
        self._delay = min(self._delay * 2, self.retry.max_s)
