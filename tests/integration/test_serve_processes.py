"""ClickHouse's HTTP interface served by real tykpulse processes, read and written with
clickhouse-connect's own http client.

- `tykpulse run` serves its own embedded database while it ingests: a reader sees
  rows arrive, cannot write, and the views equal the simulator's ground truth.
- `tykpulse db serve` owns a database that a worker writes over http (writer
  credentials); the views equal the ground truth, and ClickHouseSink over http
  gives exactly what it gives embedded, deduplication tokens included.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from pipelines.ingest import Ingestor
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from pipelines.simulate.verify import check_all, fetch_view
from sinks.clickhouse.ddl import view_names
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink, reattach
from tests.conftest import T0_NS
from tests.harness.processes import free_port
from tests.harness.tykpulse import tykpulse, wait_for_endpoint, wait_until
from tests.helpers import analytics, event, message, notice

pytestmark = pytest.mark.integration

WRITER_PASSWORD = "writer-secret"
DEADLINE_S = 120.0


def simulate(port: int, truth: Path, *, duration: str = "6") -> None:
    subprocess.run(
        tykpulse(
            "simulate",
            "--connect",
            f"tcp://127.0.0.1:{port}",
            "--duration",
            duration,
            "--record-rate",
            "3000",
            "--message-records",
            "50",
            "--seed",
            "5",
            "--token-wave-every-s",
            "1",
            "--config-burst-every-s",
            "1",
            "--truth",
            str(truth),
            "--wait-subscribers-s",
            "60",
            "--node",
            "sim",
        ),
        timeout=180,
        check=True,
    )


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def messages_landed(client: Any, truth: dict[str, Any]) -> bool:
    expected = sum(p["messages"] for p in truth["publishers"].values())
    return bool(client.command("SELECT sum(messages) FROM tykpulse.ingest_health_1m") == expected)


def failures(client: Any, truth: dict[str, Any]) -> list[str]:
    return [f"{c.view}: {c.problems[:3]}" for c in check_all(client, "tykpulse", truth) if not c.ok]


def test_a_running_worker_serves_its_database_read_only(tmp_path: Path) -> None:
    firehose, serve = free_port(), free_port()
    worker = subprocess.Popen(
        tykpulse(
            "run",
            "--firehose",
            f"@tcp://127.0.0.1:{firehose}",
            "--clickhouse",
            f"chdb://{tmp_path / 'clickhouse'}",
            "--flush-interval-s",
            "0.5",
            "--serve",
            f"127.0.0.1:{serve}",
        )
    )
    try:
        wait_for_endpoint(serve, worker)
        reader = clickhouse_connect.get_client(host="127.0.0.1", port=serve)
        try:
            simulate(firehose, tmp_path / "truth.json")
            truth = json.loads((tmp_path / "truth.json").read_text())
            wait_until(lambda: messages_landed(reader, truth), "every message to land")
            assert failures(reader, truth) == []
            assert reader.query_df("SELECT * FROM tykpulse.traffic_1m").shape[0] > 0
            with pytest.raises(DatabaseError) as info:
                reader.command("INSERT INTO tykpulse.config_changes_in VALUES (now(), 'x', 'n', 1)")
            assert info.value.code == 164
            with pytest.raises(DatabaseError) as info:
                reader.command("DROP DATABASE tykpulse")
            assert info.value.code == 164
        finally:
            reader.close()
        assert stop(worker) == 0
    finally:
        stop(worker)


@pytest.fixture
def db_serve(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    server = subprocess.Popen(
        tykpulse(
            "db",
            "serve",
            "--path",
            f"chdb://{tmp_path / 'shared'}",  # the DSN form the workers use is accepted too
            "--listen",
            f"127.0.0.1:{port}",
            "--writer-password",
            WRITER_PASSWORD,
        )
    )
    try:
        wait_for_endpoint(port, server)
        yield port
        assert stop(server) == 0
    finally:
        stop(server)


def test_a_worker_writes_through_db_serve(tmp_path: Path, db_serve: int) -> None:
    firehose = free_port()
    worker = subprocess.Popen(
        tykpulse(
            "run",
            "--firehose",
            f"@tcp://127.0.0.1:{firehose}",
            "--clickhouse",
            f"http://tykpulse:{WRITER_PASSWORD}@127.0.0.1:{db_serve}",
            "--flush-interval-s",
            "0.5",
        )
    )
    try:
        simulate(firehose, tmp_path / "truth.json")
        assert stop(worker) == 0
    finally:
        stop(worker)
    truth = json.loads((tmp_path / "truth.json").read_text())
    reader = clickhouse_connect.get_client(host="127.0.0.1", port=db_serve)
    try:
        assert failures(reader, truth) == []
        with pytest.raises(DatabaseError) as info:
            reader.command("INSERT INTO tykpulse.config_changes_in VALUES (now(), 'x', 'n', 1)")
        assert info.value.code == 164
    finally:
        reader.close()


def partials(seed: int) -> dict[str, Any]:
    now = T0_NS + 10 * 60 * 10**9
    ingestor = Ingestor(clock=lambda: now, hasher=KeyHasher(b"salt"))
    for seq in range(20):
        ts = T0_NS + (seed * 7 + seq) * 10**9
        records = [analytics(ts + i, api=f"api{i % 3}", code=(200, 429, 500)[i % 3]) for i in range(10)]
        ingestor.ingest(message("tyk.analytics", records, seq=3 * seq), received_ns=now)
        limit = [event("RatelimitExceeded", ts, key=f"k{seq}")]
        ingestor.ingest(message("tyk.event.RatelimitExceeded", limit, seq=3 * seq + 1), received_ns=now)
        change = [notice("ApiUpdated", ts)]
        ingestor.ingest(message("tyk.notice.ApiUpdated", change, seq=3 * seq + 2), received_ns=now)
    return compute(ingestor.take())


def sink_snapshot(dsn: str) -> dict[str, list[str]]:
    """Write a flush, the same flush again (same token), and a second flush; read every view."""
    sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=dsn, clickhouse_database="sinkcheck"))
    try:
        sink.setup()
        sink.write(partials(1), "flush-1")
        sink.write(partials(1), "flush-1")
        sink.write(partials(2), "flush-2")
        views = ["traffic_1m", "traffic_1h", "rate_limit_hits_1m", "config_changes_1m", "ingest_health_1m"]
        snapshot = {v: sorted(map(repr, fetch_view(sink.client, "sinkcheck", v))) for v in views}
        snapshot["requests"] = [str(sink.client.command("SELECT sum(requests) FROM sinkcheck.traffic_1m"))]
        return snapshot
    finally:
        sink.close()


def test_sink_over_http_equals_sink_embedded(tmp_path: Path, db_serve: int) -> None:
    over_http = sink_snapshot(f"http://tykpulse:{WRITER_PASSWORD}@127.0.0.1:{db_serve}")
    embedded = sink_snapshot(f"chdb://{tmp_path / 'embedded'}")
    assert over_http == embedded
    assert all(over_http.values())
    # 2 distinct flushes of 200 requests each: the repeated flush-1 landed once
    assert over_http["requests"] == ["400"]


def test_the_database_killed_mid_stream_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """The local worker's write-ahead log over the http:// path, against the real engine.

    `db serve` is SIGKILLed while the worker writes through it (some inserts
    land, some are cut off mid-request, the rest are refused) and restarted
    after a pause on the same directory; the worker retries with the same
    tokens and drains its log. The views equal the ground truth exactly.
    """
    port, firehose = free_port(), free_port()
    path = tmp_path / "shared"

    def serve() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(
            tykpulse(
                "db", "serve", "--path", str(path), "--listen", f"127.0.0.1:{port}",
                "--writer-password", WRITER_PASSWORD,
            )
        )  # fmt: skip
        wait_for_endpoint(port, server)
        return server

    server = serve()
    worker_log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        tykpulse(
            "run", "--firehose", f"@tcp://127.0.0.1:{firehose}",
            "--clickhouse", f"http://tykpulse:{WRITER_PASSWORD}@127.0.0.1:{port}",
            "--flush-interval-s", "0.3", "--sink-retry-initial-s", "0.2", "--sink-retry-max-s", "1",
        ),
        stderr=worker_log,
    )  # fmt: skip
    truth_path = tmp_path / "truth.json"
    sim = None
    try:
        sim = subprocess.Popen(
            tykpulse(
                "simulate", "--connect", f"tcp://127.0.0.1:{firehose}", "--duration", "8",
                "--record-rate", "3000", "--message-records", "50", "--seed", "9", "--truth", str(truth_path),
                "--wait-subscribers-s", "60", "--node", "sim",
            )
        )  # fmt: skip
        reader = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        # system.parts answers before the worker has created its schema; the view would not
        landed = (
            "SELECT count() FROM system.parts WHERE database = 'tykpulse' "
            "AND table = 'traffic_1m_state' AND active"
        )
        # one value: clickhouse_connect's command gives it as int (or str), never a row set or summary
        wait_until(lambda: int(cast("int | str", reader.command(landed))) > 0, "rows to land")
        reader.close()
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        assert sim.wait(timeout=180) == 0  # the rest is sent while the database is away
        server = serve()
        assert stop(worker) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        if sim is not None:
            stop(sim)
        stop(worker)
        stop(server)
        worker_log.close()
    log = (tmp_path / "worker.log").read_text()
    assert "the WAL keeps the data" in log  # the outage was seen, and retried
    truth = json.loads(truth_path.read_text())
    server = serve()
    reader = clickhouse_connect.get_client(host="127.0.0.1", port=port)
    try:
        assert failures(reader, truth) == []
    finally:
        reader.close()
        assert stop(server) == 0


def every_view(client: Any, database: str) -> dict[str, list[str]]:
    views = {v: sorted(map(repr, fetch_view(client, database, v))) for v in view_names()}
    views["publishers"] = sorted(map(repr, client.query(f"SELECT * FROM {database}.publishers").result_rows))
    return views


def reference_views(path: Path) -> dict[str, list[str]]:
    """Every view after partials(1) was written once, to a database of its own."""
    sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=f"chdb://{path}", clickhouse_database="once"))
    try:
        sink.setup()
        sink.write(partials(1), "flush-1")
        return every_view(sink.client, "once")
    finally:
        sink.close()


def serve_on(path: Path, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        tykpulse(
            "db", "serve", "--path", str(path), "--listen", f"127.0.0.1:{port}",
            "--writer-password", WRITER_PASSWORD,
        )
    )  # fmt: skip
    wait_for_endpoint(port, server)
    return server


def test_a_flush_retried_after_the_database_restarts_lands_once(tmp_path: Path) -> None:
    """The first flush a fresh `db serve` takes, sent again after a SIGKILL, lands once in every view.

    The process that creates (or upgrades) a materialized view names it differently in
    its blocks' deduplication ids than every later process (sinks.clickhouse.ddl.
    reattach_statements): without the views attached again, ingest_health and
    publishers doubled here.
    """
    port = free_port()
    server = serve_on(tmp_path / "shared", port)
    dsn = f"http://tykpulse:{WRITER_PASSWORD}@127.0.0.1:{port}"
    settings = ClickHouseSettings(clickhouse_dsn=dsn, clickhouse_database="tykpulse")
    try:
        first = ClickHouseSink(settings)
        first.setup()
        first.write(partials(1), "flush-1")
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        server = serve_on(tmp_path / "shared", port)
        first.write(partials(1), "flush-1")  # the running worker's retry
        first.close()
        restarted = ClickHouseSink(settings)  # and a worker started again, which applies the schema first
        try:
            restarted.setup()
            restarted.write(partials(1), "flush-1")
            got = every_view(restarted.client, "tykpulse")
        finally:
            restarted.close()
        assert stop(server) == 0
    finally:
        stop(server)
    expected = reference_views(tmp_path / "reference")
    assert all(expected[view] for view in ("ingest_health_1m", "publishers", "traffic_1m"))
    assert got == expected


RETRY_EMBEDDED = """
import sys
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink, reattach
from tests.integration.test_serve_processes import partials
sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=sys.argv[1], clickhouse_database="tykpulse"))
sink.setup()
sink.write(partials(1), "flush-1")
sink.close()
"""


def test_a_flush_retried_by_a_restarted_embedded_worker_lands_once(tmp_path: Path) -> None:
    """The same with the embedded engine: each write in a process of its own, the first one creating."""
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    for _ in range(3):
        subprocess.run([sys.executable, "-c", RETRY_EMBEDDED, dsn], check=True, timeout=120)
    sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=dsn, clickhouse_database="tykpulse"))
    try:
        got = every_view(sink.client, "tykpulse")
    finally:
        sink.close()
    expected = reference_views(tmp_path / "reference")
    assert got == expected


def test_a_view_is_attached_again_once_a_query_holding_it_ends(tmp_path: Path) -> None:
    """A schema apply's re-attach racing a query that still holds the view waits it out.

    Seen in CI: `db serve` re-attached a view it had just created while a worker's apply,
    over HTTP, was reading system.tables; the ATTACH was refused with "detached but still
    used by some query. Retry later." and the server stopped. Here a long read holds the
    view while it is detached and attached again.
    """
    port = free_port()
    server = serve_on(tmp_path / "db", port)
    dsn = f"http://tykpulse:{WRITER_PASSWORD}@127.0.0.1:{port}"
    view = "tykpulse.rate_limit_hits_1h_mv"
    try:
        sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=dsn, clickhouse_database="tykpulse"))
        sink.setup()
        reader = clickhouse_connect.get_client(dsn=dsn)
        read: list[object] = []
        holding = threading.Thread(
            target=lambda: read.append(
                reader.command(
                    f"SELECT count() FROM {view}, numbers(400000000) AS n WHERE n.number % 7 = 8",
                    settings={"max_threads": 1},
                )
            )
        )
        holding.start()
        wait_until(lambda: _running(sink.client), "the long read to start", timeout=30)
        reattach(sink.client, view)  # refused (code 57) while the read holds the view, then retried
        holding.join(timeout=120)
        assert read == [0]
        attached = sink.client.command(
            "SELECT count() FROM system.tables WHERE database = 'tykpulse' AND name = 'rate_limit_hits_1h_mv'"
        )
        assert attached == 1
        sink.write(partials(1), "after-reattach")
        rows = sink.client.command("SELECT sum(hits) FROM tykpulse.rate_limit_hits_1h")
        assert rows > 0
        sink.close()
        reader.close()
    finally:
        assert stop(server) == 0


def _running(client: Any) -> bool:
    sql = (
        "SELECT count() FROM system.processes "
        "WHERE query LIKE '%numbers(400000000)%' AND query NOT LIKE '%system.processes%'"
    )
    return bool(client.command(sql))
