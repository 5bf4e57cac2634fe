"""The analyst API against a worker-served database seeded by the simulator (with a storm)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from pipelines import analyst
from tests.harness.seeded import SeededDatabase

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(seeded_database: SeededDatabase) -> Iterator[Any]:
    c = analyst.connect(seeded_database.dsn)
    yield c
    c.close()


def truth_total(seeded: SeededDatabase, view: str, column: str) -> int:
    return sum(int(row[column]) for row in seeded.truth["views"][view])


def test_traffic_totals_equal_the_ground_truth(client: Any, seeded_database: SeededDatabase) -> None:
    frame = analyst.traffic(client, analyst.Scope())
    for column in ("requests", "status_4xx", "status_429", "status_5xx"):
        assert int(frame[column].sum()) == truth_total(seeded_database, "traffic_1m", column)
    assert frame["window_start"].nunique() > 100  # two hours of minutes


def test_the_simulated_storm_is_found_with_its_onset(client: Any, seeded_database: SeededDatabase) -> None:
    storm = seeded_database.storm
    found = analyst.storms(client, analyst.Scope())
    started = pd.Timestamp(storm["started_ns"], unit="ns").floor("min")
    ended = pd.Timestamp(storm["ended_ns"], unit="ns")
    report = f"storm {started}..{ended} on {storm['api_id']}, found:\n{found.to_string()}"
    assert found["api_id"].tolist() == [storm["api_id"]], report
    assert started <= found["onset"].iloc[0] <= started + pd.Timedelta(minutes=1), report
    assert found["end"].iloc[0] <= ended.ceil("min") + pd.Timedelta(minutes=1), report
    top = analyst.rate_limited_apis(client, analyst.Scope(), limit=3)
    assert top["api_id"].iloc[0] == storm["api_id"]
    assert top["limited_share"].iloc[0] > 0.5


def test_filters_narrow_every_answer(client: Any, seeded_database: SeededDatabase) -> None:
    storm = seeded_database.storm
    scope = analyst.Scope(api_id=storm["api_id"], grain="1h")
    frame = analyst.traffic(client, scope, by="api_id")
    assert set(frame["api_id"]) == {storm["api_id"]}
    expected = sum(
        r["requests"] for r in seeded_database.truth["views"]["traffic_1h"] if r["api_id"] == storm["api_id"]
    )
    assert int(frame["requests"].sum()) == expected
    start = pd.Timestamp(storm["started_ns"], unit="ns").floor("s").to_pydatetime()
    late = analyst.status_rates(client, analyst.Scope(start=start))
    assert late["window_start"].min() >= pd.Timestamp(start).floor("min")


def test_status_rates_tokens_changes_and_health_answer(client: Any, seeded_database: SeededDatabase) -> None:
    scope = analyst.Scope()
    rates = analyst.status_rates(client, scope)
    assert int(rates["quota_exceeded"].sum()) == sum(
        r["hits"]
        for r in seeded_database.truth["views"]["rate_limit_hits_1m"]
        if r["event_type"] == "QuotaExceeded"
    )
    assert rates["rate_429"].max() > 0.2  # the storm
    tokens = analyst.token_churn(client, scope)
    assert int(tokens["created"].sum()) == truth_total(seeded_database, "token_churn_1m", "created")
    # configuration changes only (Tyk reloads or rewrites config for these, fact sheet §4.3);
    # with housekeeping every notice the simulator sent
    frequency = analyst.change_frequency(client, scope)
    config = {"ApiUpdated", "ApiAdded", "ApiRemoved", "PolicyChanged", "GroupReload", "NoticeConfigUpdated"}
    notices = seeded_database.truth["views"]["config_changes_1m"]
    assert int(frequency["changes"].sum()) == sum(r["changes"] for r in notices if r["command"] in config)
    every = analyst.change_frequency(client, scope, housekeeping=True)
    assert int(every["changes"].sum()) == truth_total(seeded_database, "config_changes_1m", "changes")
    impact = analyst.change_impact(client, scope)
    assert len(impact) == analyst.config_changes(client, scope)["window_start"].nunique()
    assert {"before_rate_5xx", "after_rate_5xx", "delta_latency_p95_ms"} <= set(impact.columns)
    health = analyst.ingest_health(client, scope)
    simulated = health[health["node_id"].str.startswith("sim-")]
    assert int(simulated["lost_messages"].sum()) == 0
    sent = sum(p["messages"] for p in seeded_database.truth["publishers"].values())
    assert int(simulated["messages"].sum()) == sent
    assert health.groupby("node_id")["lost_messages"].sum().to_dict()["gappy"] == 2
    assert int(analyst.rejections(client, scope)["rejected"].sum()) >= 1


def test_the_bad_change_and_the_token_burst_stand_out(client: Any, seeded_database: SeededDatabase) -> None:
    scope = analyst.Scope()
    impact = analyst.change_impact(client, scope)
    started = pd.Timestamp(seeded_database.incident["started_ns"], unit="ns").floor("min")
    bad = impact.set_index("change_at").loc[started]
    assert "ApiUpdated" in bad["commands"]
    assert bad["after_rate_5xx"] > 0.1 > bad["before_rate_5xx"]
    # A routine change in the minute after the incident began sees almost the same
    # before/after split, so it may tie; every other change must stand well below.
    worst = impact.loc[impact["delta_rate_5xx"].idxmax()]
    assert worst["change_at"] - started in (pd.Timedelta(0), pd.Timedelta(minutes=1))
    assert bad["delta_rate_5xx"] >= 0.9 * worst["delta_rate_5xx"]
    elsewhere = impact[(impact["change_at"] - started).abs() > pd.Timedelta(minutes=5)]
    assert (elsewhere["delta_rate_5xx"] < 0.5 * bad["delta_rate_5xx"]).all()
    spikes = analyst.find_spikes(analyst.token_churn(client, scope), "churn")
    burst = pd.Timestamp(seeded_database.truth["meta"]["token_burst_ns"], unit="ns").floor("min")
    assert spikes.loc[spikes["churn"].idxmax(), "window_start"] == burst
    assert spikes["churn"].max() > 400
