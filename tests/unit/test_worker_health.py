"""The Faust worker's /healthz: a flush that does not land while work waits for it fails it."""

from __future__ import annotations

import time

import pytest

from pipelines.observe.faust_sensor import WorkerHealth

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(time, "monotonic", fake)  # faust_sensor reads time.monotonic at each call
    return fake


def test_records_consumed_without_a_flush_landing_fail_it_and_an_idle_worker_passes(clock: Clock) -> None:
    # Found by attack on a real broker: an agent crashing on one record at every restart kept
    # consuming the records before it again and landed nothing, while /healthz answered 200.
    written = {"flushes": 3, "retries": 0}
    consumed = [100]
    health = WorkerHealth(lambda: written, 30.0, lambda: consumed[0])
    assert health()[0]
    for _ in range(4):  # busy for 40 s, nothing lands
        clock.now += 10
        consumed[0] += 50
        health()
    ok, detail = health()
    assert not ok
    assert "consumed" in detail
    assert not health()[0], "a second look right after must not make it healthy again"
    written["flushes"] = 4  # one lands: healthy again
    clock.now += 1
    assert health()[0]
    clock.now += 100  # idle: nothing consumed, nothing retried
    assert health()[0]


def test_retries_without_a_flush_landing_still_fail_it(clock: Clock) -> None:
    written = {"flushes": 1, "retries": 0}
    health = WorkerHealth(lambda: written, 30.0, lambda: 7)
    assert health()[0]
    for retries in range(1, 5):
        clock.now += 10
        written["retries"] = retries
        health()
    assert not health()[0]
