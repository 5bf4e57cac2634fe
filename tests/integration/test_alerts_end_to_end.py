"""A rate-limit storm, end to end, in real time, with real processes:

simulator (storm on one API) -> ZeroMQ -> `tykpulse run` -> embedded ClickHouse, served by the
worker over HTTP -> `tykpulse alerts run` with the shipped rules -> a real local HTTP receiver gets
the firing rate_limit_storm alert for the storm's API, then the resolved one after the storm ends.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from tests.harness.alert_receiver import AlertReceiver, parse_time
from tests.harness.processes import free_port, stop_process
from tests.harness.tykpulse import tykpulse, wait_for_endpoint

pytestmark = pytest.mark.integration

RULES = Path(__file__).parents[2] / "alerts"


def test_a_storm_fires_then_resolves(tmp_path: Path, alert_receiver: AlertReceiver) -> None:
    firehose, serve = free_port(), free_port()
    worker = subprocess.Popen(
        tykpulse(
            "run", "--firehose", f"@tcp://127.0.0.1:{firehose}", "--clickhouse", f"chdb://{tmp_path / 'db'}",
            "--flush-interval-s", "0.5", "--serve", f"127.0.0.1:{serve}",
        )
    )  # fmt: skip
    alerts = None
    try:
        wait_for_endpoint(serve, worker)
        alerts = subprocess.Popen(
            tykpulse(
                "alerts", "run", "--rules", str(RULES), "--clickhouse", f"http://127.0.0.1:{serve}",
                "--webhook", alert_receiver.url,
            )
        )  # fmt: skip
        subprocess.run(
            tykpulse(
                "simulate", "--connect", f"tcp://127.0.0.1:{firehose}", "--duration", "25", "--rate", "1000",
                "--storm-api-share", "0.5", "--storm-at-s", "3", "--storm-for-s", "15",
                "--truth", str(tmp_path / "truth.json"), "--wait-subscribers-s", "60", "--node", "sim",
            ),
            timeout=180,
            check=True,
        )  # fmt: skip
        storm = json.loads((tmp_path / "truth.json").read_text())["meta"]["storm"]
        storm_start = dt.datetime.fromtimestamp(storm["started_ns"] / 1e9, dt.UTC)
        storm_end = dt.datetime.fromtimestamp(storm["ended_ns"] / 1e9, dt.UTC)

        def is_storm(alert: dict[str, object]) -> bool:
            labels = alert["labels"]
            return isinstance(labels, dict) and labels.get("alertname") == "rate_limit_storm"

        firing = alert_receiver.wait_for(
            lambda a, at: is_storm(a) and parse_time(a["endsAt"]) > at, timeout=180
        )
        assert firing["labels"]["api_id"] == storm["api_id"]
        assert firing["labels"]["org_id"] == storm["org_id"]
        assert firing["labels"]["severity"] == "critical"
        assert storm_start - dt.timedelta(seconds=5) <= parse_time(firing["startsAt"]) <= storm_end
        assert "Rate-limit storm on API" in firing["annotations"]["summary"]
        resolved = alert_receiver.wait_for(
            lambda a, at: is_storm(a) and parse_time(a["endsAt"]) <= at, timeout=300
        )
        assert resolved["labels"] == firing["labels"]
        assert resolved["startsAt"] == firing["startsAt"]
        assert parse_time(resolved["endsAt"]) > storm_end
        storm_apis = {a["labels"].get("api_id") for _, a in alert_receiver.alerts() if is_storm(a)}
        assert storm_apis == {storm["api_id"]}, "only the storm's API may fire"
        assert stop_process(alerts, timeout=30)
        assert alerts.returncode == 0
    finally:
        if alerts is not None:
            stop_process(alerts, timeout=30)
        stop_process(worker, timeout=60)
