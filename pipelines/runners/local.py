"""The local runner: ZeroMQ firehose -> Ingestor -> rollups -> ClickHouse, on one machine.

Two threads, so that receiving and flushing overlap: the receiver only
decodes and buffers; the flusher (the caller's thread) turns what arrived
since the last flush into partial rollups and writes them. Partial rollups
merge in ClickHouse, so nothing is held back waiting for a window to close.

Delivery: every record received is written in the next flush. A flush the
sink refuses is kept and retried (same deduplication token, so a retry that
already landed is not counted twice) up to max_pending_flushes; on shutdown
the firehose is drained until quiet, then everything pending is flushed.

With a journal (pipelines.wal: the write-ahead log), the receiver only logs
messages and the journal does the flushing, exactly once, through crashes
and ClickHouse outages; see docs/guarantees.md.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import pyarrow as pa
import zmq

from pipelines.errors import PipelineError
from pipelines.firehose.codec import Limits
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.subscriber import FirehoseSubscriber
from pipelines.ingest import Ingestor, NoticeCheck
from pipelines.keys import KeyHasher
from pipelines.observe.watch import WorkerWatch
from pipelines.rollups import compute
from pipelines.security.curve import CurveSession
from pipelines.settings import FirehoseSettings, WorkerSettings
from pipelines.windows.tumbling import TumblingWindows
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkError, SinkRejectedError

log = logging.getLogger(__name__)

_POLL_MS = 50


@dataclasses.dataclass(slots=True)
class PendingFlush:
    token: str
    partials: dict[str, pa.Table]
    records: int
    attempts: int = 0


@dataclasses.dataclass(slots=True)
class RunSummary:
    messages: int = 0
    records: int = 0
    lost: int = 0
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    flushes: int = 0
    rows_written: int = 0
    records_written: int = 0
    unwritten_flushes: int = 0


def build_ingestor(
    firehose: FirehoseSettings,
    worker: WorkerSettings,
    *,
    notice_check: NoticeCheck | None = None,
    clock: Callable[[], int] = time.time_ns,
    hasher: KeyHasher | None = None,
) -> Ingestor:
    return Ingestor(
        TumblingWindows(worker.window_seconds),
        limits=Limits(firehose.max_message_bytes, firehose.max_records),
        hasher=hasher or KeyHasher(worker.key_hash_salt.get_secret_value().encode()),
        max_future_ns=firehose.max_future_s * 1_000_000_000,
        max_past_ns=firehose.max_past_s * 1_000_000_000,
        max_pending_records=worker.max_pending_records,
        notice_check=notice_check,
        clock=clock,
    )


class Journal(Protocol):
    """A durable flush path (pipelines.wal.flusher.DurableFlusher) that replaces the in-memory one."""

    def open(self) -> None: ...

    def append(self, frames: list[bytes]) -> None: ...

    def received(self) -> None: ...

    def wait_for_room(self, timeout_s: float) -> bool: ...

    def flush(self) -> None: ...

    def caught_up(self) -> bool: ...

    def finish(self, timeout_s: float) -> bool: ...

    def close(self) -> None: ...

    def summarise(self, summary: RunSummary) -> None: ...


class LocalRunner:
    def __init__(
        self,
        firehose: FirehoseSettings,
        worker: WorkerSettings,
        sink: ClickHouseSink,
        *,
        context: zmq.Context[Any] | None = None,
        ingestor: Ingestor | None = None,
        watch: WorkerWatch | None = None,
        curve: CurveSession | None = None,
        journal: Journal | None = None,
        shutdown_timeout_s: float = 30.0,
    ) -> None:
        self.firehose = firehose
        self.worker = worker
        self.sink = sink
        self.context = context or zmq.Context.instance()
        self.ingestor = ingestor or build_ingestor(firehose, worker)
        self.watch = watch or WorkerWatch(self.ingestor)
        self.curve = curve
        self.journal = journal
        self.shutdown_timeout_s = shutdown_timeout_s
        self.run_id = uuid.uuid4().hex[:12]
        self._flush_no = 0
        self._pending: deque[PendingFlush] = deque()
        self._receiving = threading.Event()
        self._quiet_since = time.monotonic()
        self._receiver_failure: Exception | None = None
        self.summary = RunSummary()

    def run(self, stop: threading.Event) -> RunSummary:
        """Run until `stop` is set, then drain, flush and return what happened."""
        if self.journal is None:
            self.sink.setup()
        else:
            self.journal.open()
        subscriber = FirehoseSubscriber(
            self.context,
            [parse_endpoint(e) for e in self.firehose.firehose],
            topics=self.firehose.topics,
            rcvhwm=self.firehose.rcvhwm,
            max_message_bytes=self.firehose.max_message_bytes,
            curve=self.curve,
        )
        log.info("worker subscribed endpoints=%s run_id=%s", subscriber.addresses, self.run_id)
        stop_receiving = threading.Event()
        receiver = threading.Thread(
            target=self._receive, args=(subscriber, stop_receiving), name="tykpulse-receiver", daemon=True
        )
        receiver.start()
        try:
            # Flushes keep a fixed cadence (the time a flush takes is not added to
            # the interval), so a record waits at most one interval to be taken.
            interval = self.worker.flush_interval_s
            next_flush = time.monotonic() + interval
            while not stop.wait(max(0.0, next_flush - time.monotonic())):
                next_flush = max(next_flush + interval, time.monotonic())
                self.flush()
                if not receiver.is_alive():
                    # Flushing on without a receiver would look healthy and take nothing.
                    msg = f"the receiver stopped: {self._receiver_failure!r}"
                    raise PipelineError(msg)
            self._drain(stop_receiving)
            receiver.join()
            if self.journal is not None:
                self.journal.finish(self.shutdown_timeout_s)
            self.flush()
            self._retry_pending(final=True)
        finally:
            stop_receiving.set()
            receiver.join(timeout=5)
            subscriber.close()
            if self.journal is not None:
                self.journal.close()
        return self._summarise()

    def _receive(self, subscriber: FirehoseSubscriber, stop: threading.Event) -> None:
        try:
            self._receive_until(subscriber, stop)
        except Exception as exc:
            self._receiver_failure = exc
            log.exception("the receiver failed; the worker stops (what was logged is written at restart)")

    def _receive_until(self, subscriber: FirehoseSubscriber, stop: threading.Event) -> None:
        ingest = self.ingestor.ingest if self.journal is None else self.journal.append
        wait_for_room = self.ingestor.wait_for_room if self.journal is None else self.journal.wait_for_room
        while not stop.is_set():
            if not wait_for_room(_POLL_MS / 1000):
                self.watch.paused()  # the flusher is behind: leave messages to ZeroMQ's HWM
                continue
            got = False
            for frames in subscriber.receive(_POLL_MS):
                ingest(frames)
                got = True
            if got:
                self._quiet_since = time.monotonic()
                if self.journal is not None:
                    self.journal.received()

    def _drain(self, stop_receiving: threading.Event) -> None:
        """Keep receiving until the firehose has been quiet for drain_timeout_s."""
        quiet_for = self.worker.drain_timeout_s
        deadline = time.monotonic() + max(10 * quiet_for, 5.0)
        while time.monotonic() - self._quiet_since < quiet_for and time.monotonic() < deadline:
            time.sleep(min(0.05, quiet_for))
        stop_receiving.set()

    def flush(self) -> None:
        """Write what arrived since the last flush, and retry earlier failures first."""
        self.watch.tick()
        if self.journal is not None:
            self.journal.flush()
            self.watch.settled(0 if self.journal.caught_up() else 1)
            return
        self._retry_pending(final=False)
        batch = self.ingestor.take()
        self.watch.took(batch)
        if batch.messages.height or batch.rejections.height:
            self._flush_no += 1
            pending = PendingFlush(f"{self.run_id}-{self._flush_no}", compute(batch), batch.records)
            if self._pending or not self._write(pending):
                self._keep(pending)
        self.watch.settled(len(self._pending))

    def _write(self, pending: PendingFlush) -> bool:
        pending.attempts += 1
        started = time.perf_counter()
        try:
            rows = self.sink.write(pending.partials, pending.token)
        except SinkRejectedError as exc:
            self.watch.failed(exc)
            log.error(
                "flush refused by ClickHouse, dropped token=%s records=%d error=%s",
                pending.token,
                pending.records,
                exc,
            )
            return True
        except SinkError as exc:
            self.watch.failed(exc)
            log.warning(
                "flush failed, will retry token=%s attempt=%d error=%s", pending.token, pending.attempts, exc
            )
            return False
        self.watch.wrote(time.perf_counter() - started, rows)
        self.summary.flushes += 1
        self.summary.rows_written += rows
        self.summary.records_written += pending.records
        log.debug(
            "flushed token=%s rows=%d records=%d seconds=%.3f",
            pending.token,
            rows,
            pending.records,
            time.perf_counter() - started,
        )
        return True

    def _keep(self, pending: PendingFlush) -> None:
        self._pending.append(pending)
        while len(self._pending) > self.worker.max_pending_flushes:
            dropped = self._pending.popleft()
            log.error(
                "pending flushes over limit, dropped token=%s records=%d", dropped.token, dropped.records
            )

    def _retry_pending(self, *, final: bool) -> None:
        attempts = 3 if final else 1
        for _ in range(attempts):
            while self._pending and self._write(self._pending[0]):
                self._pending.popleft()
            if not self._pending:
                return
            if final:
                time.sleep(1.0)

    def _summarise(self) -> RunSummary:
        stats = self.ingestor.stats
        self.summary.messages = stats.messages
        self.summary.records = stats.records
        self.summary.lost = stats.lost
        self.summary.rejected = dict(stats.rejected)
        self.summary.unwritten_flushes = len(self._pending)
        if self.journal is not None:
            self.journal.summarise(self.summary)
        return self.summary
