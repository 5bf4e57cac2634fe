"""The Faust worker's runner on the real engine, fed a chunk the way its agent hands one over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from faust.types import TP

from pipelines.firehose.kafka_record import HEADER_BUNDLE, MAX_BUNDLE_MESSAGES, read_envelope, to_record
from pipelines.runners.faust_app import KafkaRollupRunner, Record
from pipelines.settings import FaustWorkerSettings, FirehoseSettings, KafkaSettings, WorkerSettings
from sinks.clickhouse.settings import ClickHouseSettings
from tests.conftest import T0_NS
from tests.helpers import analytics, message

pytestmark = pytest.mark.component
TOPIC = "tyk.events"
MS = 1_000_000
# what the bridge never writes and anyone who may write the topic can: a bundle of empty messages,
# each a frame_count rejection; ~300 bytes with lz4
EMPTY_BUNDLE = msgspec.msgpack.encode([[] for _ in range(MAX_BUNDLE_MESSAGES)])


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[KafkaRollupRunner]:
    clickhouse = ClickHouseSettings(clickhouse_dsn=f"chdb://{tmp_path / 'clickhouse'}")
    worker = WorkerSettings(max_pending_records=100_000, key_hash_salt="salt")  # type: ignore[arg-type]
    built = KafkaRollupRunner(
        KafkaSettings(kafka_topic=TOPIC), FaustWorkerSettings(), worker, clickhouse, FirehoseSettings()
    )
    yield built
    built.close()


def good(offset: int, seq: int) -> Record:
    frames = message("tyk.analytics", [analytics(T0_NS + seq * 10**9 + i) for i in range(4)], seq=seq)
    record = to_record(frames, read_envelope(frames[1]))
    return (TP(TOPIC, 0), offset, T0_NS // MS + seq * 1000, record.value, record.headers)


def empty_bundle(offset: int) -> Record:
    return (TP(TOPIC, 0), offset, T0_NS // MS, EMPTY_BUNDLE, [(HEADER_BUNDLE, b"65536")])


def forged_month(offset: int, months_back: int) -> Record:
    """A message whose Kafka timestamp (its receive time, set by whoever produced it) is a month
    further back for each record."""
    received_ns = T0_NS - months_back * 31 * 86_400 * 10**9
    frames = message("tyk.analytics", [analytics(received_ns)], node="forger", seq=offset)
    record = to_record(frames, read_envelope(frames[1]))
    return (TP(TOPIC, 0), offset, received_ns // MS, record.value, record.headers)


def health(runner: KafkaRollupRunner) -> list[Any]:
    query = (
        f"SELECT node_id, sum(messages), sum(records), sum(rejected) FROM {runner.sink.database}"
        ".ingest_health_1m GROUP BY node_id ORDER BY node_id"
    )
    return [tuple(row) for row in runner.sink.client.query(query).result_rows]


def test_a_chunk_of_bundles_is_flushed_within_the_pending_bound(runner: KafkaRollupRunner) -> None:
    tp = TP(TOPIC, 0)
    runner.processors[tp] = runner._claim(tp, 0)
    chunk = [good(0, 0), *(empty_bundle(offset) for offset in range(1, 9)), good(9, 1)]
    runner.process(chunk)
    assert runner._last_write is not None
    runner._last_write.result()
    # 100,000 rows at most between flushes: a flush after every second bundle of 65,536 rejections,
    # not the whole chunk's 524,288 at once
    assert runner.writer.stats.flushes >= 4
    assert health(runner) == [("", 0, 0, 8 * MAX_BUNDLE_MESSAGES), ("gw1", 2, 8, 0)]
    assert runner.processors[tp].landed_offset == 9


def test_a_flush_spanning_many_months_lands(runner: KafkaRollupRunner) -> None:
    # Found by attack: 150 records a month apart made every insert of their flush fail with
    # "Too many partitions for single INSERT block" (252, retried as a limit), forever.
    tp = TP(TOPIC, 0)
    runner.processors[tp] = runner._claim(tp, 0)
    runner.process([good(0, 0), *(forged_month(offset, offset) for offset in range(1, 151)), good(151, 1)])
    assert runner._last_write is not None
    runner._last_write.result(timeout=120)
    assert runner.processors[tp].landed_offset == 151
    assert health(runner)[-1] == ("gw1", 2, 8, 0)
