"""Alert rules: parsing, validation, and the pending -> firing -> resolved state of a series."""

from __future__ import annotations

import datetime as dt
import threading
import types
from pathlib import Path
from typing import Any

import pytest

from pipelines.alerts import Rule, RuleState, alerts_url, load_rules, parse_duration
from pipelines.alerts.evaluator import Evaluator

pytestmark = pytest.mark.unit

T0 = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
SHIPPED = Path(__file__).parents[2] / "alerts"


def rule(**overrides: object) -> Rule:
    fields: dict[str, object] = {
        "name": "storm",
        "severity": "critical",
        "sql": "SELECT 1",
        "interval": "30s",
        "for": "1m",
    }
    fields |= overrides
    return Rule.model_validate(fields)


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1m30s") == 90
    assert parse_duration("1h") == 3600
    assert parse_duration(5) == 5
    for bad in ("", "5 minutes", "m"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_the_shipped_rules_are_valid_and_cover_the_issue() -> None:
    ruleset = load_rules(SHIPPED)
    assert ruleset.problems == ()
    assert {r.name for r in ruleset.rules} == {
        "rate_limit_storm",
        "token_churn_spike",
        "config_flapping",
        "stale_publisher",
        "data_loss",
        "ingestion_stopped",
        "error_ratio_after_change",
    }
    for r in ruleset.rules:
        assert r.annotations["summary"]
        assert r.interval_s > 0


def test_problems_are_reported_per_file_not_raised(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text("name: ok\nseverity: info\nsql: SELECT 1\n")
    (tmp_path / "bad_yaml.yaml").write_text("name: [unclosed\n")
    (tmp_path / "bad_fields.yaml").write_text("name: Bad-Name\nseverity: loud\nsql: ''\nextra: 1\n")
    (tmp_path / "many.yml").write_text(
        "rules:\n"
        "  - {name: ok, severity: info, sql: SELECT 2}\n"
        "  - {name: two, severity: info, sql: SELECT 3, for: soon}\n"
    )
    ruleset = load_rules(tmp_path)
    assert [r.name for r in ruleset.rules] == ["ok"]
    problems = {Path(p.source.split("[")[0]).name: p.message for p in ruleset.problems}
    assert "cannot read" in problems["bad_yaml.yaml"]
    assert "name" in problems["bad_fields.yaml"]
    assert "severity" in problems["bad_fields.yaml"]
    assert "extra" in problems["bad_fields.yaml"]
    messages = " ".join(p.message for p in ruleset.problems)
    assert "duplicate rule name 'ok'" in messages
    assert "duration" in messages
    assert load_rules(tmp_path / "missing").problems


def test_a_series_is_pending_then_firing_then_resolved() -> None:
    state = RuleState(rule(annotations={"summary": "{events} on {api_id} ({share:.0%})"}), "file:///rules")
    columns = ["api_id", "events", "share"]
    assert state.evaluate(columns, [("a1", 120, 0.5)], T0) == []  # pending
    assert state.evaluate(columns, [("a1", 150, 0.5)], T0 + dt.timedelta(seconds=30)) == []
    firing = state.evaluate(columns, [("a1", 180, 0.6)], T0 + dt.timedelta(seconds=60))
    assert len(firing) == 1
    alert = firing[0]
    assert alert.labels == {"api_id": "a1", "alertname": "storm", "severity": "critical"}
    assert alert.annotations == {"summary": "180 on a1 (60%)"}
    assert (alert.starts_at, alert.resolved) == (T0, False)
    assert alert.ends_at > T0 + dt.timedelta(seconds=60)
    body = alert.to_alertmanager()
    assert body["startsAt"] == "2026-11-27T10:00:00.000Z"
    assert body["generatorURL"] == "file:///rules#storm"
    assert set(body) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert len(state.evaluate(columns, [("a1", 10, 0.1)], T0 + dt.timedelta(seconds=90))) == 1  # re-sent
    resolved = state.evaluate(columns, [], T0 + dt.timedelta(seconds=120))
    assert [(a.resolved, a.ends_at) for a in resolved] == [(True, T0 + dt.timedelta(seconds=120))]
    assert state.evaluate(columns, [], T0 + dt.timedelta(seconds=150)) == []


def test_an_alert_never_ends_before_it_starts_when_the_clock_steps_back() -> None:
    """Alertmanager refuses an alert whose endsAt is before its startsAt, and answers the whole POST 400."""
    state = RuleState(rule(**{"for": "0s"}), "u")
    assert len(state.evaluate(["api_id"], [("a1",)], T0)) == 1
    back = T0 - dt.timedelta(minutes=10)  # NTP stepped the evaluator's clock back
    [firing] = state.evaluate(["api_id"], [("a1",)], back)
    [resolved] = state.evaluate(["api_id"], [], back)
    assert firing.starts_at <= back < firing.ends_at
    assert resolved.resolved
    assert resolved.starts_at <= resolved.ends_at == back  # resolved now, not when the clock said before


def test_a_pending_series_that_goes_away_is_never_sent() -> None:
    state = RuleState(rule(), "u")
    assert state.evaluate(["api_id"], [("a1",)], T0) == []
    assert state.evaluate(["api_id"], [], T0 + dt.timedelta(seconds=30)) == []
    assert state.series == {}


def test_series_are_told_apart_by_their_string_columns() -> None:
    state = RuleState(rule(**{"for": "0s"}, labels={"team": "x"}), "u")
    alerts = state.evaluate(["node_id", "lost"], [("n1", 2), ("n2", 5)], T0)
    assert sorted(a.labels["node_id"] for a in alerts) == ["n1", "n2"]
    assert all(a.labels["team"] == "x" for a in alerts)
    assert [
        a.labels["node_id"] for a in state.evaluate(["node_id", "lost"], [("n2", 6)], T0) if a.resolved
    ] == ["n1"]


def test_unknown_template_fields_stay_as_written() -> None:
    state = RuleState(rule(**{"for": "0s"}, annotations={"summary": "{nope} {x:.1f} {x:bad}"}), "u")
    assert state.evaluate(["x"], [(1.25,)], T0)[0].annotations["summary"] == "{nope} {x:.1f} {x:bad}"


def test_alertmanager_url() -> None:
    assert alerts_url("http://am:9093") == "http://am:9093/api/v2/alerts"
    assert alerts_url("http://am:9093/") == "http://am:9093/api/v2/alerts"
    assert alerts_url("http://hook:8080/receive") == "http://hook:8080/receive"
    with pytest.raises(ValueError, match="http"):
        alerts_url("ftp://x")


class _StoppingClient:
    """Answers every rule with no rows; the first query stands for the moment SIGTERM arrives."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.queries: list[str] = []

    def query(self, sql: str) -> Any:
        self.queries.append(sql)
        self.stop.set()
        return types.SimpleNamespace(column_names=["n"], result_rows=[])


def test_a_stop_during_a_round_waits_for_one_query_not_the_whole_round() -> None:
    rules = [Rule(name=f"rule_{i}", severity="info", sql=f"SELECT {i}") for i in range(5)]
    stop = threading.Event()
    client = _StoppingClient(stop)
    Evaluator(client, rules, None, generator_url="http://x").run(stop)
    assert client.queries == ["SELECT 0"]
