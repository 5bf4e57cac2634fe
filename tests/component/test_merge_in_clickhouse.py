"""Partial rollups merge inside the real engine: any split of the stream gives one pass's totals."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pipelines.ingest import Ingestor
from pipelines.keys import KeyHasher
from pipelines.rollups import compute
from pipelines.simulate.verify import fetch_view
from sinks.clickhouse.sink import ClickHouseSink
from tests.conftest import T0_NS
from tests.helpers import analytics, event, message, notice

pytestmark = pytest.mark.component
MINUTE = 60 * 10**9


def workload(seed: int = 7) -> list[list[bytes]]:
    """A fixed mix of records across 3 windows, with late records and several keys."""
    rng = random.Random(seed)
    out = []
    for seq in range(60):
        ts = T0_NS + rng.randrange(3 * MINUTE)
        records = [
            analytics(
                ts + i,
                api=f"api{rng.randrange(4)}",
                code=rng.choice([200, 200, 429, 403, 500]),
                latency=rng.randrange(1, 2000),
            )
            for i in range(20)
        ]
        out.append(message("tyk.analytics", records, seq=3 * seq))
        limits = [
            event("RatelimitExceeded", ts, key=f"k{rng.randrange(30)}", api=f"api{rng.randrange(4)}")
            for _ in range(5)
        ]
        out.append(message("tyk.event.RatelimitExceeded", limits, seq=3 * seq + 1))
        out.append(message("tyk.notice.ApiUpdated", [notice("ApiUpdated", ts)], seq=3 * seq + 2))
    return out


def write(
    sink: ClickHouseSink, messages: list[list[bytes]], token: str, now: int = T0_NS + 5 * MINUTE
) -> None:
    ingestor = Ingestor(clock=lambda: now, hasher=KeyHasher(b"salt"))
    for frames in messages:
        ingestor.ingest(frames, received_ns=now)
    sink.write(compute(ingestor.take()), token)


def snapshot(sink: ClickHouseSink) -> dict[str, Any]:
    views = ["traffic_1m", "traffic_1h", "rate_limit_hits_1m", "rate_limit_hits_1h", "config_changes_1m"]
    return {v: sorted(map(repr, fetch_view(sink.client, sink.database, v))) for v in views}


@pytest.fixture
def one_pass(sink: ClickHouseSink) -> dict[str, Any]:
    write(sink, workload(), "one-pass")
    result = snapshot(sink)
    sink.client.command(f"DROP DATABASE {sink.database} SYNC")
    sink.setup()
    return result


def test_split_flushes_equal_one_pass(sink: ClickHouseSink, one_pass: dict[str, Any]) -> None:
    msgs = workload()
    for i, start in enumerate(range(0, len(msgs), 7)):
        write(sink, msgs[start : start + 7], f"part-{i}")
    assert snapshot(sink) == one_pass


def test_late_records_after_their_window_was_flushed_merge_in(
    sink: ClickHouseSink, one_pass: dict[str, Any]
) -> None:
    msgs = workload()
    on_time, late = msgs[:100], msgs[100:]
    write(sink, on_time, "on-time")
    flushed = snapshot(sink)
    write(sink, late, "late")
    assert flushed != one_pass
    assert snapshot(sink) == one_pass


def test_two_workers_writing_the_same_windows_equal_one_pass(
    sink: ClickHouseSink, one_pass: dict[str, Any]
) -> None:
    msgs = workload()
    write(sink, msgs[0::2], "worker-a-1")
    write(sink, msgs[1::2], "worker-b-1")
    assert snapshot(sink) == one_pass


def test_a_repeated_flush_token_lands_once(sink: ClickHouseSink, one_pass: dict[str, Any]) -> None:
    write(sink, workload(), "same-token")
    write(sink, workload(), "same-token")
    assert snapshot(sink) == one_pass


def test_identical_content_under_different_tokens_is_counted_twice(sink: ClickHouseSink) -> None:
    msgs = [message("tyk.notice.ApiUpdated", [notice("ApiUpdated", T0_NS)])]
    write(sink, msgs, "first")
    write(sink, msgs, "second")
    (row,) = fetch_view(sink.client, sink.database, "config_changes_1m")
    assert row["changes"] == 2


def test_hourly_views_are_rolled_up_inside_clickhouse(sink: ClickHouseSink) -> None:
    msgs = [message("tyk.analytics", [analytics(T0_NS + i * MINUTE) for i in range(3)])]
    write(sink, msgs, "t")
    minutes = fetch_view(sink.client, sink.database, "traffic_1m")
    (hour,) = fetch_view(sink.client, sink.database, "traffic_1h")
    assert len(minutes) == 3
    assert hour["requests"] == 3
    assert hour["window_start"] % 3600 == 0


def test_schema_apply_is_idempotent(sink: ClickHouseSink) -> None:
    write(sink, [message("tyk.analytics", [analytics(T0_NS)])], "t")
    sink.setup()
    sink.setup()
    (row,) = fetch_view(sink.client, sink.database, "traffic_1m")
    assert row["requests"] == 1
