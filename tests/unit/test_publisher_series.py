"""The per-incarnation age series a worker exports are bounded, whatever names its senders make up."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from pipelines.firehose.liveness import PublisherState
from pipelines.observe.metrics import MAX_PUBLISHER_SERIES, WorkerMetrics
from tests.conftest import T0_NS

pytestmark = pytest.mark.unit


class Readings:
    def __init__(self, states: list[PublisherState]) -> None:
        self.states = states

    def totals(self) -> dict[str, int]:
        return {}

    def rejected(self) -> dict[str, int]:
        return {}

    def publisher_states(self) -> list[PublisherState]:
        return self.states

    def now_ns(self) -> int:
        return T0_NS + 10**9

    def last_ok_age_s(self) -> float:
        return 0.0

    def wal(self) -> dict[str, float]:
        return {}


def test_a_flood_of_made_up_names_keeps_the_publishers_that_talk_and_counts_the_rest() -> None:
    # Found by review: 20,000 made-up identities left 10,000 series (the worker's bound) in one scrape,
    # each new name a new series in Prometheus.
    made_up = [PublisherState(f"made-up-{i}", i, T0_NS, T0_NS, messages=1) for i in range(1500)]
    real = [PublisherState(f"gw{i}", 7, T0_NS, T0_NS, messages=5000) for i in range(3)]
    text = generate_latest(WorkerMetrics(Readings(made_up + real)).registry).decode()
    series = [
        line for line in text.splitlines() if line.startswith("tykpulse_publisher_last_seen_age_seconds{")
    ]
    assert len(series) == MAX_PUBLISHER_SERIES
    assert all(any(f'node="gw{i}"' in line for line in series) for i in range(3))
    assert f"tykpulse_publisher_series_omitted {1503 - MAX_PUBLISHER_SERIES}.0" in text
