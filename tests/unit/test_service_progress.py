"""Health of a long-running command from its running totals (pipelines.observe.service.Progress)."""

from __future__ import annotations

import time

import pytest

from pipelines.observe.service import Progress

pytestmark = pytest.mark.unit


def test_unhealthy_while_the_last_change_was_a_failure_and_healthy_after_a_success() -> None:
    totals = {"ok": 0, "failed": 0}
    health = Progress("evaluations", lambda: totals["ok"], lambda: totals["failed"])
    assert health()[0]
    totals["failed"] += 1
    healthy, text = health()
    assert not healthy
    assert "failing" in text
    totals["ok"] += 1
    assert health()[0]


def test_totals_standing_still_past_their_bound_are_unhealthy() -> None:
    # `alerts run` held in one call (a query or a POST answered a byte at a time) failed nothing and
    # stayed healthy for as long as it was stuck, its rules unevaluated.
    totals = {"ok": 0, "failed": 0}
    health = Progress("evaluations", lambda: totals["ok"], lambda: totals["failed"], changes_within_s=0.2)
    assert health()[0]
    time.sleep(0.3)
    healthy, text = health()
    assert not healthy
    assert "no evaluations for" in text
    totals["ok"] += 1
    assert health()[0]


def test_without_a_bound_idle_totals_stay_healthy() -> None:
    # A bridge with nothing to carry moves no total and is not stuck.
    health = Progress("published", lambda: 0, lambda: 0)
    time.sleep(0.05)
    assert health()[0]
