"""A thread fed through a bounded queue: a stage of the durable receive path.

The receiver takes messages off the sockets and hands them to the appender
stage, which logs them (and, while the flusher keeps up, decodes them). The
queue between them is bounded, so a slow stage makes the receiver wait, and
ZeroMQ pushes back on the publisher, as when the receiver itself is slow. A
stage whose thread died makes every later put() raise, never hang.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from pipelines.errors import PipelineError
from pipelines.observe.thread_names import name_os_thread

log = logging.getLogger(__name__)

T = TypeVar("T")

_PUT_WAIT_S: Final = 0.5
_IDLE_POLL_S: Final = 0.002


class StageStoppedError(PipelineError):
    """A stage's thread died: what is handed to it can no longer be processed."""


class Handoff(Generic[T]):
    """Items put by one thread are handled, in order, by this stage's own thread."""

    def __init__(self, name: str, handle: Callable[[T], None], *, max_items: int = 16) -> None:
        self.name = name
        self.handle = handle
        self._queue: queue.Queue[T | None] = queue.Queue(maxsize=max_items)
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None
        # One writer each (the putting thread, this stage's thread), so neither update races.
        self._put = 0
        self._done = 0

    @property
    def queued(self) -> int:
        """Items put and not yet handled."""
        return self._put - self._done

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        """Queue an item; waits while the queue is full (the stage is behind)."""
        self._put += 1
        while True:
            self._check_alive()
            try:
                self._queue.put(item, timeout=_PUT_WAIT_S)
            except queue.Full:
                continue
            return

    def wait_idle(self) -> None:
        """Wait until every item put so far is handled."""
        while self.queued:
            self._check_alive()
            time.sleep(_IDLE_POLL_S)

    def stop(self) -> None:
        """Handle what is queued, then end the thread."""
        if self._thread is None:
            return
        if self._failure is None and self._thread.is_alive():
            self.wait_idle()
            self._queue.put(None)
        self._thread.join()
        self._thread = None

    def _check_alive(self) -> None:
        if self._failure is not None or (self._thread is not None and not self._thread.is_alive()):
            msg = f"the {self.name} thread stopped: {self._failure!r}"
            raise StageStoppedError(msg)

    def _run(self) -> None:
        name_os_thread()
        try:
            while (item := self._queue.get()) is not None:
                self.handle(item)
                self._done += 1
        except Exception as exc:  # reported to every later put(): the receive loop stops loudly
            self._failure = exc
            log.exception("the %s thread failed; the worker cannot go on receiving", self.name)
