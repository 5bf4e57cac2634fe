"""Every shipped alert rule fires on the situation it is for, and stays quiet on healthy traffic.

Each scenario is written through the real path (firehose messages -> Ingestor ->
rollups -> ClickHouseSink) into embedded ClickHouse, stamped relative to now,
and each rule's SQL runs on the engine; its series then go through the
pending -> firing state machine.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.alerts import Rule, RuleState, load_rules
from pipelines.alerts.evaluator import run_query
from pipelines.alerts.state import Alert
from pipelines.ingest import Ingestor
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from sinks.clickhouse.sink import ClickHouseSink
from tests.helpers import analytics, event, message, notice

pytestmark = pytest.mark.component

RULES = {r.name: r for r in load_rules(Path(__file__).parents[2] / "alerts").rules}
MINUTE = 60 * 10**9


class Scenario:
    """Messages per node, each stamped (event and receive time) some minutes before now."""

    def __init__(self) -> None:
        # The rules window by the database's current minute: a minute turning between stamping a
        # scenario and querying it moves every window by one, and a storm counted over half its
        # minutes fired nothing (seen once in CI). Written and queried within 15 s, it cannot turn.
        left_s = 60 - time.time() % 60
        if left_s < 15:
            time.sleep(left_s + 0.5)
        self.now = time.time_ns()
        self.ingestor = Ingestor(clock=lambda: self.now, hasher=KeyHasher(b"salt"))
        self.seq: dict[str, int] = {}

    def send(
        self,
        topic: str,
        records: list[dict[str, Any]],
        *,
        minutes_ago: float,
        node: str = "gw1",
        clock_ahead_minutes: float = 0,
    ) -> None:
        at = self.now - int(minutes_ago * MINUTE)
        for record in records:
            record["timestamp"] = at + int(clock_ahead_minutes * MINUTE)
        seq = self.seq.get(node, 0)
        self.seq[node] = seq + 1
        self.ingestor.ingest(message(topic, records, node=node, seq=seq, sent=at), received_ns=at)

    def traffic(self, *, minutes_ago: float, requests: int, errors: int, api: str = "api1") -> None:
        codes = [500] * errors + [200] * (requests - errors)
        self.send("tyk.analytics", [analytics(0, api=api, code=c) for c in codes], minutes_ago=minutes_ago)


@pytest.fixture
def sink(tykpulse_sink: ClickHouseSink) -> ClickHouseSink:
    return tykpulse_sink


def firing_alerts(sink: ClickHouseSink, scenario: Scenario, rule: Rule) -> list[Alert]:
    """Write the scenario, run the rule until its `for` has passed; the alerts firing then."""
    sink.write(compute(scenario.ingestor.take()), f"scenario-{rule.name}")
    state = RuleState(rule, "file:///alerts")
    now = dt.datetime.now(dt.UTC)
    alerts: list[Alert] = []
    for step in (0.0, rule.for_s):
        columns, rows = run_query(sink.client, rule.sql)
        alerts = state.evaluate(columns, rows, now + dt.timedelta(seconds=step))
    return [a for a in alerts if not a.resolved]


def fires(sink: ClickHouseSink, scenario: Scenario, rule: Rule) -> list[dict[str, str]]:
    """The labels of what fired (firing_alerts)."""
    return [a.labels for a in firing_alerts(sink, scenario, rule)]


def healthy(minutes: int = 30) -> Scenario:
    scenario = Scenario()
    for m in range(minutes, -1, -1):
        scenario.traffic(minutes_ago=m, requests=200, errors=2)
        limited = [event("RatelimitExceeded", 0, key=f"k{i}") for i in range(3)]
        scenario.send("tyk.event.RatelimitExceeded", limited, minutes_ago=m)
        scenario.send("tyk.event.TokenCreated", [event("TokenCreated", 0, key=f"t{m}")], minutes_ago=m)
        if m % 10 == 0:
            scenario.send("tyk.notice.ApiUpdated", [notice("ApiUpdated", 0)], minutes_ago=m, node="dash")
        scenario.send("tyk.heartbeat", [{"node": "dash", "interval_ms": 1000}], minutes_ago=m, node="dash")
    return scenario


def test_healthy_traffic_fires_nothing(sink: ClickHouseSink) -> None:
    sink.write(compute(healthy().ingestor.take()), "healthy")
    for rule in RULES.values():
        _, rows = run_query(sink.client, rule.sql)
        assert rows == [], f"{rule.name} fired on healthy traffic: {rows}"


def test_rate_limit_storm(sink: ClickHouseSink) -> None:
    scenario = healthy()
    for m in (1, 0):
        scenario.traffic(minutes_ago=m, requests=300, errors=0, api="stormy")
        storm = [event("RatelimitExceeded", 0, api="stormy", key=f"k{i % 40}") for i in range(250)]
        scenario.send("tyk.event.RatelimitExceeded", storm, minutes_ago=m)
    assert [labels["api_id"] for labels in fires(sink, scenario, RULES["rate_limit_storm"])] == ["stormy"]


def test_token_churn_spike(sink: ClickHouseSink) -> None:
    scenario = healthy(60)
    burst = [event("TokenCreated", 0, key=f"burst{i}") for i in range(300)]
    scenario.send("tyk.event.TokenCreated", burst, minutes_ago=1)
    assert len(fires(sink, scenario, RULES["token_churn_spike"])) == 1


def test_config_flapping(sink: ClickHouseSink) -> None:
    scenario = healthy()
    for i in range(12):
        scenario.send("tyk.notice.ApiUpdated", [notice("ApiUpdated", 0)], minutes_ago=i / 4, node="dash")
    assert [labels["command"] for labels in fires(sink, scenario, RULES["config_flapping"])] == ["ApiUpdated"]


def test_stale_publisher(sink: ClickHouseSink) -> None:
    scenario = healthy()
    for m in range(30, 9, -1):
        scenario.send("tyk.heartbeat", [{"node": "gone", "interval_ms": 1000}], minutes_ago=m, node="gone")
    assert [labels["node_id"] for labels in fires(sink, scenario, RULES["stale_publisher"])] == ["gone"]


def test_stale_publisher_is_quiet_for_a_goodbye_and_fires_again_for_a_restart_that_died(
    sink: ClickHouseSink,
) -> None:
    scenario = healthy()
    for node in ("deployed", "restarted"):
        for m in range(30, 9, -1):
            scenario.send("tyk.heartbeat", [{"node": node, "interval_ms": 1000}], minutes_ago=m, node=node)
        bye = {"node": node, "interval_ms": 1000, "bye": True}
        scenario.send("tyk.heartbeat", [bye], minutes_ago=9, node=node)  # stopped cleanly
    # the restart came back (a new boot) and was then killed: no goodbye this time
    scenario.ingestor.ingest(
        message(
            "tyk.heartbeat",
            [{"node": "restarted", "interval_ms": 1000, "timestamp": scenario.now - 6 * MINUTE}],
            node="restarted",
            boot=2,
            seq=0,
            sent=scenario.now - 6 * MINUTE,
        ),
        received_ns=scenario.now - 6 * MINUTE,
    )
    fired = [labels["node_id"] for labels in fires(sink, scenario, RULES["stale_publisher"])]
    assert fired == ["restarted"]


def test_stale_publisher_holds_a_publisher_to_the_heartbeat_interval_it_promised(
    sink: ClickHouseSink,
) -> None:
    scenario = healthy()
    for node, last in (("keeps_promise", 3.5), ("broke_promise", 16)):
        for m in (last + 10, last + 5, last):  # a heartbeat every 5 minutes, as promised
            scenario.send("tyk.heartbeat", [{"node": node, "interval_ms": 300_000}], minutes_ago=m, node=node)
    # 3.5 minutes silent is live for a 5-minute promise (publishers.state): it fired, and resolved at
    # the next heartbeat, every 5 minutes
    assert [labels["node_id"] for labels in fires(sink, scenario, RULES["stale_publisher"])] == [
        "broke_promise"
    ]


def test_data_loss(sink: ClickHouseSink) -> None:
    scenario = healthy()
    scenario.seq["gw1"] += 5  # five messages from gw1 never arrive
    scenario.traffic(minutes_ago=0, requests=10, errors=0)
    assert [labels["node_id"] for labels in fires(sink, scenario, RULES["data_loss"])] == ["gw1"]


def test_ingestion_stopped(sink: ClickHouseSink) -> None:
    scenario = Scenario()
    for m in range(40, 9, -1):
        scenario.traffic(minutes_ago=m, requests=50, errors=0)
    assert len(fires(sink, scenario, RULES["ingestion_stopped"])) == 1


def test_error_ratio_after_change(sink: ClickHouseSink) -> None:
    scenario = Scenario()
    for m in range(20, 5, -1):
        scenario.traffic(minutes_ago=m, requests=200, errors=2)
    scenario.send("tyk.notice.ApiUpdated", [notice("ApiUpdated", 0)], minutes_ago=5, node="dash")
    for m in range(4, -1, -1):
        scenario.traffic(minutes_ago=m, requests=200, errors=50)
    assert len(fires(sink, scenario, RULES["error_ratio_after_change"])) == 1


def test_error_ratio_after_change_fires_at_exactly_three_times_the_ratio_before(sink: ClickHouseSink) -> None:
    scenario = Scenario()
    for m in range(20, 5, -1):  # the 15 minutes before the change: 5 %
        scenario.traffic(minutes_ago=m, requests=100, errors=5)
    scenario.send("tyk.notice.ApiUpdated", [notice("ApiUpdated", 0)], minutes_ago=5, node="dash")
    for m in range(4, -1, -1):  # after it: 15 %, three times as much (0.15 < 3 * 0.05 in floating point)
        scenario.traffic(minutes_ago=m, requests=100, errors=15)
    assert len(fires(sink, scenario, RULES["error_ratio_after_change"])) == 1


def test_error_ratio_after_a_group_reload(sink: ClickHouseSink) -> None:
    # a gateway without a Dashboard: /tyk/reload/group publishes GroupReload, nothing else
    scenario = Scenario()
    for m in range(20, 5, -1):
        scenario.traffic(minutes_ago=m, requests=200, errors=2)
    scenario.send("tyk.notice.GroupReload", [notice("GroupReload", 0)], minutes_ago=5, node="gw1")
    for m in range(4, -1, -1):
        scenario.traffic(minutes_ago=m, requests=200, errors=50)
    assert len(fires(sink, scenario, RULES["error_ratio_after_change"])) == 1


def housekeeping(scenario: Scenario, minutes: int) -> None:
    """What a real gateway publishes without any change: key-space updates and DRL heartbeats."""
    drl = '{"HostName":"gw-a","ID":"solo-a","LoadPerSec":1,"Percentage":0,"TagHash":""}'
    for m in range(minutes, -1, -1):
        keys = [notice("KeySpaceUpdateNotification", 0, "abc") for _ in range(40)]
        scenario.send("tyk.notice.KeySpaceUpdateNotification", keys, minutes_ago=m, node="bridge")
        beats = [notice("NoticeGatewayDRLNotification", 0, drl) for _ in range(30)]
        scenario.send("tyk.notice.NoticeGatewayDRLNotification", beats, minutes_ago=m, node="bridge")


def test_housekeeping_notices_are_counted_but_are_not_changes(sink: ClickHouseSink) -> None:
    scenario = Scenario()
    for m in range(20, -1, -1):
        scenario.traffic(minutes_ago=m, requests=200, errors=2 if m > 5 else 50)
    housekeeping(scenario, 20)
    for rule in ("config_flapping", "error_ratio_after_change"):
        assert fires(sink, scenario, RULES[rule]) == [], rule
    by_kind = sink.client.query(
        "SELECT kind, is_config, node_id, sum(changes) FROM tykpulse.config_changes_1m "
        "GROUP BY kind, is_config, node_id ORDER BY kind"
    ).result_rows
    # 21 minutes of 40 key-space updates (relayed by the bridge) and 30 DRL beats (from gateway solo-a)
    assert [tuple(r) for r in by_kind] == [
        ("key_space", 0, "bridge", 21 * 40),
        ("rate_limiter", 0, "solo-a", 21 * 30),
    ]


def test_rate_limit_storm_is_seen_while_it_goes_on(sink: ClickHouseSink) -> None:
    # 60 events in the previous minute and 60 in this one so far: a storm now, at 60 to 120 a minute.
    # Counting whole minutes only saw it once the current minute had ended (the end-to-end storm of
    # 15 s fired 27 s after it was over).
    scenario = healthy()
    for m in (1, 0):
        scenario.traffic(minutes_ago=m, requests=100, errors=0, api="stormy")
        storm = [event("RatelimitExceeded", 0, api="stormy", key=f"k{i}") for i in range(60)]
        scenario.send("tyk.event.RatelimitExceeded", storm, minutes_ago=m)
    assert [labels["api_id"] for labels in fires(sink, scenario, RULES["rate_limit_storm"])] == ["stormy"]


def test_rate_limit_storm_baseline_is_per_minute_heard(sink: ClickHouseSink) -> None:
    # A database 22 minutes old; the API refuses 20 a minute, then 150 in the previous minute: 75 to
    # 150 a minute over the window, under ten times its rate (200). Dividing the hour's 420 events by
    # 60 minutes (7/min) made that a storm.
    scenario = Scenario()
    for m in range(22, -1, -1):
        scenario.traffic(minutes_ago=m, requests=150, errors=0, api="busy")
        refused = 150 if m == 1 else 0 if m == 0 else 20
        limited = [event("RatelimitExceeded", 0, api="busy", key=f"k{i}") for i in range(refused)]
        scenario.send("tyk.event.RatelimitExceeded", limited, minutes_ago=m)
    assert fires(sink, scenario, RULES["rate_limit_storm"]) == []


def test_rate_limit_storm_keeps_orgs_apart_and_handles_org_level_events(sink: ClickHouseSink) -> None:
    scenario = healthy()
    for m in (1, 0):
        # org1 refuses 60 of its 100 requests on "shared"; org2's 1000 on its own "shared" are not org1's
        scenario.send(
            "tyk.analytics", [analytics(0, org="org1", api="shared") for _ in range(100)], minutes_ago=m
        )
        scenario.send(
            "tyk.analytics", [analytics(0, org="org2", api="shared") for _ in range(1000)], minutes_ago=m
        )
        storm = [event("RatelimitExceeded", 0, org="org1", api="shared", key=f"k{i}") for i in range(60)]
        scenario.send("tyk.event.RatelimitExceeded", storm, minutes_ago=m)
        # org-level limits (no API): org3 refuses 75 of its 1000 requests a minute (7.5 %), org4 75 of 100
        for org, requests in (("org3", 1000), ("org4", 100)):
            scenario.send(
                "tyk.analytics", [analytics(0, org=org, api="b") for _ in range(requests)], minutes_ago=m
            )
            limited = [event("OrgRateLimitExceeded", 0, org=org, api="", key=org) for _ in range(75)]
            scenario.send("tyk.event.OrgRateLimitExceeded", limited, minutes_ago=m)
    fired = fires(sink, scenario, RULES["rate_limit_storm"])
    # before: org1/shared was 120 of 2200 requests (5 %, quiet) and both org-level storms were
    # 150 events / max(0 requests, 1) = 15000 % (org3 fired though it refused 7.5 %)
    assert sorted((labels["org_id"], labels["api_id"]) for labels in fired) == [
        ("org1", "shared"),
        ("org4", ""),
    ]
    assert sorted(labels["target"] for labels in fired) == ["API shared", "the whole org (org-level limit)"]


def test_an_org_level_storm_arriving_through_many_apis_is_one_org_wide_series(sink: ClickHouseSink) -> None:
    # Tyk's org events name no API, but each reaches tykpulse through a webhook handler attached to an
    # API, whose URL names it: org5's limit refuses all its 1200 requests over 20 APIs, 60 each.
    scenario = healthy()
    for m in (1, 0):
        for n in range(20):
            api = f"api-{n}"
            refused = [analytics(0, org="org5", api=api, code=403) for _ in range(30)]
            scenario.send("tyk.analytics", refused, minutes_ago=m)
            limited = [event("OrgRateLimitExceeded", 0, org="org5", api=api, key="org5") for _ in range(30)]
            scenario.send("tyk.event.OrgRateLimitExceeded", limited, minutes_ago=m)
    fired = fires(sink, scenario, RULES["rate_limit_storm"])
    # before: 20 series of 60 events each, none reaching 100: nothing fired
    assert [(labels["org_id"], labels["api_id"], labels["target"]) for labels in fired] == [
        ("org5", "", "the whole org (org-level limit)")
    ]


def test_key_level_events_naming_no_api_are_not_called_an_org_level_limit(sink: ClickHouseSink) -> None:
    # A webhook handler configured without api_id gives key-level RatelimitExceeded with api_id '';
    # they joined the org-level series and were called "the whole org (org-level limit)".
    scenario = healthy()
    for m in (1, 0):
        scenario.send("tyk.analytics", [analytics(0, org="org9", api="a") for _ in range(100)], minutes_ago=m)
        unnamed = [event("RatelimitExceeded", 0, org="org9", api="", key=f"k{i}") for i in range(250)]
        scenario.send("tyk.event.RatelimitExceeded", unnamed, minutes_ago=m)
        org_level = [event("OrgRateLimitExceeded", 0, org="org9", api="a", key="org9") for _ in range(75)]
        scenario.send("tyk.event.OrgRateLimitExceeded", org_level, minutes_ago=m)
    fired = sorted(firing_alerts(sink, scenario, RULES["rate_limit_storm"]), key=lambda a: a.labels["target"])
    assert [(a.labels["org_id"], a.labels["api_id"], a.labels["target"]) for a in fired] == [
        ("org9", "", "APIs the events do not name (their webhook gives no api_id)"),
        ("org9", "", "the whole org (org-level limit)"),
    ]
    assert [a.annotations["description"].split(" ")[0] for a in fired] == ["500", "150"]


def test_a_storm_on_an_api_tyk_records_no_requests_of_fires_and_says_so(sink: ClickHouseSink) -> None:
    # do_not_track or analytics off: events but no records. The share was events / 1, and the alert
    # said "as many as 30000% of the requests of API untracked".
    scenario = healthy()
    for m in (1, 0):
        storm = [event("RatelimitExceeded", 0, api="untracked", key=f"k{i}") for i in range(150)]
        scenario.send("tyk.event.RatelimitExceeded", storm, minutes_ago=m)
    (alert,) = firing_alerts(sink, scenario, RULES["rate_limit_storm"])
    assert alert.labels["target"] == "API untracked"
    description = alert.annotations["description"]
    assert "against 0 requests recorded for API untracked" in description
    assert "%" not in description


def test_records_stamped_ahead_count_when_their_minute_comes_not_before(sink: ClickHouseSink) -> None:
    """A gateway or bridge whose clock is ahead stamps records in minutes still to come (the workers
    take up to --max-future-s, a day by default); windows open at the end counted them early, on top of
    the current ones: a steady API refusing half its requests was a storm, one change a minute flapping."""
    scenario = healthy(70)
    for m in range(70, -1, -1):
        requests = [analytics(0, api="steady", code=c) for c in [429] * 60 + [200] * 60]
        limited = [event("RatelimitExceeded", 0, api="steady", key=f"k{i}") for i in range(60)]
        for topic, records in (("tyk.analytics", requests), ("tyk.event.RatelimitExceeded", limited)):
            scenario.send(topic, records, minutes_ago=m, node="gw_ahead", clock_ahead_minutes=20)
    for m in range(20, -1, -1):
        change = [notice("ApiUpdated", 0)]
        scenario.send("tyk.notice.ApiUpdated", change, minutes_ago=m, node="bridge", clock_ahead_minutes=10)
    assert fires(sink, scenario, RULES["rate_limit_storm"]) == []
    columns, rows = run_query(sink.client, RULES["config_flapping"].sql.replace("HAVING changes >= 10", ""))
    assert [dict(zip(columns, row, strict=True))["changes"] for row in rows] == [7]  # 6 + healthy()'s 1


def test_token_churn_spike_baseline_is_per_minute_heard(sink: ClickHouseSink) -> None:
    # A database 22 minutes old: 12 creates a minute, then 50 a minute for the last 5 whole minutes
    # (250, 4.2 times the usual 60 per 5 minutes). Over 12 five-minute blocks the baseline read 21
    # and the last 5 minutes (partly the current one) 200: a spike.
    scenario = Scenario()
    for m in range(22, 0, -1):
        created = [event("TokenCreated", 0, key=f"t{m}-{i}") for i in range(50 if m <= 5 else 12)]
        scenario.send("tyk.event.TokenCreated", created, minutes_ago=m)
    assert fires(sink, scenario, RULES["token_churn_spike"]) == []


def _late_in_a_minute_170_s_ago(scenario: Scenario) -> float:
    """minutes_ago of a moment 120-170 s ago whose minute started more than 180 s ago.

    From now (the scenario may have taken seconds to build), and at most 170 s ago, so that the
    rest of the test, on a loaded machine, does not carry it past the rule's 180 s.
    """
    scenario.now = time.time_ns()
    second = (scenario.now // 10**9 - 180) % 60
    if second > 49:  # the moment would be over 170 s ago: wait for the next minute
        time.sleep(60.5 - second)
        scenario.now = time.time_ns()
    minute = (scenario.now // 10**9 - 180) // 60 * 60
    return (scenario.now - (minute + 59.9) * 10**9) / MINUTE


def test_stale_publisher_measures_silence_from_the_last_message(sink: ClickHouseSink) -> None:
    scenario = healthy()
    last = _late_in_a_minute_170_s_ago(scenario)
    for m in range(30, 3, -1):
        scenario.send("tyk.heartbeat", [{"node": "quiet", "interval_ms": 1000}], minutes_ago=m, node="quiet")
    scenario.send("tyk.heartbeat", [{"node": "quiet", "interval_ms": 1000}], minutes_ago=last, node="quiet")
    # silent for 121-180 s: from the start of its last minute it read 180-239 s and fired
    assert fires(sink, scenario, RULES["stale_publisher"]) == []
    columns, rows = run_query(sink.client, RULES["stale_publisher"].sql.split("HAVING")[0])
    silent = {row[0]: row[columns.index("silent_s")] for row in rows}
    assert 120 <= silent["quiet"] < 180


def test_ingestion_stopped_on_a_database_that_never_heard_a_message_says_a_day(sink: ClickHouseSink) -> None:
    # It fired, as it should, saying "silent for 1796691701 s" and "last message received at 1970".
    (alert,) = firing_alerts(sink, Scenario(), RULES["ingestion_stopped"])
    assert alert.annotations["summary"] == "No firehose message received for 86400 s"
    assert "1970" not in alert.annotations["description"]


def test_ingestion_stopped_measures_silence_from_the_last_message(sink: ClickHouseSink) -> None:
    scenario = Scenario()
    last = _late_in_a_minute_170_s_ago(scenario)
    for m in range(40, 3, -1):
        scenario.traffic(minutes_ago=m, requests=50, errors=0)
    scenario.traffic(minutes_ago=last, requests=50, errors=0)
    assert fires(sink, scenario, RULES["ingestion_stopped"]) == []
