"""The stage between the receiver and the log: order, back-pressure, and a dead stage never hangs."""

from __future__ import annotations

import threading
import time

import pytest

from pipelines.wal.handoff import Handoff, StageStoppedError

pytestmark = pytest.mark.unit


def test_items_are_handled_in_order_and_idle_means_all_handled() -> None:
    handled: list[int] = []
    stage: Handoff[int] = Handoff("test-stage", handled.append, max_items=4)
    stage.start()
    for i in range(1000):
        stage.put(i)
    stage.wait_idle()
    assert handled == list(range(1000))
    assert stage.queued == 0
    stage.stop()


def test_a_full_queue_makes_the_putter_wait() -> None:
    release = threading.Event()

    def wait_for_release(_: int) -> None:
        release.wait()

    stage: Handoff[int] = Handoff("test-stage", wait_for_release, max_items=2)
    stage.start()
    done = threading.Event()

    def put_many() -> None:
        for i in range(5):
            stage.put(i)
        done.set()

    putter = threading.Thread(target=put_many)
    putter.start()
    assert not done.wait(0.3), "1 item in hand + 2 queued: the 4th put must wait"
    assert stage.queued >= 3
    release.set()
    assert done.wait(5)
    putter.join()
    stage.stop()


def put_all(stage: Handoff[int], count: int) -> None:
    for i in range(count):
        stage.put(i)


def test_a_stage_that_died_raises_instead_of_hanging() -> None:
    def fail(item: int) -> None:
        if item == 3:
            msg = "boom"
            raise RuntimeError(msg)

    stage: Handoff[int] = Handoff("test-stage", fail, max_items=1)
    stage.start()
    started = time.monotonic()
    with pytest.raises(StageStoppedError, match="boom"):
        put_all(stage, 100)
    with pytest.raises(StageStoppedError):
        stage.wait_idle()
    assert time.monotonic() - started < 5
    stage.stop()
