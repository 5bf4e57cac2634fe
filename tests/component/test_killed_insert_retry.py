"""A flush retried after the embedded engine was killed mid-insert lands in every table (real engine).

ClickHouse writes a block's token to the table's deduplication log before it
renames the block's part into place; a kill between the two leaves the token
with no rows, and the retry (same token) was dropped in that table. The state
such a kill leaves is made here exactly: a process writes two flushes and is
SIGKILLed, then the part the second added to traffic_1m is taken off the disk,
as if its rename never happened.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.ingest import Ingestor
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from sinks.clickhouse.dedup_repair import forget_unwritten_blocks
from sinks.clickhouse.serve.engine import ChdbEngine
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.conftest import T0_NS
from tests.helpers import analytics, message

pytestmark = pytest.mark.component

MINUTE_NS = 60 * 10**9


def partials(records: int, minute: int) -> dict[str, object]:
    ingestor = Ingestor(clock=lambda: T0_NS + 10 * MINUTE_NS, hasher=KeyHasher(b"salt"))
    ts = T0_NS + minute * MINUTE_NS
    ingestor.ingest(message("tyk.analytics", [analytics(ts + i) for i in range(records)], seq=minute))
    return compute(ingestor.take())


def table_directory(root: Path, table: str) -> Path:
    return (root / "data" / "tykpulse" / table).resolve()


def take_newest_part_off_disk(root: Path, table: str) -> str:
    """Remove the table's part with the highest block, as a kill before its rename leaves it."""
    directory = table_directory(root, table)
    parts = [p for p in directory.iterdir() if p.is_dir() and p.name[0].isdigit()]
    newest = max(parts, key=lambda p: int(p.name.split("_")[2]))
    shutil.rmtree(newest)
    return newest.name


def requests(sink: ClickHouseSink, table: str) -> int:
    rows = sink.query_rows(f"SELECT sum(requests) FROM tykpulse.{table}")
    return int(rows[0][0] or 0)


def open_sink(root: Path) -> ClickHouseSink:
    sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=f"chdb://{root}", clickhouse_database="tykpulse"))
    sink.setup()
    return sink


WRITE_THEN_WAIT = """
import sys, time
from tests.component.test_killed_insert_retry import open_sink, partials
sink = open_sink(__import__("pathlib").Path(sys.argv[1]))
for n, (records, minute) in enumerate([(3, 0), (5, 1)][: int(sys.argv[2])], start=1):
    sink.write(partials(records, minute), f"flush-{n}")
print("written", flush=True)
time.sleep(600)
"""


def write_then_get_killed(root: Path, flushes: int) -> None:
    """flush-1 (3 records, minute 0) then flush-2 (5, minute 1) from a process then SIGKILLed."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    with subprocess.Popen(
        [sys.executable, "-c", WRITE_THEN_WAIT, str(root), str(flushes)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
    ) as writer:
        try:
            assert writer.stdout is not None
            assert writer.stdout.readline() == b"written\n"
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
    assert (root / "status").exists(), "a killed engine leaves its status file"


def test_a_flush_whose_part_was_never_renamed_lands_when_retried(tmp_path: Path) -> None:
    root = tmp_path / "db"
    write_then_get_killed(root, flushes=2)  # flush-2 is the one in flight at the kill
    take_newest_part_off_disk(root, "traffic_1m_state")

    sink = open_sink(root)  # the restarted worker
    try:
        assert requests(sink, "traffic_1m") == 3, "the part of flush-2 is gone from traffic_1m"
        sink.write(partials(5, minute=1), "flush-2")  # the retry, same token
        assert requests(sink, "traffic_1m") == 8
        assert requests(sink, "traffic_1h") == 8, "where flush-2 had landed, the retry is still dropped"
        sink.write(partials(5, minute=1), "flush-2")  # and a retry after that lands nowhere again
        assert (requests(sink, "traffic_1m"), requests(sink, "traffic_1h")) == (8, 8)
    finally:
        sink.close()


def test_only_unwritten_tokens_are_forgotten_once_and_never_under_a_held_lock(tmp_path: Path) -> None:
    root = tmp_path / "db"
    write_then_get_killed(root, flushes=2)
    lost = take_newest_part_off_disk(root, "traffic_1m_state")
    holder = os.open(root / "status", os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as a running engine holds it
        assert forget_unwritten_blocks(root) == []
    finally:
        os.close(holder)
    forgotten = forget_unwritten_blocks(root)
    assert [(f.table, f.parts) for f in forgotten] == [("tykpulse.traffic_1m_state", (lost,))]
    assert forget_unwritten_blocks(root) == [], "forgotten once"

    sink = open_sink(root)
    try:
        sink.write(partials(3, minute=0), "flush-1")  # written before the kill: dropped everywhere
        sink.write(partials(5, minute=1), "flush-2")  # lands in traffic_1m only
        assert (requests(sink, "traffic_1m"), requests(sink, "traffic_1h")) == (8, 8)
    finally:
        sink.close()
    assert not (root / "status").exists(), "a clean stop leaves nothing to look at"
    assert forget_unwritten_blocks(root) == []


def test_the_served_database_forgets_them_too_when_it_opens_first(tmp_path: Path) -> None:
    # `tykpulse run` starts its endpoint (`db serve`'s engine) before its sink: whichever opens first
    root = tmp_path / "db"
    write_then_get_killed(root, flushes=2)
    lost = take_newest_part_off_disk(root, "traffic_1m_state")
    engine = ChdbEngine(root)
    engine.open()
    engine.close()
    logs = table_directory(root, "traffic_1m_state") / "deduplication_logs"
    assert any(f"2\t{lost}\t" in path.read_text() for path in logs.iterdir())
    sink = open_sink(root)
    try:
        sink.write(partials(5, minute=1), "flush-2")
        assert (requests(sink, "traffic_1m"), requests(sink, "traffic_1h")) == (8, 8)
    finally:
        sink.close()
