"""Appending to the write-ahead log on its own thread, so that the receiver only receives.

Logging a message costs a checksum over its bytes, a write and, per policy,
an fsync: tens of microseconds for a 100-record message, the write and the
fsync outside the GIL. Done by the receiver, that time is added to every
message; on a thread of its own, the receiver goes back to its sockets at
once. The receiver hands over batches of (frames, receive time) through a
bounded queue (pipelines.wal.handoff).

The appender thread is the writer's only appending thread: it calls
append() and commit(), so the writer's tap runs on it.
"""

from __future__ import annotations

import time
from typing import Final

from pipelines.wal.handoff import Handoff
from pipelines.wal.writer import WalWriter

BATCH_MESSAGES: Final = 64
QUEUE_BATCHES: Final = 16

# (messages, their receive times)
_Batch = tuple[list[list[bytes]], list[int]]


class BackgroundAppender:
    def __init__(
        self, writer: WalWriter, *, batch_messages: int = BATCH_MESSAGES, queue_batches: int = QUEUE_BATCHES
    ) -> None:
        self.writer = writer
        self.batch_messages = batch_messages
        self._messages: list[list[bytes]] = []
        self._received: list[int] = []
        self._stage = Handoff("tykpulse-wal-append", self._append, max_items=queue_batches)

    def start(self) -> None:
        self._stage.start()

    @property
    def queued_batches(self) -> int:
        """Handed over and not yet in the log (the batch being filled not counted)."""
        return self._stage.queued

    def add(self, frames: list[bytes]) -> None:
        """Receiver thread: one received message, stamped now."""
        self._messages.append(frames)
        self._received.append(time.time_ns())
        if len(self._messages) >= self.batch_messages:
            self.hand_over()

    def hand_over(self) -> None:
        """Receiver thread: queue what was added so far; waits while the appender is behind."""
        if self._messages:
            batch = self._messages, self._received
            self._messages, self._received = [], []
            self._stage.put(batch)

    def wait_idle(self) -> None:
        """Hand over and wait until everything added is in the log (in the OS)."""
        self.hand_over()
        self._stage.wait_idle()

    def stop(self) -> None:
        """Log what is queued, then end the thread."""
        self.hand_over()
        self._stage.stop()

    def _append(self, batch: _Batch) -> None:
        self.writer.append_many(*batch)
        self.writer.commit()
