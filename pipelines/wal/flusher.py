"""The durable flush path: write-ahead log -> rollups -> ClickHouse, exactly once.

Range planning lives in pipelines.wal.planner, sending in pipelines.delivery
(the one retry, refusal and schema rule of every runner); this module runs the
cycle and owns the checkpoint.

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
3. commit: make the inserts survive power loss (the embedded engine's
   filesystem synced: ClickHouse itself fsyncs nothing by default), then move
   the checkpoint's `flushed` to `end` (with the publishers' sequence
   positions) and delete segments that are entirely flushed.

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

import logging
import time
from collections.abc import Callable
from typing import Final

from pipelines.delivery import Delivery, RetryPolicy, RollupSink
from pipelines.errors import PipelineError
from pipelines.ingest import Ingestor
from pipelines.journal import FlushObserver, RunSummary
from pipelines.wal.appender import BackgroundAppender
from pipelines.wal.checkpoint import Checkpoint, store_checkpoint
from pipelines.wal.deadletter import DeadLetters
from pipelines.wal.format import LoggedRecords
from pipelines.wal.planner import ArchiveOutput, Flight, FlushStats, RangePlanner
from pipelines.wal.writer import WalWriter
from pipelines.windows.batch import Batch

log = logging.getLogger(__name__)

DRAIN_SLICE_S: Final = 5.0
DEFAULT_FLUSH_MAX_BYTES: Final = 128 << 20


class DurableFlusher:
    def __init__(
        self,
        writer: WalWriter,
        checkpoint: Checkpoint,
        ingestor: Ingestor,
        sink: RollupSink,
        *,
        retry: RetryPolicy | None = None,
        flush_max_bytes: int = DEFAULT_FLUSH_MAX_BYTES,
        dead_letters: DeadLetters,
        archive: ArchiveOutput | None = None,
        observer: FlushObserver | None = None,
        make_durable: Callable[[], None] = lambda: None,
    ) -> None:
        self.writer = writer
        self.make_durable = make_durable
        self.appender = BackgroundAppender(writer)
        self.checkpoint = checkpoint
        self.ingestor = ingestor
        self.sink = sink
        self.stats = FlushStats()
        self.delivery = Delivery(
            sink,
            dead_letters,
            policy=retry,
            outputs={} if archive is None else {archive.name: archive},
            stats=self.stats,
            keeper="the WAL keeps the data",
        )
        self.dead_letters = dead_letters
        self.archive = archive
        self.observer = observer
        self.planner = RangePlanner(
            writer,
            checkpoint,
            ingestor,
            self.delivery,
            flush_max_bytes=flush_max_bytes,
            archive=archive,
            stats=self.stats,
            took=self._took,
        )
        self.reader = self.planner.reader
        self._flight: Flight | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the log for appending and resume from the checkpoint (before receiving starts)."""
        end = self.writer.open(self.checkpoint.flushed)
        self.planner.restore_sequences()
        store_checkpoint(self.writer.directory, self.checkpoint)
        if self.planner.decode_on_receive:
            self.writer.tap = self._logged
        self.appender.start()
        # Ready before the first message if ClickHouse is, and live from then on: decoded as logged.
        # Going live here, not at the first idle flush: under a firehose that is busy from the first
        # second no flush is ever idle, and a worker that starts by reading back may never catch up.
        # If ClickHouse is down, the flushes retry, and what arrives meanwhile is read back.
        if self.delivery.setup():
            self.planner.go_live()  # a no-op when a backlog is left from before: that is read back first
        else:
            self._failed()
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
        if not self.planner.paces_receiver():
            return True
        return self.ingestor.wait_for_room(timeout_s)

    def wait_logged(self) -> None:
        """Wait until every message handed over is in the log (and, if live, decoded)."""
        self.appender.wait_idle()

    def _logged(self, records: LoggedRecords) -> None:
        """Appender thread (the writer's tap): decode records now in the log into the live range."""
        self.planner.logged(records)

    def _took(self, batch: Batch) -> None:
        if self.observer is not None:
            self.observer.took(batch)

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
            "clickhouse_ready": 1 if self.delivery.ready else 0,
        }

    def caught_up(self) -> bool:
        return self._flight is None and self.appender.queued_batches == 0 and self.backlog <= 0

    def unwritten_flushes(self) -> int:
        return 0 if self.caught_up() else 1

    def finish(self, timeout_s: float) -> bool:
        """After receiving stopped: write everything the log holds, for at most timeout_s."""
        self.wait_logged()
        deadline = time.monotonic() + timeout_s
        while True:
            self.flush(deadline=deadline)
            if self.caught_up():
                return True
            if time.monotonic() >= deadline:
                log.warning(
                    "shutdown timeout: records stay in the WAL and are written at next start backlog=%d",
                    self.backlog,
                )
                return False
            time.sleep(max(min(self.delivery.wait_s(), deadline - time.monotonic()), 0.01))

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
        summary.dead_lettered_rows = self.stats.dead_lettered_rows
        summary.unwritten_flushes = self.unwritten_flushes()

    # -- the flush cycle ------------------------------------------------------------------------

    def flush(self, *, deadline: float | None = None) -> bool:
        """Flush, in order, what was logged before this call: until done, a failure or the deadline.

        Only what was logged before the call is taken, so a busy firehose does
        not turn one flush into a stream of tiny inserts; without a deadline a
        call returns after DRAIN_SLICE_S, so a long backlog does not hold off
        the caller's stop checks. True if everything logged before the call is
        written (what arrived meanwhile may not be: under a steady firehose
        there is always some).
        """
        target = self.writer.written
        if deadline is None:
            deadline = time.monotonic() + DRAIN_SLICE_S
        while time.monotonic() < deadline:
            if self.delivery.wait_s() > 0:
                return False
            if not self.delivery.ready and not self.delivery.setup():
                self._failed()
                return False
            if self._flight is None:
                self._flight = self._plan(target)
                if self._flight is None:
                    self.planner.go_live()
                    return True
            flight = self._flight
            if not self.delivery.attempt(flight.shipment):
                self._failed()
                return False
            self._durable(flight)
            self._commit(flight)
            self._flight = None
            if flight.live:
                # the live range is cut once per flush, where the log was: the next one is still arriving
                return True
        return False

    def _plan(self, limit: int) -> Flight | None:
        """The next range in log order (None if there is none yet), recorded as in flight."""
        flight = self.planner.plan(limit)
        if flight is not None:
            self.checkpoint.inflight = flight.range
            store_checkpoint(self.writer.directory, self.checkpoint)
        return flight

    def _durable(self, flight: Flight) -> None:
        """What the flight wrote survives power loss before the checkpoint lets the log forget it.

        A disk that failed to take it is fatal: sending the flight again would land nowhere (ClickHouse
        has its token), and the page cache no longer says what reached the disk. The worker stops
        with the range still in the log, which a restart on a sound disk writes again.
        """
        try:
            self.make_durable()
        except OSError as exc:
            msg = (
                f"the disk failed to take what ClickHouse acknowledged ({exc}); stopping with log "
                f"positions {flight.range.start}-{flight.range.end} kept: check the disk, then restart"
            )
            raise PipelineError(msg) from exc

    def _commit(self, flight: Flight) -> None:
        self.checkpoint.flushed = flight.range.end
        self.checkpoint.inflight = None
        self.checkpoint.sequences = flight.sequences
        store_checkpoint(self.writer.directory, self.checkpoint)
        self.writer.release(self.checkpoint.flushed)
        if self.observer is not None:
            self.observer.wrote(time.perf_counter() - flight.planned_at, flight.shipment.rows)
        log.debug(
            "flushed token=%s messages=%d records=%d backlog=%d",
            flight.shipment.token,
            flight.shipment.messages,
            flight.shipment.records,
            self.backlog,
        )

    def _failed(self) -> None:
        """After a failed attempt (the delivery logged it and scheduled the retry)."""
        # Whatever arrives during an outage waits in the log, not in memory.
        self.planner.close_live("ClickHouse writes fail")
        error = self.delivery.last_error
        if self.observer is not None and error is not None:
            self.observer.failed(error)
