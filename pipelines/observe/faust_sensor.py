"""The Faust worker's metrics: a faust Sensor feeding the families in pipelines.observe.metrics.

Faust calls the sensor on its event loop for every record the agent's stream
receives, every offset commit and every rebalance; the sensor only counts.
What was written to ClickHouse comes from the runner's status at scrape time.
Health: unhealthy while flush retries rise, or records are consumed, and no
flush lands, for longer than --healthy-flush-age-s: ClickHouse unreachable or
refusing, or an agent that keeps failing on what it consumed (it is restarted
and reads the same records again, so the consumer stays busy and nothing lands).
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
    """Flushes keep landing, or nothing waits for one: the age since that was last seen true.

    Waiting means a flush retried or records consumed since the last look; a worker that
    consumes nothing and retries nothing is idle, and healthy.
    """

    def __init__(
        self,
        written: Callable[[], Mapping[str, Any]],
        healthy_flush_age_s: float,
        consumed: Callable[[], int] = lambda: 0,
    ) -> None:
        self.written = written
        self.consumed = consumed
        self.limit_s = healthy_flush_age_s
        self._flushes = 0
        # (retries, consumed) when a flush last landed or the worker was last seen idle: work
        # since then waits for a flush. Not the previous look's: two looks in a row (a scrape
        # and a probe) saw nothing new in between and made a stuck worker healthy again.
        self._baseline = (0, 0)
        self._ok_at = time.monotonic()
        self._lock = threading.Lock()

    def age_s(self) -> float:
        with self._lock:
            written = self.written()
            flushes = int(written.get("flushes", 0))
            work = (int(written.get("retries", 0)), self.consumed())
            if flushes != self._flushes or work == self._baseline:
                self._flushes, self._baseline = flushes, work
                self._ok_at = time.monotonic()
            return time.monotonic() - self._ok_at

    def __call__(self) -> tuple[bool, str]:
        age = self.age_s()
        if age <= self.limit_s:
            return True, f"ok: nothing waiting for a flush for longer than {age:.1f}s"
        return False, f"unhealthy: records consumed or flushes retried without a flush landing for {age:.1f}s"


def observe_worker(app: Any, limit_s: float) -> ServiceWatch:
    """The watch of an app create_app built: a sensor added to it, and its runner's status."""
    sensor = WorkerSensor()
    app.sensors.add(sensor)
    return worker_watch(sensor, app.tykpulse_runner.status, limit_s)


def worker_watch(
    sensor: WorkerSensor, status: Callable[[], Mapping[str, Any]], limit_s: float
) -> ServiceWatch:
    """The watch of a Faust worker: the sensor's counts and the runner's written totals; its
    /status state is the runner's status (owner, topic, partitions and their offsets, written)."""

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

    health = WorkerHealth(written, limit_s, lambda: sensor.consumed)

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

    return ServiceWatch("worker", readings, health, current)
