"""The durable flush path on the real engine: exactly once through lost acks, crashes, outages.

Counts are checked against the workload's own arithmetic (tests.durability),
window by window: a flush counted twice doubles a window, a lost one empties it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import zmq
from pydantic import SecretStr

from pipelines.delivery import RollupSink, in_key_order
from pipelines.errors import PipelineError
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from pipelines.runners.local import LocalRunner
from pipelines.settings import ArchiveSettings, FirehoseSettings, WalSettings, WorkerSettings
from pipelines.wal.build import build_flusher, build_journal
from pipelines.wal.checkpoint import load_checkpoint
from pipelines.wal.deadletter import DEAD_LETTER_FILE, read_dead_letters
from pipelines.wal.flusher import DurableFlusher
from pipelines.wal.format import LoggedRecords
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkRejectedError, SinkUnavailableError
from tests.durability import base_window_s, check_exact, health, records_of, workload_message
from tests.harness.processes import free_port
from tests.helpers import analytics, message
from tests.sink_faults import Fault, FaultySink

pytestmark = pytest.mark.component
NODE = "gw1"


def make_flusher(directory: Path, sink: RollupSink, **overrides: object) -> DurableFlusher:
    options: dict[str, object] = {
        "wal_dir": str(directory),
        "sink_retry_initial_s": 0.01,
        "sink_retry_max_s": 0.05,
        "wal_segment_bytes": 1 << 16,
        "wal_max_bytes": 1 << 24,
        **overrides,
    }
    wal = WalSettings(**options)  # type: ignore[arg-type]
    worker = WorkerSettings(key_hash_salt=SecretStr("salt"))
    flusher = build_flusher(FirehoseSettings(), worker, wal, sink, directory=directory)
    flusher.open()
    return flusher


def log_messages(flusher: DurableFlusher, seqs: range | list[int], base_s: int) -> None:
    for seq in seqs:
        flusher.append(workload_message(NODE, seq, base_s))
        if seq % 10 == 9:
            flusher.received()
    flusher.received()
    # In the log before the test flushes, as a worker's next flush would find them.
    flusher.wait_logged()


def drain(flusher: DurableFlusher, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not flusher.caught_up():
        assert time.monotonic() < deadline, f"not caught up, backlog={flusher.backlog}"
        flusher.flush()
        time.sleep(0.005)


def switchable_outage(sink: ClickHouseSink) -> tuple[dict[str, bool], FaultySink]:
    """A sink that is down while outage["on"] is set."""
    outage = {"on": False}
    faulty = FaultySink(
        sink, Fault(lambda _n, _name: outage["on"], lambda: SinkUnavailableError("injected: down"))
    )
    return outage, faulty


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


def test_logged_messages_land_exactly_once(sink: ClickHouseSink, wal_dir: Path) -> None:
    base = base_window_s()
    flusher = make_flusher(wal_dir, sink)
    for chunk in (range(0, 40), range(40, 41), range(41, 150)):
        log_messages(flusher, chunk, base)
        drain(flusher)
    flusher.close()
    assert check_exact(sink.client, sink.database, NODE, base, set(range(150)), 150) == []
    checkpoint = load_checkpoint(wal_dir)
    assert checkpoint is not None
    assert (checkpoint.flushed, checkpoint.inflight) == (150, None)
    assert [(p.node, p.last_seq) for p in checkpoint.sequences] == [(NODE, 149)]


def test_a_flush_whose_acknowledgement_was_lost_lands_once(sink: ClickHouseSink, wal_dir: Path) -> None:
    base = base_window_s()
    faulty = FaultySink(
        sink,
        Fault(
            lambda n, _: n in (1, 2, 5), lambda: SinkUnavailableError("injected: timeout"), after_write=True
        ),
    )
    flusher = make_flusher(wal_dir, faulty)
    log_messages(flusher, range(60), base)
    drain(flusher)
    log_messages(flusher, range(60, 90), base)
    drain(flusher)
    flusher.close()
    lost_acks = [c for c in faulty.calls if c[2] == "landed, ack lost"]
    assert len(lost_acks) == 3
    for token, name, _ in lost_acks:
        assert (token, name, "ok") in faulty.calls, "the retry must reuse the token"
    assert check_exact(sink.client, sink.database, NODE, base, set(range(90)), 90) == []


def test_the_checkpoint_moves_only_once_the_written_flush_is_durable(
    sink: ClickHouseSink, wal_dir: Path
) -> None:
    base = base_window_s()
    # at each sync: (records in traffic_1m, the checkpoint's flushed position)
    synced: list[tuple[int, int]] = []
    failures = [OSError(5, "Input/output error")]

    def make_durable() -> None:
        checkpoint = load_checkpoint(wal_dir)
        assert checkpoint is not None
        rows = sink.query_rows(f"SELECT sum(requests) FROM {sink.database}.traffic_1m")
        synced.append((int(rows[0][0] or 0), checkpoint.flushed))
        if failures:
            raise failures.pop()

    def durable_flusher() -> DurableFlusher:
        wal = WalSettings(wal_dir=str(wal_dir), sink_retry_initial_s=0.01, sink_retry_max_s=0.05)
        worker = WorkerSettings(key_hash_salt=SecretStr("salt"))
        flusher = build_flusher(
            FirehoseSettings(), worker, wal, sink, directory=wal_dir, make_durable=make_durable
        )
        flusher.open()
        return flusher

    flusher = durable_flusher()
    log_messages(flusher, range(20), base)
    records = sum(records_of(seq) for seq in range(20))
    # Sending it again would land nowhere (ClickHouse has the token): the worker stops instead.
    with pytest.raises(PipelineError, match=r"the disk failed .* log positions 0-20 kept"):
        flusher.flush()
    flusher.close()
    checkpoint = load_checkpoint(wal_dir)
    assert checkpoint is not None
    assert checkpoint.flushed == 0, "the log keeps a flush its disk may have lost"
    assert synced == [(records, 0)], "synced after the inserts, before the checkpoint moved"

    flusher = durable_flusher()  # restarted on a sound disk
    drain(flusher)
    flusher.close()
    checkpoint = load_checkpoint(wal_dir)
    assert checkpoint is not None
    assert checkpoint.flushed == 20
    assert synced[1:] == [(records, 0)]
    assert check_exact(sink.client, sink.database, NODE, base, set(range(20)), 20) == []


def test_the_worker_syncs_its_embedded_database_before_each_commit(
    clickhouse: ClickHouseSettings, wal_dir: Path
) -> None:
    sink = ClickHouseSink(clickhouse)
    settings = WorkerSettings(key_hash_salt=SecretStr("salt"))
    journal = build_journal(
        FirehoseSettings(),
        settings,
        WalSettings(wal_dir=str(wal_dir)),
        ArchiveSettings(),
        clickhouse,
        sink,
    )
    assert isinstance(journal, DurableFlusher)
    assert journal.make_durable == sink.make_durable
    sink.setup()
    try:
        assert sink._sync is not None, "the embedded database's filesystem is held from the start"
        embedded = sink.target.embedded_path
        assert embedded is not None
        assert os.fstat(sink._sync._fd or -1).st_ino == os.stat(embedded).st_ino
    finally:
        sink.close()


def test_a_flush_that_never_reached_clickhouse_is_retried(sink: ClickHouseSink, wal_dir: Path) -> None:
    base = base_window_s()
    faulty = FaultySink(sink, Fault(lambda n, _: n <= 4, lambda: SinkUnavailableError("injected: refused")))
    flusher = make_flusher(wal_dir, faulty)
    log_messages(flusher, range(30), base)
    drain(flusher)
    flusher.close()
    assert flusher.stats.failed_attempts == 4
    assert check_exact(sink.client, sink.database, NODE, base, set(range(30)), 30) == []


def test_an_outage_keeps_the_backlog_on_disk_and_drains_it_in_order(
    sink: ClickHouseSink, wal_dir: Path
) -> None:
    base = base_window_s()
    outage, faulty = switchable_outage(sink)
    outage["on"] = True
    faulty.fail_setup = 1  # started while ClickHouse is down: nothing is decoded as logged
    flusher = make_flusher(wal_dir, faulty, wal_flush_max_bytes=4_000)
    for chunk in range(0, 400, 50):
        log_messages(flusher, range(chunk, chunk + 50), base)
        time.sleep(0.02)  # past the retry delay of the setup that failed
        flusher.flush()
        flight = flusher._flight
        assert flight is not None
        assert flight.range.start == 0, "nothing may be committed during the outage"
        assert flight.range.end - flight.range.start <= 40, "memory holds one bounded range"
    assert flusher.backlog == 400
    outage["on"] = False
    drain(flusher)
    flusher.close()
    starts = [int(token.split("-")[1]) for token, _, outcome in faulty.calls if outcome == "ok"]
    assert starts == sorted(starts), "the backlog drains in log order"
    assert len(set(starts)) > 10
    assert check_exact(sink.client, sink.database, NODE, base, set(range(400)), 400) == []


def test_once_caught_up_records_are_decoded_as_logged_under_the_token_a_read_back_gives(
    sink: ClickHouseSink, wal_dir: Path
) -> None:
    """A live range is the log's range: a restart that reads it back sends the same token and rows."""
    base = base_window_s()
    outage, faulty = switchable_outage(sink)
    first = make_flusher(wal_dir, faulty)
    log_messages(first, range(20), base)
    drain(first)
    assert (first.stats.read_back_ranges, first.stats.live_ranges) == (0, 1), (
        "decoded as logged from the start"
    )
    outage["on"] = True
    log_messages(first, range(20, 50), base)
    first.flush()
    live = first._flight
    assert live is not None
    assert first.stats.live_ranges == 2
    assert (live.range.start, live.range.end) == (20, 50)
    first.close()  # as if the process died with the range in flight
    outage["on"] = False
    second = make_flusher(wal_dir, faulty)
    second.flush()
    assert second.stats.read_back_ranges == 1
    assert [token for token, _, outcome in faulty.calls if outcome == "ok"][-3:] == [live.token] * 3
    drain(second)
    second.close()
    assert check_exact(sink.client, sink.database, NODE, base, set(range(50)), 50) == []


def test_the_receiver_waits_for_a_slow_flusher_but_never_for_a_failing_one(
    sink: ClickHouseSink, wal_dir: Path
) -> None:
    """Decoded records are bounded as without a log; during an outage the log takes everything."""
    base = base_window_s()
    outage, faulty = switchable_outage(sink)
    flusher = make_flusher(wal_dir, faulty)
    flusher.ingestor.max_pending_records = 30
    log_messages(flusher, range(5), base)
    drain(flusher)
    assert flusher.wait_for_room(0)
    log_messages(flusher, range(5, 25), base)  # 80 records decoded as logged
    assert flusher.ingestor.pending_records >= 30
    assert not flusher.wait_for_room(0.01), "the receiver waits while the flusher is behind"
    flusher.flush()
    assert flusher.wait_for_room(0)
    log_messages(flusher, range(25, 45), base)
    outage["on"] = True
    flusher.flush()  # fails: the live range closes
    assert flusher.wait_for_room(0), "during an outage the log takes what arrives"
    log_messages(flusher, range(45, 200), base)
    assert flusher.ingestor.pending_records == 0, "nothing decoded waits in memory during the outage"
    outage["on"] = False
    drain(flusher)
    log_messages(flusher, range(200, 210), base)
    drain(flusher)
    flusher.close()
    # Read back: [45, 200) after the outage; live: the rest, from the first record on.
    assert (flusher.stats.read_back_ranges, flusher.stats.live_ranges) == (1, 4)
    assert check_exact(sink.client, sink.database, NODE, base, set(range(210)), 210) == []


def test_an_insert_refused_for_good_goes_to_the_dead_letter_file(sink: ClickHouseSink, wal_dir: Path) -> None:
    base = base_window_s()
    faulty = FaultySink(
        sink,
        Fault(lambda _, name: name == "traffic", lambda: SinkRejectedError("injected: bad type", code=53)),
    )
    flusher = make_flusher(wal_dir, faulty, sink_refusals_before_dead_letter=3)
    log_messages(flusher, range(25), base)
    drain(flusher)
    flusher.close()
    letters = read_dead_letters(wal_dir / DEAD_LETTER_FILE)
    assert len(letters) == 1
    assert letters[0]["code"] == 53
    assert "injected: bad type" in letters[0]["reason"]
    assert sum(row["requests"] for row in letters[0]["rows"]) == sum(records_of(s) for s in range(25))
    assert [c[2] for c in faulty.calls if c[1] == "traffic"] == ["failed"] * 3
    assert health(sink.client, sink.database)[NODE][:2] == (25, sum(records_of(s) for s in range(25)))
    assert sink.query_rows(f"SELECT count() FROM {sink.database}.traffic_1m") == [(0,)]


def test_a_restart_writes_what_the_log_held(sink: ClickHouseSink, wal_dir: Path) -> None:
    base = base_window_s()
    first = make_flusher(wal_dir, FaultySink(sink, fail_setup=1_000))
    log_messages(first, range(70), base)
    first.flush()
    first.close()
    second = make_flusher(wal_dir, sink)
    assert second.backlog == 70
    drain(second)
    second.close()
    assert check_exact(sink.client, sink.database, NODE, base, set(range(70)), 70) == []


def test_messages_missed_while_down_count_as_lost_after_restart(sink: ClickHouseSink, wal_dir: Path) -> None:
    base = base_window_s()
    first = make_flusher(wal_dir, sink)
    log_messages(first, range(50), base)
    drain(first)
    first.close()
    second = make_flusher(wal_dir, sink)
    log_messages(second, range(63, 100), base)
    drain(second)
    second.close()
    received = set(range(50)) | set(range(63, 100))
    assert check_exact(sink.client, sink.database, NODE, base, received, 100) == []
    assert health(sink.client, sink.database)[NODE][2] == 13


def test_made_up_publishers_cannot_grow_the_checkpoint_past_the_trackers_bound(
    sink: ClickHouseSink, wal_dir: Path
) -> None:
    """A sender naming a new (node, boot) in every message, a few per flush, stayed in every
    checkpoint for a week: one line each, written twice per flush and restored at every start."""
    base = base_window_s()
    flusher = make_flusher(wal_dir, sink)
    flusher.ingestor.sequences.max_incarnations = 20
    for round_ in range(6):
        log_messages(flusher, range(round_ * 10, round_ * 10 + 10), base)
        for i in range(10):
            flusher.append(message("tyk.analytics", [], node=f"made-up-{round_}-{i}", boot=i, seq=0))
        flusher.received()
        flusher.wait_logged()
        drain(flusher)
        for i in range(10):  # silent since: a worker's liveness tracking forgets them (on_forget)
            flusher.ingestor.sequences.forget(f"made-up-{round_}-{i}", i)
    flusher.close()
    checkpoint = load_checkpoint(wal_dir)
    assert checkpoint is not None
    assert len(checkpoint.sequences) <= 20
    assert [p.last_seq for p in checkpoint.sequences if p.node == NODE] == [59]
    restarted = make_flusher(wal_dir, sink)
    assert len(restarted.ingestor.sequences) <= 20
    restarted.close()


CRASHING_CHILD = """
import os, sys
from pathlib import Path
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from tests.component.test_wal_flusher import NODE, log_messages, make_flusher
from tests.sink_faults import Fault, FaultySink

crash_after, dsn, database, wal_dir, base = sys.argv[1:]
sink = ClickHouseSink(ClickHouseSettings(clickhouse_dsn=dsn, clickhouse_database=database))
die = Fault(lambda n, _: n == int(crash_after), lambda: os._exit(17), after_write=True)
flusher = make_flusher(Path(wal_dir), FaultySink(sink, die))
log_messages(flusher, range(0, 40), int(base))
flusher.flush()
log_messages(flusher, range(40, 80), int(base))
flusher.flush()
sys.exit(0)
"""


# Each flush of these messages inserts traffic, ingest_health and publishers partials.
INSERTS_PER_FLUSH = 3


# First, middle and last insert of the first flush, and first and last of the second.
@pytest.mark.parametrize("crash_after", [1, 2, 3, 4, 6])
def test_a_crash_between_landing_and_checkpoint_is_not_counted_twice(
    clickhouse: ClickHouseSettings, wal_dir: Path, crash_after: int
) -> None:
    """The process dies (os._exit) right after ClickHouse took the crash_after-th insert."""
    base = base_window_s()
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(CRASHING_CHILD),
            str(crash_after),
            clickhouse.clickhouse_dsn,
            clickhouse.clickhouse_database,
            str(wal_dir),
            str(base),
        ],
        cwd=Path(__file__).parents[2],
        timeout=120,
        check=False,
    )
    assert child.returncode == 17
    checkpoint = load_checkpoint(wal_dir)
    assert checkpoint is not None
    assert checkpoint.inflight is not None, "the crash happened with a flush in flight"
    sink = ClickHouseSink(clickhouse)
    flusher = make_flusher(wal_dir, sink)
    if crash_after <= INSERTS_PER_FLUSH:  # it died in the first flush: the rest arrives after the restart
        log_messages(flusher, range(40, 80), base)
    drain(flusher)
    flusher.close()
    try:
        assert check_exact(sink.client, sink.database, NODE, base, set(range(80)), 80) == []
    finally:
        sink.close()


def test_a_server_that_lost_the_schema_gets_it_again_and_nothing_is_dead_lettered(
    sink: ClickHouseSink, wal_dir: Path
) -> None:
    base = base_window_s()
    flusher = make_flusher(wal_dir, sink, sink_refusals_before_dead_letter=1)
    log_messages(flusher, range(10), base)
    drain(flusher)
    sink.client.command(f"DROP DATABASE {sink.database} SYNC")
    log_messages(flusher, range(10, 30), base)
    drain(flusher)
    flusher.close()
    assert read_dead_letters(wal_dir / DEAD_LETTER_FILE) == []
    assert flusher.stats.failed_attempts >= 1
    assert check_exact(sink.client, sink.database, NODE, base, set(range(10, 30)), 20) == []


def test_a_retry_spanning_several_partitions_lands_once_in_any_row_order(sink: ClickHouseSink) -> None:
    """What exactly-once relies on in the engine: the token, not the row order, identifies a flush."""
    months = [1_788_000_000, 1_790_700_000, 1_793_300_000, 1_795_774_500]  # four monthly partitions
    # Months apart, so the record-age bound is lifted: this test is about the engine.
    ingestor = Ingestor(clock=lambda: 1_795_774_600 * 10**9, max_past_ns=10**18)
    for seq, second in enumerate(months):
        ingestor.ingest(workload_message(NODE, 0, second, boot=seq + 1), received_ns=second * 10**9)
    partial = compute(ingestor.take())["traffic"]
    sink.write({"traffic": in_key_order("traffic", partial)}, "one-flush")
    rows = list(range(partial.num_rows))
    for _ in range(4):
        random.shuffle(rows)
        sink.write({"traffic": partial.take(pa.array(rows, pa.int64()))}, "one-flush")
    parts = sink.query_rows(
        f"SELECT uniqExact(partition) FROM system.parts WHERE database = '{sink.database}' "
        "AND table = 'traffic_1m_state' AND active"
    )
    assert parts == [(4,)]
    assert sink.query_rows(f"SELECT sum(requests) FROM {sink.database}.traffic_1m") == [(4 * records_of(0),)]


def test_a_worker_busy_from_its_first_second_decodes_as_it_logs(sink: ClickHouseSink, wal_dir: Path) -> None:
    """No flush is ever idle under a busy firehose, so a fresh log goes live when it opens.

    Otherwise the worker read its log back from the first flush on, and under full load
    the read-back never caught up with the log's end (the bench found it).
    """
    base = base_window_s()
    flusher = make_flusher(wal_dir, sink)
    for chunk in range(0, 300, 50):
        log_messages(flusher, range(chunk, chunk + 50), base)  # more arrives before every flush
        flusher.flush()
        assert flusher._flight is None
    flusher.close()
    assert (flusher.stats.read_back_ranges, flusher.stats.live_ranges) == (0, 6)
    assert check_exact(sink.client, sink.database, NODE, base, set(range(300)), 300) == []


def test_a_worker_whose_log_stage_died_stops_with_the_reason(
    zmq_context: zmq.Context[Any], sink: ClickHouseSink, wal_dir: Path
) -> None:
    """Never a worker that flushes on, looking healthy, while nothing is received."""
    port = free_port()
    firehose = FirehoseSettings(firehose=[f"tcp://127.0.0.1:{port}"])
    worker = WorkerSettings(key_hash_salt=SecretStr("salt"), flush_interval_s=0.1)
    flusher = build_flusher(firehose, worker, WalSettings(wal_dir=str(wal_dir)), sink, directory=wal_dir)

    def broken_disk(records: LoggedRecords) -> None:
        msg = "injected: the log stage broke"
        raise OSError(msg)

    flusher._logged = broken_disk  # type: ignore[method-assign]
    runner = LocalRunner(firehose, worker, sink, context=zmq_context, journal=flusher)
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(stop)
        except PipelineError as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    publisher = FirehosePublisher(zmq_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node=NODE)
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        publisher.publish("tyk.analytics", [analytics(time.time_ns())])
        time.sleep(0.01)
    stop.set()
    thread.join(10)
    publisher.close()
    assert not thread.is_alive()
    assert failure, "run() must raise"
    assert "receiver stopped" in str(failure[0])
    assert "injected: the log stage broke" in str(failure[0])
