"""Simulator and worker as separate processes over real ZeroMQ tcp into embedded ClickHouse.

Every view is checked against the simulator's ground truth with this test's own
comparisons: counts exact, distinct counts within 2 %, quantiles within the
histogram's 1 % relative error.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import clickhouse_connect
import pytest

from tests.harness.processes import free_port
from tests.harness.tykpulse import tykpulse

pytestmark = pytest.mark.integration

KEYS = {
    "traffic": ["window_start", "org_id", "api_id"],
    "rate_limit_hits": ["window_start", "org_id", "api_id", "event_type"],
    "token_churn": ["window_start", "org_id"],
    "config_changes": ["window_start", "command", "node_id"],
}


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("e2e")
    port = free_port()
    dsn = f"chdb://{tmp / 'clickhouse'}"
    worker = subprocess.Popen(
        tykpulse(
            "run",
            "--firehose",
            f"@tcp://127.0.0.1:{port}",
            "--clickhouse",
            dsn,
            "--flush-interval-s",
            "0.5",
            "--drain-timeout-s",
            "1",
        )
    )
    try:
        simulator = subprocess.run(
            tykpulse(
                "simulate",
                "--connect",
                f"tcp://127.0.0.1:{port}",
                "--duration",
                "8",
                "--record-rate",
                "4000",
                "--message-records",
                "50",
                "--seed",
                "3",
                "--late-fraction",
                "0.03",
                "--token-wave-every-s",
                "1",
                "--config-burst-every-s",
                "1",
                "--truth",
                str(tmp / "truth.json"),
                "--wait-subscribers-s",
                "60",
                "--node",
                "sim",
            ),
            timeout=120,
            check=True,
        )
        assert simulator.returncode == 0
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    truth = json.loads((tmp / "truth.json").read_text())
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        yield {"truth": truth, "client": client}
    finally:
        client.close()


def view_rows(client: Any, view: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    result = client.query(f"SELECT *, toUnixTimestamp(window_start) AS ws FROM tykpulse.{view}")
    rollup = view.rsplit("_", 1)[0]
    out = {}
    for row in result.result_rows:
        record = dict(zip(result.column_names, row, strict=True))
        record["window_start"] = record.pop("ws")
        out[tuple(record[k] for k in KEYS[rollup])] = record
    return out


@pytest.mark.parametrize("rollup", sorted(KEYS))
@pytest.mark.parametrize("grain", ["1m", "1h"])
def test_view_equals_ground_truth(pipeline_run: dict[str, Any], rollup: str, grain: str) -> None:
    view = f"{rollup}_{grain}"
    expected = pipeline_run["truth"]["views"][view]
    actual = view_rows(pipeline_run["client"], view)
    assert expected, f"the simulator sent nothing for {view}"
    assert len(actual) == len(expected)
    for row in expected:
        got = actual[tuple(row[k] for k in KEYS[rollup])]
        for column, value in row.items():
            if column in KEYS[rollup]:
                continue
            if column.startswith("latency_p"):
                assert abs(got[column] - value) <= 0.01 * value + 1e-9, (view, column, row, got)
            elif column == "distinct_keys":
                assert abs(got[column] - value) <= 0.02 * value, (view, column, row, got)
            else:
                assert got[column] == value, (view, column, row, got)


def test_late_records_landed_in_their_own_windows(pipeline_run: dict[str, Any]) -> None:
    windows = {r["window_start"] for r in pipeline_run["truth"]["views"]["traffic_1m"]}
    assert min(windows) < max(windows) - 60, "expected late records a minute or more before the rest"


def test_ingest_health_accounts_for_every_message_sent(pipeline_run: dict[str, Any]) -> None:
    result = pipeline_run["client"].query(
        "SELECT node_id, sum(messages), sum(records), sum(lost_messages), sum(rejected) "
        "FROM tykpulse.ingest_health_1m GROUP BY node_id"
    )
    actual = {row[0]: tuple(row[1:]) for row in result.result_rows}
    expected = {
        node: (p["messages"], p["records"], 0, 0) for node, p in pipeline_run["truth"]["publishers"].items()
    }
    assert actual == expected


def test_quantiles_are_finite_and_ordered(pipeline_run: dict[str, Any]) -> None:
    for row in view_rows(pipeline_run["client"], "traffic_1m").values():
        assert not math.isnan(row["latency_p50_ms"])
        assert row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
