"""A budget of bytes that readers' requests may hold in memory at once (bodies, decoded bodies, results).

Without it, ten gzip POSTs of 260 KB each (250 MiB once inflated) took the
process from 0.4 to 3.2 GB, and results held while written to clients that do
not read took it to 4.6 GB. A reader's request reserves what it may hold
before its body is read (the body as sent, plus `serve_max_decompressed_mb`
when it is compressed), waits while the budget is full, then keeps a
reservation the size of what it actually holds: its decoded body, then its
result while it is written. A result that does not fit is refused at once
(503, TOO_MANY_SIMULTANEOUS_QUERIES) rather than held. A reservation larger
than the whole budget is let through when nothing else is in flight, so one
request at the size limits always can run. Writers never touch it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

POLL_S: Final = 0.1


class Reservation:
    def __init__(self, budget: ByteBudget, size: int) -> None:
        self._budget = budget
        self.size = size

    def resize(self, size: int, *, refused: int | None = None) -> bool:
        """Hold `size` bytes from now (no waiting); False when growing does not fit, then holding as
        before, or `refused` bytes when given (in the same step, so no one else is refused meanwhile)."""
        return self._budget._resize(self, size, refused)

    def release(self) -> None:
        self._budget._resize(self, 0)


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._cond = threading.Condition()
        self._in_flight = 0
        self._peak = 0
        self._refused = 0

    def _fits(self, more: int) -> bool:
        return self._in_flight == 0 or self._in_flight + more <= self.limit

    def reserve(
        self, size: int, timeout_s: float, *, abandoned: Callable[[], bool] = lambda: False
    ) -> Reservation | None:
        """Wait up to `timeout_s` for `size` bytes; None (counted as refused) when they never fit.

        `abandoned()` is looked at every POLL_S while waiting: True stops the wait (the client is gone).
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._fits(size):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or abandoned():
                    self._refused += 1
                    return None
                self._cond.wait(min(remaining, POLL_S))
            self._take_locked(size)
        return Reservation(self, size)

    def _take_locked(self, size: int) -> None:
        self._in_flight += size
        self._peak = max(self._peak, self._in_flight)

    def _resize(self, reservation: Reservation, size: int, refused: int | None = None) -> bool:
        with self._cond:
            more = size - reservation.size
            fits = more <= 0 or self._in_flight - reservation.size == 0 or self._fits(more)
            if not fits:
                self._refused += 1
                if refused is None:
                    return False
                size, more = refused, refused - reservation.size
            self._in_flight += more
            self._peak = max(self._peak, self._in_flight)
            reservation.size = size
            if more < 0:
                self._cond.notify_all()
        return fits

    def readings(self) -> dict[str, float]:
        with self._cond:
            return {
                "in_flight_bytes": float(self._in_flight),
                "peak_bytes": float(self._peak),
                "limit_bytes": float(self.limit),
                "refused": float(self._refused),
            }
