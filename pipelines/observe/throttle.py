"""Rate-limited logging: a sample per kind of problem, never a line per message.

A flood of bad input or a burst of loss must not turn into a flood of log
lines (which would cost more than the messages themselves). LogThrottle lets
one line per key through every `period_s` and counts what it held back, so
the next line can say how many similar events were not logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Final

DEFAULT_PERIOD_S: Final = 10.0
_MAX_KEYS: Final = 1_024


class LogThrottle:
    """Decides which events of a kind are logged; thread-safe, bounded in memory."""

    def __init__(
        self, period_s: float = DEFAULT_PERIOD_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.period_s = period_s
        self.clock = clock
        self._next: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: Hashable) -> int | None:
        """None when this event should not be logged; else how many of its kind were held back."""
        now = self.clock()
        with self._lock:
            if now < self._next.get(key, -1.0):
                self._held[key] = self._held.get(key, 0) + 1
                return None
            if len(self._next) >= _MAX_KEYS:
                self._next.clear()
                self._held.clear()
            self._next[key] = now + self.period_s
            return self._held.pop(key, 0)
