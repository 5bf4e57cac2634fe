"""The durable flush path: write-ahead log -> rollups -> ClickHouse, exactly once.

The receiver only hands raw messages over (append, received); the appender
thread (pipelines.wal.appender) logs them. The flusher takes the log in
position ranges [start, end) and, for each range:

1. plan: fsync the log through `end`, decode and aggregate the range's
   records (the same Ingestor code as ever), and record the range in the
   checkpoint as in flight;
2. send: insert every partial rollup with the token
   `<wal id>-<start>-<end>-<digest>`, retrying with exponential backoff while
   an insert fails for any reason that does not prove its rows bad (an outage,
   a cancelled query, a missing schema, a denied user); an insert refused
   repeatedly because of its rows goes to the dead-letter file with the reason;
3. commit: move the checkpoint's `flushed` to `end` (with the publishers'
   sequence positions) and delete segments that are entirely flushed.

A crash anywhere is repaired by the next start: the in-flight range is read
again from the log with the same bounds, so it gets the same token and
ClickHouse drops whatever part of it had landed; the rest of the log is
flushed in new ranges. Ranges drain strictly in order, one at a time, so
memory holds one range (at most wal_flush_max_bytes of messages) whatever
the length of an outage. The Ingestor's clock is the receive time of the
record being replayed, so a replay judges timestamps as the first pass did.

Decoding as messages are logged (the live range): while the flusher keeps up,
reading back what was just written would only cost time, and would serialise
decoding with the inserts. So once a read-back reaches the end of the log, the
writer's tap hands every record, as soon as it is in the OS, to the Ingestor
(on the appender thread), and the next range is simply "what the tap decoded": the
same records, the same digest (chained from the same CRCs), so the same token
a read-back would give. Decoding then overlaps the flusher's inserts. A flusher
that is merely slower than the firehose paces the receiver (wait_for_room). When
a ClickHouse write fails the live range is closed, flushed as it stands once
ClickHouse is back, and what arrived meanwhile is read back from the log until
the flusher has caught up again. A crash loses nothing: the
in-flight range is on the log either way, and a restart reads it back.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import pyarrow as pa

from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from pipelines.wal.appender import BackgroundAppender
from pipelines.wal.checkpoint import Checkpoint, InFlight, SequencePosition, store_checkpoint
from pipelines.wal.deadletter import DeadLetters
from pipelines.wal.format import WalRecord
from pipelines.wal.reader import RangeRead, WalReader, chain_digest, seal_digest
from pipelines.wal.writer import WalWriter
from pipelines.windows.batch import Batch, PendingMessages
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
    live: bool = False
    planned_at: float = dataclasses.field(default_factory=time.perf_counter)
    rows: int = 0
    done: set[str] = dataclasses.field(default_factory=set)
    refusals: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)


@dataclasses.dataclass(slots=True)
class LiveRange:
    """Records [start, end) decoded as they were logged, not yet taken by a flush."""

    start: int
    end: int
    chain: int = 0  # the records' CRCs chained, as a read-back of [start, end) would
    last_received_ns: int = 0
    open: bool = True  # False: ClickHouse writes fail; records from `end` on are read back

    def close(self, reason: str) -> None:
        if self.open:
            self.open = False
            log.info("WAL live decoding paused (%s); reading the log back until caught up", reason)


@dataclasses.dataclass(slots=True)
class FlushStats:
    flushes: int = 0
    live_ranges: int = 0  # flushes of records decoded as they were logged
    read_back_ranges: int = 0  # flushes of records read back from the log
    rows_written: int = 0
    records_written: int = 0
    failed_attempts: int = 0
    dead_lettered_rows: int = 0


def _last_received(read: RangeRead) -> int:
    return read.records[-1].received_ns if read.records else 0


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
        self.appender = BackgroundAppender(writer)
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
        # The archive stores the raw frames, which only a read-back has.
        self.decode_on_receive = archive is None
        self._live: LiveRange | None = None
        self._live_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the log for appending and resume from the checkpoint (before receiving starts)."""
        end = self.writer.open(self.checkpoint.flushed)
        for position in self.checkpoint.sequences:
            self.ingestor.sequences.restore(position.node, position.boot, position.last_seq)
            self._seen[(position.node, position.boot)] = (position.last_seq, position.seen_ns)
        store_checkpoint(self.writer.directory, self.checkpoint)
        if self.decode_on_receive:
            self.writer.tap = self._logged
        self.appender.start()
        # Ready before the first message if ClickHouse is (the first flush then finds nothing
        # to read back and decodes as it logs from the start); if not, the flushes retry.
        self._setup()
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
        """Receiver thread: log one message (stamped with its receive time now)."""
        self.appender.add(frames)

    def received(self) -> None:
        """Receiver thread: the batch drained from the sockets is complete; hand it to the log."""
        self.appender.hand_over()

    def wait_for_room(self, timeout_s: float) -> bool:
        """Receiver thread: False while max_pending_records decoded records wait for the flusher.

        The pace of a flusher that keeps up but is slower than the firehose: as
        without a log, the receiver waits and ZeroMQ pushes back. While the log
        is read back (a restart, a ClickHouse outage) it takes everything, up to
        its disk bound, so an outage loses nothing.
        """
        live = self._live
        if live is None or not live.open:
            return True
        return self.ingestor.wait_for_room(timeout_s)

    def wait_logged(self) -> None:
        """Wait until every message handed over is in the log (and, if live, decoded)."""
        self.appender.wait_idle()

    def _logged(self, records: list[WalRecord]) -> None:
        """Appender thread (the writer's tap): decode records now in the log into the live range."""
        with self._live_lock:
            live = self._live
            if live is None or not live.open:
                return
            ingest = self.ingestor.ingest
            clock = self.clock
            for record in records:
                if record.position < live.end:
                    continue  # logged before the range opened: a read-back takes it
                if record.position > live.end:
                    # Cannot happen while the tap sees every write; if it did, the log has them.
                    live.close(f"records not contiguous at {live.end}, got {record.position}")
                    return
                clock.now_ns = record.received_ns
                ingest(record.frames, record.received_ns)
                live.chain = chain_digest(live.chain, record)
                live.end += 1
                live.last_received_ns = record.received_ns

    def _go_live(self) -> None:
        """Flusher thread, with everything in the log flushed: decode what is logged next as it comes."""
        if not self.decode_on_receive or self._live is not None:
            return
        with self._live_lock:
            written = self.writer.written
            if written == self.checkpoint.flushed:
                self._live = LiveRange(written, written)

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
            "live_ranges": self.stats.live_ranges,
            "log_ranges": self.stats.read_back_ranges,
            # 0 until the schema is applied: the worker runs and logs, waiting for ClickHouse.
            "clickhouse_ready": 1 if self._ready else 0,
        }

    def caught_up(self) -> bool:
        return self._flight is None and self.appender.queued_batches == 0 and self.backlog <= 0

    def finish(self, timeout_s: float) -> bool:
        """After receiving stopped: write everything the log holds, for at most timeout_s."""
        self.wait_logged()
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
        self.appender.stop()
        self.writer.close()
        stats = self.writer.stats
        log.info(
            "WAL closed backlog_records=%d appended=%d dropped_full=%d dropped_io_error=%d fsyncs=%d "
            "damaged_records=%d flushes=%d (live=%d read_back=%d) failed_attempts=%d dead_lettered_rows=%d",
            self.backlog,
            stats.appended,
            stats.dropped_full,
            stats.dropped_io_error,
            stats.fsyncs,
            self.reader.damaged_total,
            self.stats.flushes,
            self.stats.live_ranges,
            self.stats.read_back_ranges,
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
                self._flight = self._plan(target)
                if self._flight is None:
                    self._go_live()
                    return
            flight = self._flight
            if not self._send(flight):
                return
            self._commit(flight)
            self._flight = None
            if flight.live:
                return  # the live range is cut once per flush: the next one is still arriving

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
        """The next range in log order (None if there is none yet), recorded as in flight."""
        start = self.checkpoint.flushed
        inflight = self.checkpoint.inflight
        live = self._live
        if live is not None and live.start != start:
            msg = f"the live range starts at {live.start}, the log is flushed to {start}"
            raise AssertionError(msg)
        if live is not None and not live.open and live.end == live.start:
            self._live = live = None  # closed before it held a record: the rest is read back
        if inflight is not None and inflight.start == start:
            read = self.reader.read(start, min(inflight.end, limit))
            if read.digest != inflight.digest or read.end != inflight.end:
                log.warning(
                    "WAL range in flight at the crash reads back differently (log tail lost?); "
                    "it gets a new token planned=%s read_end=%d",
                    inflight,
                    read.end,
                )
            flight = self._read_back(read, catch_up=False)
        elif live is not None:
            taken = self._take_live()
            if taken is None:
                return None
            flight = taken
        else:
            if limit <= start:
                return None
            # What ClickHouse counts must never be lost by the log, so the range is
            # made durable before it is planned (one fsync per flush in every policy).
            self.writer.sync()
            read = self.reader.read(start, limit, max_bytes=self.retry.flush_max_bytes)
            flight = self._read_back(read, catch_up=read.end >= limit)
        self.checkpoint.inflight = flight.range
        store_checkpoint(self.writer.directory, self.checkpoint)
        return flight

    def _read_back(self, read: RangeRead, *, catch_up: bool) -> Flight:
        """A range read back from the log; with catch_up, read on to the log's end and go live there.

        The catch-up holds the tap while it reads the last records, so that no
        record is both read back and decoded as logged; the log's end cannot
        move past what the tap will hand over next.
        """
        self._ingest(read.records)
        if not (catch_up and self.decode_on_receive and self._live is None):
            pending = self.ingestor.detach()
            sequences = self._sequence_positions(_last_received(read))
        else:
            with self._live_lock:
                written = self.writer.written
                tail = len(read.records)
                self.reader.extend(read, written, max_bytes=read.bytes + self.retry.flush_max_bytes // 4)
                self._ingest(read.records[tail:])
                if read.end == written:
                    self._live = LiveRange(written, written)
                pending = self.ingestor.detach()
                sequences = self._sequence_positions(_last_received(read))
            self.writer.sync()  # the records read on, too, are durable before they are planned
        self.stats.read_back_ranges += 1
        flight = self._make_flight(
            pending, InFlight(read.start, read.end, read.digest), sequences, len(read.records)
        )
        if self.archive is not None:
            flight.partials[self.archive.name] = self.archive.build(read.records)
        return flight

    def _ingest(self, records: Sequence[WalRecord]) -> None:
        ingest = self.ingestor.ingest
        for record in records:
            self.clock.now_ns = record.received_ns
            ingest(record.frames, record.received_ns)

    def _take_live(self) -> Flight | None:
        """Cut the live range where the tap is now; None if it holds no record."""
        with self._live_lock:
            live = self._live
            if live is None or live.end == live.start:
                return None
            pending = self.ingestor.detach()
            sequences = self._sequence_positions(live.last_received_ns)
            span = InFlight(live.start, live.end, seal_digest(live.chain, live.start, live.end))
            self._live = LiveRange(live.end, live.end) if live.open else None
        # Durable before planned, as for a read-back: everything tapped is written, so this covers it.
        self.writer.sync()
        self.stats.live_ranges += 1
        flight = self._make_flight(pending, span, sequences, span.end - span.start)
        flight.live = True
        return flight

    def _make_flight(
        self, pending: PendingMessages, span: InFlight, sequences: list[SequencePosition], messages: int
    ) -> Flight:
        batch = self.ingestor.build(pending)
        if self.observer is not None:
            self.observer.took(batch)
        partials = {name: in_key_order(name, table) for name, table in compute(batch).items()}
        return Flight(
            range=span,
            token=f"{self.checkpoint.wal_id}-{span.start}-{span.end}-{span.digest:08x}",
            partials=partials,
            messages=messages,
            records=batch.records,
            sequences=sequences,
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
                # Only an error that proves the rows bad gets here (sinks.clickhouse.sink.translate):
                # nothing another client can cause to good rows ends in the dead-letter file.
                flight.refusals[name] += 1
                if flight.refusals[name] < self.retry.refusals_before_dead_letter:
                    self._failed(exc, f"insert {name} (refused {flight.refusals[name]} times)")
                    return False
                self.dead_letters.add(
                    token=flight.token, table=exc.table or name, rows=table, reason=str(exc), code=exc.code
                )
                self.stats.dead_lettered_rows += table.num_rows
            except SinkError as exc:
                if exc.code in SCHEMA_MISSING_CODES:
                    # The server lost the schema (a new server, a dropped database): the rows
                    # are fine. Apply the schema again, then retry.
                    self._ready = False
                    self._failed(exc, f"insert {name} (schema missing)")
                    return False
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
        # Whatever arrives during an outage waits in the log, not in memory.
        with self._live_lock:
            if self._live is not None:
                self._live.close("ClickHouse writes fail")
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
