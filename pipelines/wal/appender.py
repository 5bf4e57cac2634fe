"""Appending to the write-ahead log on its own thread, so that the receiver only receives.

Logging a message costs a checksum over its bytes, a write and, per policy,
an fsync: tens of microseconds for a 100-record message, all of it outside
the GIL. Done by the receiver, that time is added to every message; on a
thread of its own it runs beside the receiver's and the flusher's Python
work. The receiver hands over batches of (frames, receive time); the queue
between them is bounded, so when the log falls behind the receiver waits,
ZeroMQ queues up to its high-water mark and the publisher is pushed back,
exactly as when the receiver itself is slow.

The appender thread is the writer's only appending thread: it calls
append() and commit(), so the writer's tap (decoding as logged) runs here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Final

from pipelines.errors import PipelineError
from pipelines.wal.writer import WalWriter

log = logging.getLogger(__name__)

BATCH_MESSAGES: Final = 64
QUEUE_BATCHES: Final = 16
_PUT_WAIT_S: Final = 0.5

_Batch = list[tuple[list[bytes], int]]


class AppenderStoppedError(PipelineError):
    """The appender thread died: messages can no longer be logged."""


class BackgroundAppender:
    def __init__(
        self, writer: WalWriter, *, batch_messages: int = BATCH_MESSAGES, queue_batches: int = QUEUE_BATCHES
    ) -> None:
        self.writer = writer
        self.batch_messages = batch_messages
        self._batch: _Batch = []
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=queue_batches)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        # One writer each (the receiver, the appender thread), so neither update races.
        self._handed_over = 0
        self._appended = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tykpulse-wal-append", daemon=True)
        self._thread.start()

    # -- the receiver's side --------------------------------------------------------------------

    def add(self, frames: list[bytes]) -> None:
        """One received message, stamped now."""
        self._batch.append((frames, time.time_ns()))
        if len(self._batch) >= self.batch_messages:
            self.hand_over()

    def hand_over(self) -> None:
        """Queue what was added so far (the receiver drained its sockets); waits while the queue is full."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        self._handed_over += len(batch)
        while True:
            self._check_alive()
            try:
                self._queue.put(batch, timeout=_PUT_WAIT_S)
            except queue.Full:
                continue
            return

    def wait_idle(self) -> None:
        """Hand over and wait until everything added is in the log (in the OS)."""
        self.hand_over()
        while self.queued_messages:
            self._check_alive()
            time.sleep(0.002)

    @property
    def queued_messages(self) -> int:
        """Handed over and not yet appended."""
        return self._handed_over - self._appended

    def stop(self) -> None:
        """Append what is queued, then end the thread."""
        if self._thread is None:
            return
        if self._failure is None:
            self.wait_idle()
            self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _check_alive(self) -> None:
        if self._failure is not None or (self._thread is not None and not self._thread.is_alive()):
            msg = f"the WAL appender thread stopped: {self._failure!r}"
            raise AppenderStoppedError(msg)

    # -- the appender thread --------------------------------------------------------------------

    def _run(self) -> None:
        writer = self.writer
        try:
            while (batch := self._queue.get()) is not None:
                for frames, received_ns in batch:
                    writer.append(frames, received_ns)
                writer.commit()
                self._appended += len(batch)
        except BaseException as exc:
            self._failure = exc
            log.exception("the WAL appender thread failed; the worker cannot log messages")
            raise
