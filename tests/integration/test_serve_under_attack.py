"""A reader flooding the served database with KILL QUERY while a real worker ingests.

Before the reader gate, an anonymous reader looping `KILL QUERY WHERE query
ILIKE 'INSERT INTO tykpulse.%' ASYNC` cancelled the worker's inserts and the
rows went to the dead-letter file. Now every such request is refused, and the
views equal the simulator's ground truth exactly.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import urllib.parse
from collections import Counter
from pathlib import Path

import clickhouse_connect
import pytest

from tests.harness.processes import free_port
from tests.harness.tykpulse import tykpulse, wait_for_endpoint, wait_until
from tests.integration.test_serve_processes import failures, messages_landed, simulate, stop

pytestmark = pytest.mark.integration

KILLS = [
    "KILL QUERY WHERE query ILIKE 'INSERT INTO tykpulse.%' ASYNC",
    "kill query where 1 async",
    "SELECT 1; KILL QUERY WHERE 1 ASYNC",
    "EXPLAIN AST KILL QUERY WHERE 1",
    "/* ' */ KILL QUERY WHERE user = 'default' SYNC",
]


class KillFlood(threading.Thread):
    """Sends KILL QUERY spellings as an anonymous reader until stopped; counts the answers."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.answers: Counter[tuple[int, str]] = Counter()
        self.done = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self.done.is_set():
                for sql in KILLS:
                    conn.request("POST", "/?" + urllib.parse.urlencode({"query": sql}))
                    response = conn.getresponse()
                    response.read()
                    code = response.getheader("X-ClickHouse-Exception-Code") or ""
                    self.answers[(response.status, code)] += 1
        finally:
            conn.close()


def test_a_kill_query_flood_leaves_every_view_exact(tmp_path: Path) -> None:
    firehose, serve = free_port(), free_port()
    data = tmp_path / "clickhouse"
    worker = subprocess.Popen(
        tykpulse(
            "run",
            "--firehose",
            f"@tcp://127.0.0.1:{firehose}",
            "--clickhouse",
            f"chdb://{data}",
            "--flush-interval-s",
            "0.2",
            "--serve",
            f"127.0.0.1:{serve}",
        )
    )
    flood = KillFlood(serve)
    try:
        wait_for_endpoint(serve, worker)
        flood.start()
        simulate(firehose, tmp_path / "truth.json")
        truth = json.loads((tmp_path / "truth.json").read_text())
        reader = clickhouse_connect.get_client(host="127.0.0.1", port=serve)
        try:
            wait_until(lambda: messages_landed(reader, truth), "every message to land")
            flood.done.set()
            flood.join(timeout=60)
            assert failures(reader, truth) == []
        finally:
            reader.close()
        assert stop(worker) == 0
    finally:
        flood.done.set()
        stop(worker)
    assert sum(flood.answers.values()) >= 100, flood.answers
    # refused as ACCESS_DENIED, or as a syntax error where two statements were sent in one
    assert set(flood.answers) <= {(403, "497"), (400, "62")}, flood.answers
    wal = tmp_path / "clickhouse.wal"
    assert wal.is_dir()
    dead_letters = wal / "dead-letter.jsonl"
    assert not dead_letters.exists() or not dead_letters.read_text().strip()
