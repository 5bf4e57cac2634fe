"""The Faust worker's metrics: a faust Sensor feeding the families in pipelines.observe.metrics.

Faust calls the sensor on its event loop for every record the agent's stream
receives, every offset commit and every rebalance; the sensor only counts.
What was written to ClickHouse comes from the runner's status at scrape time.
Health: unhealthy while flush retries rise and no flush lands (ClickHouse
unreachable or refusing), for longer than --healthy-flush-age-s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from faust.sensors import Sensor

from pipelines.observe.metrics import Readings
from pipelines.observe.service import ServiceWatch


class WorkerSensor(Sensor):
    """Counts what the consumer does; thread-safe reads for the metrics endpoint."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consumed = 0
        self.commits = 0
        self.rebalances = 0

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.consumed += 1

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        self.commits += 1

    def on_rebalance_start(self, app: Any) -> dict[Any, Any]:
        self.rebalances += 1
        state: dict[Any, Any] = super().on_rebalance_start(app)
        return state


class WorkerHealth:
    """Flushes keep landing, or none is waiting: the age since that was last seen true."""

    def __init__(self, written: Callable[[], Mapping[str, Any]], healthy_flush_age_s: float) -> None:
        self.written = written
        self.limit_s = healthy_flush_age_s
        self._seen = (0, 0)
        self._ok_at = time.monotonic()
        self._lock = threading.Lock()

    def age_s(self) -> float:
        with self._lock:
            written = self.written()
            seen = (int(written.get("flushes", 0)), int(written.get("retries", 0)))
            if seen[0] != self._seen[0] or seen[1] == self._seen[1]:
                self._ok_at = time.monotonic()
            self._seen = seen
            return time.monotonic() - self._ok_at

    def __call__(self) -> tuple[bool, str]:
        age = self.age_s()
        if age <= self.limit_s:
            return True, f"ok: no flush waiting on a retry for longer than {age:.1f}s"
        return False, f"unhealthy: flushes retried without landing for {age:.1f}s"


def worker_watch(
    sensor: WorkerSensor, status: Callable[[], Mapping[str, Any]], limit_s: float
) -> ServiceWatch:
    """The watch of a Faust worker: the sensor's counts and the runner's written totals."""

    def current() -> Mapping[str, Any]:
        for _ in range(3):
            try:
                return status()
            except RuntimeError:  # the event loop changed the partitions while they were listed
                continue
        return {}

    def written() -> Mapping[str, Any]:
        value = current().get("written", {})
        return value if isinstance(value, Mapping) else {}

    health = WorkerHealth(written, limit_s)

    def readings() -> Readings:
        done = written()
        partitions = current().get("partitions", {})
        return {
            "consumed": sensor.consumed,
            "commits": sensor.commits,
            "rebalances": sensor.rebalances,
            "assigned": len(partitions) if isinstance(partitions, Mapping) else 0,
            "messages": float(done.get("messages", 0)),
            "records": float(done.get("records", 0)),
            "flushes": {
                "written": float(done.get("flushes", 0)),
                "retry": float(done.get("retries", 0)),
                "dropped": float(done.get("dropped", 0)),
            },
            "rows": float(done.get("rows", 0)),
            "last_ok_age_s": health.age_s(),
        }

    return ServiceWatch("worker", readings, health)
