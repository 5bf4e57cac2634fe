"""What the served database did: queries by role and outcome, refusals by HTTP status, rows written.

Counted by the request handlers (many threads) and read at scrape time by
`db serve`'s /metrics and /status (pipelines.observe.metrics, "db serve").
Refusals are counted by HTTP status only: the reason text of a refused
request is the client's SQL or headers, which no metric label may carry.
"""

from __future__ import annotations

import collections
import threading

from sinks.clickhouse.serve.handles import Role


class ServeStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queries: collections.Counter[str] = collections.Counter()
        self._errors: collections.Counter[str] = collections.Counter()
        self._cancelled = 0
        self._abandoned = 0
        self._rows_written = 0

    def answered(self, role: Role, rows_written: int) -> None:
        """A query of `role` ran and its result was sent."""
        with self._lock:
            self._queries[f"{role.value}/ok"] += 1
            self._rows_written += rows_written

    def refused(self, status: int, role: Role | None) -> None:
        """An error answer; `role` is None when the request failed before its credentials were checked."""
        with self._lock:
            self._errors[str(status)] += 1
            if role is not None:
                self._queries[f"{role.value}/error"] += 1

    def cancelled(self) -> None:
        """A reader's query not run, or cancelled in the engine, because its client went away."""
        with self._lock:
            self._cancelled += 1

    def abandoned(self) -> None:
        """An answer not delivered whole: its client closed, reset, or stopped reading."""
        with self._lock:
            self._abandoned += 1

    def readings(self) -> dict[str, float | dict[str, float]]:
        with self._lock:
            return {
                "queries": {key: float(count) for key, count in self._queries.items()},
                "errors": {key: float(count) for key, count in self._errors.items()},
                "cancelled": float(self._cancelled),
                "abandoned": float(self._abandoned),
                "rows_written": float(self._rows_written),
            }
