"""Archive round trips through the real CLI, checked against the simulator's ground truth.

1. `tykpulse run --archive` writes the simulator's traffic (views == truth).
2. replay: `tykpulse replay` re-publishes the archive over tcp to a second
   worker on a fresh database; its views equal the truth, with each node
   renamed to the replay's own (replay-<node>), and its ingest health shows
   every archived message received, none lost.
3. rebuild: windows of the first database are damaged (rows deleted, a range
   doubled); `tykpulse rebuild` over the whole range restores the truth.
"""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import clickhouse_connect
import pytest
import zmq

from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.simulate.verify import check_view
from tests.harness.processes import free_port
from tests.helpers import analytics
from tests.integration.cli import simulate, start_worker, tykpulse

pytestmark = pytest.mark.integration

SALT = "round-trip-salt"
EVENT_TIME_VIEWS = [
    f"{r}_{g}" for r in ("traffic", "rate_limit_hits", "token_churn", "config_changes") for g in ("1m", "1h")
]


def run_worker(port: int, dsn: str, tmp: Path, *extra: str) -> subprocess.Popen[bytes]:
    options = ("--flush-interval-s", "0.5", "--drain-timeout-s", "1.5", "--key-hash-salt", SALT)
    return start_worker(port, dsn, *options, *extra, cwd=tmp)


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        assert worker.wait(timeout=120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        # clickhouse_connect's rows are tuples, typed as Sequence
        return list(cast("Sequence[tuple[Any, ...]]", client.query(sql).result_rows))
    finally:
        client.close()


def problems(dsn: str, truth: dict[str, Any]) -> list[str]:
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        checks = [check_view(client, "tykpulse", v, truth["views"][v]) for v in EVENT_TIME_VIEWS]
    finally:
        client.close()
    return [f"{c.view}: {c.expected_rows}/{c.actual_rows} {c.problems[:3]}" for c in checks if not c.ok]


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("archive")
    port = free_port()
    dsn = f"chdb://{tmp / 'source'}"
    worker = run_worker(port, dsn, tmp, "--archive")
    try:
        simulate(port, tmp / "truth.json", seed=5, duration_s=5)
    finally:
        stop(worker)
    truth = json.loads((tmp / "truth.json").read_text())
    assert problems(dsn, truth) == []
    return {"tmp": tmp, "dsn": dsn, "truth": truth}


def renamed(truth: dict[str, Any], prefix: str) -> dict[str, Any]:
    out = copy.deepcopy(truth)
    for grain in ("1m", "1h"):
        for row in out["views"][f"config_changes_{grain}"]:
            row["node_id"] = prefix + row["node_id"]
    return out


def test_replay_reproduces_the_rollups_in_another_database(archived: dict[str, Any]) -> None:
    tmp, truth = archived["tmp"], archived["truth"]
    (archived_messages,) = query(archived["dsn"], "SELECT count() FROM tykpulse.events_raw")[0]
    port = free_port()
    target = f"chdb://{tmp / 'replayed'}"
    worker = run_worker(port, target, tmp)
    try:
        replay = subprocess.run(
            tykpulse(
                "replay",
                "--from",
                "2000-01-01T00:00:00Z",
                "--to",
                "2100-01-01",
                "--publish",
                f"tcp://127.0.0.1:{port}",
                "--clickhouse",
                archived["dsn"],
                "--message-rate",
                "2000",
                "--wait-subscribers-s",
                "60",
                "--progress",  # forced: stderr is a pipe here
            ),
            timeout=300,
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        stop(worker)
    assert f"replayed {archived_messages} messages" in replay.stdout
    assert "replaying (messages)" in replay.stderr  # progress, with the count done out of the total
    assert f"{archived_messages}/{archived_messages}" in replay.stderr
    assert problems(target, renamed(truth, "replay-")) == []
    health = query(
        target,
        "SELECT sum(messages), sum(lost_messages), sum(rejected), groupUniqArray(node_id) "
        "FROM tykpulse.ingest_health_1m",
    )[0]
    heartbeats_included = health[0] >= archived_messages
    assert heartbeats_included
    assert health[1:3] == (0, 0)
    assert sorted(health[3]) == sorted(f"replay-{n}" for n in truth["publishers"])


def test_rebuild_restores_damaged_windows(archived: dict[str, Any]) -> None:
    dsn, truth = archived["dsn"], archived["truth"]
    windows = sorted({r["window_start"] for r in truth["views"]["traffic_1m"]})
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        client.command(
            f"ALTER TABLE tykpulse.traffic_1m_state DELETE WHERE window_start = toDateTime({windows[-1]}) "
            "SETTINGS mutations_sync = 2"
        )
        client.command(
            "INSERT INTO tykpulse.rate_limit_hits_1h_state SELECT * FROM tykpulse.rate_limit_hits_1h_state"
        )
    finally:
        client.close()
    assert problems(dsn, truth) != []
    rebuilt = subprocess.run(
        tykpulse(
            "rebuild",
            "--from",
            str(windows[0] - 3600),
            "--to",
            str(windows[-1] + 3600),
            "--clickhouse",
            dsn,
            "--key-hash-salt",
            SALT,
            "--force",
        ),
        timeout=300,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "state rows replaced" in rebuilt.stdout
    assert problems(dsn, truth) == []


NEAR_LIMIT = 20_000


def test_a_message_just_under_the_limit_survives_replay_and_rebuild(tmp_path: Path) -> None:
    # Found by attack: the archive hashes keys (`k` becomes `h:<16 hex>`), so a message received
    # just under --max-message-bytes is over it in the archive. `rebuild` refused it
    # (message_too_large, 239 records lost, exit 0) and `replay` sent it whole: the receiving worker
    # dropped the connection, and nothing counted the loss.
    limit = ("--max-message-bytes", str(NEAR_LIMIT))
    port, source = free_port(), f"chdb://{tmp_path / 'source'}"
    worker = run_worker(port, source, tmp_path, "--archive", *limit)
    context: zmq.Context[Any] = zmq.Context()
    publisher = FirehosePublisher(context, [parse_endpoint(f"tcp://127.0.0.1:{port}")], node="big")

    def size(records: list[dict[str, Any]]) -> int:
        encoded = publisher.encoder.encode(
            "tyk.analytics", node="big", boot=1, seq=0, sent=time.time_ns(), records=records
        )
        return sum(len(frame) for frame in encoded)

    records = [analytics(time.time_ns(), key="k", path="/p" * 20) for _ in range(200)]
    while size(records) > NEAR_LIMIT - 100:
        records.pop()
    # accepted live; each hashed key (h:<16 hex>) is 17 bytes longer, over the limit in the archive
    assert size(records) + 17 * len(records) > NEAR_LIMIT
    try:
        assert publisher.wait_for_subscribers(60)
        publisher.publish("tyk.analytics", records)
        time.sleep(1)
    finally:
        publisher.close()
        context.term()
        stop(worker)
    sent = len(records)
    assert query(source, "SELECT sum(requests) FROM tykpulse.traffic_1m") == [(sent,)]
    port, target = free_port(), f"chdb://{tmp_path / 'replayed'}"
    receiver = run_worker(port, target, tmp_path, *limit)
    try:
        subprocess.run(
            tykpulse(
                "replay", "--from", "2000-01-01", "--to", "2100-01-01", "--publish", f"tcp://127.0.0.1:{port}",
                "--clickhouse", source, "--wait-subscribers-s", "60", *limit,
            ),
            timeout=300,
            check=True,
            capture_output=True,
            text=True,
        )  # fmt: skip
    finally:
        stop(receiver)
    assert query(target, "SELECT sum(requests) FROM tykpulse.traffic_1m") == [(sent,)]
    assert query(target, "SELECT sum(lost_messages), sum(rejected) FROM tykpulse.ingest_health_1m") == [
        (0, 0)
    ]
    subprocess.run(
        tykpulse(
            "rebuild", "--from", "2000-01-01", "--to", "2100-01-01", "--clickhouse", source,
            "--key-hash-salt", SALT, "--force", *limit,
        ),
        timeout=300,
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert query(source, "SELECT sum(requests) FROM tykpulse.traffic_1m") == [(sent,)]
