"""The in-memory journal (`tykpulse run --no-wal`): received messages decoded, flushed from memory.

For benchmarks and tests: a crash loses everything received since the last
successful flush (docs/guarantees.md). Otherwise it delivers as the WAL does,
through the one delivery path (pipelines.delivery): same tokens on a retry,
backoff while ClickHouse is unavailable, refused rows to the dead letters.

Bounded memory by backpressure, never by dropping: while `max_pending_flushes`
flushes wait for ClickHouse, no new flush is taken, so the Ingestor's buffer
fills to `max_pending_records` and the receiver stops reading (wait_for_room);
ZeroMQ then drops at its high-water mark, and those drops are counted as
sequence gaps (`lost_messages`). What is still unwritten when the worker
exits is lost with the process: counted in `unwritten_flushes` and logged
with the number of records and the reason.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid

from pipelines.delivery import Delivery, Shipment
from pipelines.ingest import Ingestor
from pipelines.journal import FlushObserver, RunSummary
from pipelines.observe.throttle import LogThrottle
from pipelines.rollups import compute
from pipelines.wal.appender import BATCH_MESSAGES

log = logging.getLogger(__name__)


class MemoryJournal:
    def __init__(self, ingestor: Ingestor, delivery: Delivery, *, max_pending_flushes: int) -> None:
        self.ingestor = ingestor
        self.delivery = delivery
        self.max_pending_flushes = max_pending_flushes
        self.observer: FlushObserver | None = None
        self.run_id = uuid.uuid4().hex[:12]
        self._flush_no = 0
        self._pending: collections.deque[Shipment] = collections.deque()
        self._throttle = LogThrottle()
        self._messages: list[list[bytes]] = []
        self._received_ns: list[int] = []

    def open(self) -> None:
        """Apply the schema now: nothing received could be kept through an outage (raises SinkError)."""
        self.delivery.sink.setup()
        for output in self.delivery.outputs.values():
            output.setup()
        self.delivery.ready = True

    def append(self, frames: list[bytes]) -> None:
        """Receiver thread: one received message, stamped now; decoded with the others of its drain."""
        self._messages.append(frames)
        self._received_ns.append(self.ingestor.clock())
        if len(self._messages) >= BATCH_MESSAGES:
            self.received()

    def received(self) -> None:
        """Receiver thread: decode what was appended since the last call, in one hand-over to the
        Ingestor (as the WAL's appender hands its batches over)."""
        if self._messages:
            messages, received_ns = self._messages, self._received_ns
            self._messages, self._received_ns = [], []
            self.ingestor.ingest_many(messages, received_ns)

    def wait_for_room(self, timeout_s: float) -> bool:
        return self.ingestor.wait_for_room(timeout_s)

    def report_to(self, observer: FlushObserver) -> None:
        self.observer = observer

    def flush(self) -> bool:
        """Take what arrived since the last flush (unless flushes are backed up), then write in order;
        True if everything taken is written."""
        if len(self._pending) < self.max_pending_flushes:
            self._take()
        else:
            held = self._throttle.allow("backpressure")
            if held is not None:
                log.warning(
                    "ClickHouse is behind: %d flushes wait in memory, the receiver is held back "
                    "(ZeroMQ drops at its high-water mark, counted as lost_messages) pending_flushes=%d",
                    len(self._pending),
                    len(self._pending),
                )
        self._deliver()
        return not self._pending

    def _take(self) -> None:
        batch = self.ingestor.take()
        if self.observer is not None:
            self.observer.took(batch)
        if batch.messages.height or batch.rejections.height:
            self._flush_no += 1
            token = f"{self.run_id}-{self._flush_no}"
            self._pending.append(self.delivery.shipment(token, compute(batch), records=batch.records))

    def _deliver(self) -> None:
        while self._pending and self.delivery.wait_s() == 0:
            shipment = self._pending[0]
            if not self.delivery.attempt(shipment):
                error = self.delivery.last_error
                if self.observer is not None and error is not None:
                    self.observer.failed(error)
                return
            self._pending.popleft()
            if self.observer is not None:
                self.observer.wrote(time.perf_counter() - shipment.created_at, shipment.rows)

    def unwritten_flushes(self) -> int:
        """Flushes waiting for ClickHouse, and what the Ingestor holds if flushes are backed up."""
        return len(self._pending) + (1 if self.ingestor.pending_records else 0)

    def finish(self, timeout_s: float) -> bool:
        """After receiving stopped: write everything held, retrying for at most timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.flush()
            if not self.unwritten_flushes():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(max(min(self.delivery.wait_s(), remaining), 0.01))

    def close(self) -> None:
        if self.unwritten_flushes():
            log.error(
                "--no-wal: %d flushes (%d records) were not written and are lost with the process reason=%s",
                self.unwritten_flushes(),
                sum(s.records for s in self._pending) + self.ingestor.pending_records,
                self.delivery.last_error or "shutdown timeout",
            )

    def summarise(self, summary: RunSummary) -> None:
        stats = self.delivery.stats
        summary.flushes = stats.flushes
        summary.rows_written = stats.rows_written
        summary.records_written = stats.records_written
        summary.dead_lettered_rows = stats.dead_lettered_rows
        summary.unwritten_flushes = self.unwritten_flushes()
