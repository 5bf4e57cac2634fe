"""ServiceWatch: the metrics, /healthz and /status of a long-running command other than `run`.

A command hands it a `readings` function (its running counters, read only at
scrape time, so observing costs the hot path nothing) and optionally a health
check; the metric names are in pipelines.observe.metrics, one family table per
command. `Progress` is the health check of a command that succeeds and fails
at something over and over (produce to Kafka, drain Redis, write to ClickHouse):
unhealthy from the moment failures were seen to rise until a success is seen.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from importlib.metadata import version
from typing import Any

from prometheus_client import CollectorRegistry

from pipelines.observe.metrics import Readings, service_registry

Health = Callable[[], tuple[bool, str]]


def running() -> tuple[bool, str]:
    return True, "ok: running"


class ServiceWatch:
    def __init__(
        self,
        command: str,
        readings: Callable[[], Readings],
        health: Health = running,
        state: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self.command = command
        self.readings = readings
        self._health = health
        self._state = state
        self._started = time.monotonic()
        self.registry: CollectorRegistry = service_registry(
            command, version("tykpulse"), readings, lambda: self.health()[0]
        )

    def health(self) -> tuple[bool, str]:
        return self._health()

    def status(self) -> dict[str, Any]:
        """What `tykpulse status` prints: health, uptime, every counter as JSON-able values, and the
        command's state where it has one (a Faust worker's partitions and offsets)."""
        healthy, detail = self.health()
        status = {
            "command": self.command,
            "pid": os.getpid(),
            "healthy": healthy,
            "detail": detail,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "totals": {key: _plain(value) for key, value in self.readings().items()},
        }
        if self._state is not None:
            status["state"] = dict(self._state())
        return status


def _plain(value: float | Mapping[str, float]) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


class Progress:
    """Health from two running totals: unhealthy while the last change seen was a failure, and,
    for work that runs on a clock whatever the data (`changes_within_s`), while neither has
    moved for that long: a loop stuck in a call (a query or a POST held open) fails nothing."""

    def __init__(
        self,
        what: str,
        successes: Callable[[], float],
        failures: Callable[[], float],
        *,
        changes_within_s: float | None = None,
    ) -> None:
        self.what = what
        self.successes = successes
        self.failures = failures
        self.changes_within_s = changes_within_s
        self._last = (successes(), failures())
        self._failing_since: float | None = None
        self._changed_at = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            now = time.monotonic()
            good, bad = self.successes(), self.failures()
            if good != self._last[0]:
                self._failing_since = None
            elif bad != self._last[1] and self._failing_since is None:
                self._failing_since = now
            if (good, bad) != self._last:
                self._changed_at = now
            self._last = (good, bad)
            still = now - self._changed_at
            if self.changes_within_s is not None and still > self.changes_within_s:
                return False, (
                    f"unhealthy: no {self.what} for {still:.1f}s "
                    f"(expected within {self.changes_within_s:.0f}s; failures {bad:.0f})"
                )
            if self._failing_since is None:
                return True, f"ok: {self.what} {good:.0f}, failures {bad:.0f}"
            age = now - self._failing_since
            return False, f"unhealthy: {self.what} failing for {age:.1f}s (failures {bad:.0f})"
