"""analyst.connect(): the DSN from the environment, else a running tykpulse endpoint, else embedded."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.analyst import connect, running_endpoint, settings_for
from sinks.clickhouse.serve import ClickHouseHttpServer, ServeSettings
from tests.harness.processes import free_port

pytestmark = pytest.mark.component


def test_explicit_and_environment_dsn_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TYKPULSE_CLICKHOUSE_DSN", "http://example.invalid:8123")
    assert settings_for().clickhouse_dsn == "http://example.invalid:8123"
    assert settings_for("chdb:///tmp/x").clickhouse_dsn == "chdb:///tmp/x"


def test_a_running_endpoint_is_found_and_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.delenv("TYKPULSE_CLICKHOUSE_DSN", raising=False)
    monkeypatch.setenv("TYKPULSE_SERVE_LISTEN", f"127.0.0.1:{port}")
    assert running_endpoint() is None
    assert settings_for().clickhouse_dsn.startswith("chdb://")
    with ClickHouseHttpServer(tmp_path / "db", ServeSettings()):
        assert running_endpoint() == f"http://127.0.0.1:{port}"
        client = connect()
        try:
            assert client.command("SELECT 41 + 1") == 42
        finally:
            client.close()
