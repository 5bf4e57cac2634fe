"""The local runner: ZeroMQ firehose -> journal -> rollups -> ClickHouse, on one machine.

Two threads, so that receiving and flushing overlap: the receiver only takes
messages off the sockets and hands them to the journal; the flusher (the
caller's thread) asks the journal, on a fixed cadence, to flush what it holds.
Partial rollups merge in ClickHouse, so nothing is held back waiting for a
window to close. On shutdown the firehose is drained until quiet, then the
journal writes what it holds, for at most shutdown_timeout_s.

The journal decides the guarantee (pipelines.journal): the write-ahead log
(pipelines.wal, the default of `tykpulse run`) is exactly once through crashes
and ClickHouse outages; the in-memory one (`--no-wal`) loses what it holds in
a crash. Both deliver through pipelines.delivery; see docs/guarantees.md.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import zmq

from pipelines.delivery import Delivery
from pipelines.errors import PipelineError
from pipelines.firehose.subscriber import FirehoseSubscriber
from pipelines.ingest import Ingestor, build_ingestor
from pipelines.journal import Journal, RunSummary
from pipelines.memory_journal import MemoryJournal
from pipelines.observe.thread_names import name_os_thread
from pipelines.observe.watch import WorkerWatch
from pipelines.security.curve import CurveSession
from pipelines.settings import FirehoseSettings, WorkerSettings
from pipelines.wal.deadletter import DeadLetters
from sinks.clickhouse.sink import ClickHouseSink

__all__ = ["LocalRunner", "RunSummary", "build_ingestor"]

log = logging.getLogger(__name__)

_POLL_MS = 50


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
        """Without a journal, an in-memory one on `ingestor` (dead letters logged, not kept in a file)."""
        self.firehose = firehose
        self.worker = worker
        self.context = context or zmq.Context.instance()
        if journal is None:
            journal = MemoryJournal(
                ingestor or build_ingestor(firehose, worker),
                Delivery(sink, DeadLetters(None), keeper="kept in memory"),
                max_pending_flushes=worker.max_pending_flushes,
            )
        self.journal = journal
        self.ingestor = journal.ingestor
        self.watch = watch or WorkerWatch(self.ingestor)
        journal.report_to(self.watch)
        self.curve = curve
        self.shutdown_timeout_s = shutdown_timeout_s
        self._receiving = threading.Event()
        self._quiet_since = time.monotonic()
        self._receiver_failure: Exception | None = None
        self.summary = RunSummary()

    def run(self, stop: threading.Event) -> RunSummary:
        """Run until `stop` is set, then drain, flush and return what happened."""
        self.journal.open()
        subscriber = FirehoseSubscriber.from_settings(self.context, self.firehose, self.curve)
        log.info("worker subscribed endpoints=%s", subscriber.addresses)
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
            self.journal.finish(self.shutdown_timeout_s)
            self.flush()
        finally:
            stop_receiving.set()
            receiver.join(timeout=5)
            subscriber.close()
            self.journal.close()
        return self._summarise()

    def _receive(self, subscriber: FirehoseSubscriber, stop: threading.Event) -> None:
        name_os_thread()
        try:
            self._receive_until(subscriber, stop)
        except Exception as exc:
            self._receiver_failure = exc
            log.exception("the receiver failed; the worker stops (what was logged is written at restart)")

    def _receive_until(self, subscriber: FirehoseSubscriber, stop: threading.Event) -> None:
        journal = self.journal
        while not stop.is_set():
            if not journal.wait_for_room(_POLL_MS / 1000):
                self.watch.paused()  # the flusher is behind: leave messages to ZeroMQ's HWM
                continue
            got = False
            for frames in subscriber.receive(_POLL_MS):
                journal.append(frames)
                got = True
            if got:
                self._quiet_since = time.monotonic()
                journal.received()

    def _drain(self, stop_receiving: threading.Event) -> None:
        """Keep receiving until the firehose has been quiet for drain_timeout_s."""
        quiet_for = self.worker.drain_timeout_s
        deadline = time.monotonic() + max(10 * quiet_for, 5.0)
        while time.monotonic() - self._quiet_since < quiet_for and time.monotonic() < deadline:
            time.sleep(min(0.05, quiet_for))
        stop_receiving.set()

    def flush(self) -> None:
        """Write what the journal holds (earlier failures first)."""
        self.watch.tick()
        started = time.monotonic()
        caught_up = self.journal.flush()
        self.watch.settled(self.journal.unwritten_flushes(), caught_up_to=started if caught_up else None)

    def _summarise(self) -> RunSummary:
        stats = self.ingestor.stats
        self.summary.messages = stats.messages
        self.summary.records = stats.records
        self.summary.lost = stats.lost
        self.summary.rejected = dict(stats.rejected)
        self.journal.summarise(self.summary)
        return self.summary
