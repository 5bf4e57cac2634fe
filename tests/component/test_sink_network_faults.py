"""The http:// ClickHouse path under network faults: refused, reset, blackholed connections.

The real HTTP client meets a real failing socket; every fault must surface as
SinkUnavailableError (retry, keep the data) within the configured timeouts,
and the write-ahead log written during the fault must drain, exactly, into
embedded ClickHouse afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkUnavailableError
from tests.component.test_wal_flusher import NODE, drain, log_messages, make_flusher
from tests.durability import base_window_s, check_exact
from tests.network_faults import fault_endpoint

pytestmark = pytest.mark.component

MODES = ["refused", "reset", "blackhole"]


def http_settings(port: int) -> ClickHouseSettings:
    return ClickHouseSettings(
        clickhouse_dsn=f"http://default:secret@127.0.0.1:{port}",
        clickhouse_connect_timeout_s=1,
        clickhouse_send_receive_timeout_s=1,
    )


@pytest.mark.parametrize("mode", MODES)
def test_every_network_fault_is_retryable_and_bounded_in_time(mode: str) -> None:
    with fault_endpoint(mode) as (port, server):
        sink = ClickHouseSink(http_settings(port))
        started = time.monotonic()
        with pytest.raises(SinkUnavailableError) as caught:
            sink.setup()
        elapsed = time.monotonic() - started
        sink.close()
        assert server is None or server.accepted >= 1, "the client must have reached the faulty server"
    assert caught.value.retryable
    assert "secret" not in str(caught.value), "credentials never reach an error message"
    assert elapsed < 15, f"{mode}: gave up after {elapsed:.1f}s with 1s timeouts"


@pytest.mark.parametrize("mode", MODES)
def test_the_log_written_during_a_fault_drains_into_embedded_clickhouse(
    mode: str, tmp_path: Path, clickhouse: ClickHouseSettings
) -> None:
    base = base_window_s()
    wal_dir = tmp_path / "wal"
    with fault_endpoint(mode) as (port, _):
        unreachable = ClickHouseSink(http_settings(port))
        flusher = make_flusher(wal_dir, unreachable)
        log_messages(flusher, range(120), base)
        flusher.flush()
        assert flusher.stats.failed_attempts == 1
        assert flusher.backlog == 120
        flusher.close()
        unreachable.close()
    sink = ClickHouseSink(clickhouse)
    flusher = make_flusher(wal_dir, sink)
    drain(flusher)
    flusher.close()
    try:
        assert check_exact(sink.client, sink.database, NODE, base, set(range(120)), 120) == []
    finally:
        sink.close()
