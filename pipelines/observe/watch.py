"""WorkerWatch: what a runner reports as it flushes, and what metrics, /healthz and status read.

A runner calls tick() on every flush tick (publisher staleness is decided
there when no batch was taken since the last tick, so even when nothing
arrives) and took() with every batch (decided there, with what it held), wrote() or
failed() per sink write and settled() at the end of every tick. The watch
owns the publisher liveness tracker and the Prometheus metrics; it never
touches the hot receive path (it reads the Ingestor's running totals).

Health: a worker is healthy while everything it had received some moment
within the last `healthy_flush_age_s` is written (an idle firehose is healthy,
so is a busy one that keeps up; a sink that keeps failing, or flushes that fall
behind, are not).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, Final

from prometheus_client import CollectorRegistry

from pipelines.firehose.liveness import PublisherLiveness, PublisherState
from pipelines.ingest import Ingestor
from pipelines.observe.metrics import WorkerMetrics, add_common
from pipelines.windows.batch import Batch
from sinks.errors import SinkError, SinkRejectedError

log = logging.getLogger(__name__)

DEFAULT_HEALTHY_FLUSH_AGE_S: Final = 30.0


class WorkerWatch:
    def __init__(
        self,
        ingestor: Ingestor,
        *,
        liveness: PublisherLiveness | None = None,
        healthy_flush_age_s: float = DEFAULT_HEALTHY_FLUSH_AGE_S,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.ingestor = ingestor
        self.clock = clock
        self.liveness = liveness or PublisherLiveness(clock=clock, on_forget=ingestor.sequences.forget)
        self.healthy_flush_age_s = healthy_flush_age_s
        # Set by the runner when a write-ahead log is in use (DurableFlusher.readings).
        self.wal_readings: Callable[[], dict[str, float]] | None = None
        self.metrics = WorkerMetrics(self)
        add_common(self.metrics.registry, "run", version("tykpulse"), lambda: self.health()[0])
        self.receiver_paused = 0
        self.pending_flushes = 0
        self.last_write: dict[str, Any] = {}
        self._started = time.monotonic()
        self._last_ok = time.monotonic()
        self._lock = threading.Lock()
        self._took_since_tick = False

    # ------------------------------------------------------------------ runner side
    def tick(self) -> None:
        """A flush tick: judge publishers' silence now, unless a batch was taken since the last
        tick (took() judged it then). Between two takes, messages received are not yet known here:
        judged now, a flush slower than a publisher's stale limit (three heartbeat intervals)
        made publishers that kept talking stale, then live again at the next take."""
        with self._lock:
            if self._took_since_tick:
                self._took_since_tick = False
                return
            self.liveness.check()

    def took(self, batch: Batch) -> None:
        """A batch taken: what it holds is what was heard until now, so silence is judged now."""
        with self._lock:
            self.liveness.update(batch)
            self.liveness.check()
            self._took_since_tick = True

    def paused(self) -> None:
        self.receiver_paused += 1

    def wrote(self, seconds: float, rows: int) -> None:
        self.metrics.flush_seconds.observe(seconds)
        self.metrics.flushes.labels("written").inc()
        self.metrics.rows_written.inc(rows)
        self.last_write = {"at": time.time(), "ok": True, "seconds": round(seconds, 4), "rows": rows}

    def failed(self, error: SinkError) -> None:
        rejected = isinstance(error, SinkRejectedError)
        self.metrics.sink_errors.labels("rejected" if rejected else "unavailable").inc()
        self.metrics.flushes.labels("dropped" if rejected else "retry").inc()
        self.last_write = {"at": time.time(), "ok": False, "error": str(error)[:300]}

    def settled(self, pending_flushes: int, caught_up_to: float | None = None) -> None:
        """End of a flush tick: how many flushes are still unwritten, and the monotonic time up to
        which everything received is written (None if the tick did not get that far).

        Health is the age of the latter. A steady firehose always has something unwritten at the
        end of a tick (what arrived during it): waiting for nothing to be unwritten made a worker
        that kept up fine at 5,000 records/s report unhealthy after 30 s.
        """
        self.pending_flushes = pending_flushes
        if pending_flushes == 0:
            self._last_ok = time.monotonic()
        elif caught_up_to is not None:
            self._last_ok = max(self._last_ok, caught_up_to)

    # ------------------------------------------------------------------ reader side
    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    def totals(self) -> dict[str, int]:
        stats = self.ingestor.stats
        return {
            "messages": stats.messages,
            "records": stats.records,
            "lost": stats.lost,
            "duplicates": stats.duplicates,
            "receiver_paused": self.receiver_paused,
            "queue_depth": self.ingestor.pending_records,
            "queue_capacity": self.ingestor.max_pending_records,
            "pending_flushes": self.pending_flushes,
        }

    def wal(self) -> dict[str, float]:
        return self.wal_readings() if self.wal_readings is not None else {}

    def rejected(self) -> dict[str, int]:
        return dict(self.ingestor.stats.rejected)

    def publisher_states(self) -> list[PublisherState]:
        with self._lock:
            return self.liveness.publishers()

    def now_ns(self) -> int:
        return self.clock()

    def last_ok_age_s(self) -> float:
        return time.monotonic() - self._last_ok

    def health(self) -> tuple[bool, str]:
        age = self.last_ok_age_s()
        if age <= self.healthy_flush_age_s:
            return True, f"ok: everything written {age:.1f}s ago"
        return False, f"unhealthy: flushes unwritten for {age:.1f}s (limit {self.healthy_flush_age_s:.0f}s)"

    def status(self) -> dict[str, Any]:
        """Everything `tykpulse status` prints, as plain JSON-able values."""
        now = self.clock()
        healthy, detail = self.health()
        return {
            "command": "run",
            "pid": os.getpid(),
            "healthy": healthy,
            "detail": detail,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "totals": self.totals(),
            "rejected": self.rejected(),
            "last_write": self.last_write,
            "wal": self.wal(),
            "publishers": [
                {
                    "node": s.node,
                    "boot": s.boot,
                    "state": s.state,
                    "last_seen_age_s": round(s.silent_ns(now) / 1e9, 3),
                    "interval_ms": s.interval_ms,
                    "messages": s.messages,
                    "lost": s.lost,
                }
                for s in self.publisher_states()
            ],
        }
