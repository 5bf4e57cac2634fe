"""The http:// ClickHouse path under network faults: refused, reset, blackholed connections.

The real HTTP client meets a real failing socket; every fault must surface as
SinkUnavailableError (retry, keep the data) within the configured timeouts,
and the write-ahead log written during the fault must drain, exactly, into
embedded ClickHouse afterwards.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from urllib3.exceptions import InsecureRequestWarning

from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkUnavailableError
from tests.component.test_wal_flusher import NODE, drain, log_messages, make_flusher
from tests.durability import base_window_s, check_exact
from tests.network_faults import fault_endpoint, self_signed_certificate, tls_endpoint

pytestmark = pytest.mark.component

MODES = ["refused", "reset", "blackhole"]


def http_settings(port: int, scheme: str = "http", **tls: object) -> ClickHouseSettings:
    return ClickHouseSettings(
        clickhouse_dsn=f"{scheme}://default:secret@127.0.0.1:{port}",
        clickhouse_connect_timeout_s=1,
        clickhouse_send_receive_timeout_s=1,
        **tls,  # type: ignore[arg-type]
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
        # open() tried the schema and failed; flush() tries again only if its 10 ms backoff has passed
        # (on a loaded machine it has): one attempt or two, none written
        assert flusher.stats.failed_attempts in (1, 2)
        assert flusher.stats.flushes == 0
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


@pytest.mark.parametrize(
    ("tls", "handshake"),
    [({}, False), ({"clickhouse_verify_tls": False}, True), ({"clickhouse_ca_cert": "CERT"}, True)],
)
def test_https_verifies_the_server_certificate_unless_told_otherwise(
    tmp_path: Path, tls: dict[str, object], handshake: bool
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    options = {k: str(cert) if v == "CERT" else v for k, v in tls.items()}
    insecure = options.get("clickhouse_verify_tls") is False
    warns = pytest.warns(InsecureRequestWarning) if insecure else contextlib.nullcontext()
    with tls_endpoint(cert, key) as server:
        sink = ClickHouseSink(http_settings(server.port, "https", **options))
        with pytest.raises(SinkUnavailableError) as caught, warns:
            sink.setup()
        sink.close()
    assert (server.handshakes >= 1) == handshake, (
        "the handshake completes only with verify off or the CA given"
    )
    assert ("CERTIFICATE_VERIFY_FAILED" in str(caught.value)) != handshake
