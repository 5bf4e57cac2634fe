"""`tykpulse demo` drops only what it owns: never a database named by TYKPULSE_CLICKHOUSE_DSN.

Every step runs in its own process (the demo, and the small scripts that seed
and read the target), as chDB holds a data directory per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness.tykpulse import tykpulse

pytestmark = pytest.mark.integration

SENTINEL = "tykpulse.analyst_notes"

_SQL = """
import json, sys
from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
client = connect(ClickHouseSettings(clickhouse_dsn=sys.argv[1]))
for statement in sys.argv[2:-1]:
    client.command(statement)
print(json.dumps(client.query(sys.argv[-1]).result_rows))
client.close()
"""


def sql(dsn: str, *statements: str) -> Any:
    """Run the statements on `dsn` in a process of their own; the rows of the last one."""
    command = [sys.executable, "-c", _SQL, dsn, *statements]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def seed(dsn: str) -> None:
    """A tykpulse database holding something of value: one row an analyst would miss."""
    sql(
        dsn,
        "CREATE DATABASE IF NOT EXISTS tykpulse",
        f"CREATE TABLE {SENTINEL} (note String) ENGINE = MergeTree ORDER BY note",
        f"INSERT INTO {SENTINEL} VALUES ('keep me')",
        f"SELECT note FROM {SENTINEL}",
    )


def sentinel_tables(dsn: str) -> Any:
    return sql(dsn, "SELECT name FROM system.tables WHERE database = 'tykpulse' AND name = 'analyst_notes'")


def demo(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`tykpulse demo` for one second, in `cwd` (where its own ./data/demo goes)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TYKPULSE_")}
    return subprocess.run(
        tykpulse("demo", "--duration", "1", "--rate", "300", *args),
        cwd=cwd,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def target(tmp_path: Path) -> str:
    dsn = f"chdb://{tmp_path / 'analysts-db'}"
    seed(dsn)
    return dsn


def test_an_exported_dsn_is_not_the_demos_target(tmp_path: Path, target: str) -> None:
    done = demo(tmp_path, env={"TYKPULSE_CLICKHOUSE_DSN": target})
    assert done.returncode == 0, done.stderr
    assert sql(target, f"SELECT note FROM {SENTINEL}") == [["keep me"]]
    demo_dsn = f"chdb://{tmp_path / 'data' / 'demo'}"
    assert sql(demo_dsn, "SELECT sum(requests) > 0 FROM tykpulse.traffic_1m") == [[True]]


def test_an_explicit_dsn_holding_data_is_refused_without_fresh(tmp_path: Path, target: str) -> None:
    done = demo(tmp_path, "--clickhouse", target)
    assert done.returncode != 0
    assert "DROP DATABASE tykpulse" in done.stderr
    assert "--fresh" in done.stderr
    assert sql(target, f"SELECT note FROM {SENTINEL}") == [["keep me"]]


def test_an_explicit_fresh_on_an_explicit_dsn_drops(tmp_path: Path, target: str) -> None:
    done = demo(tmp_path, "--clickhouse", target, "--fresh")
    assert done.returncode == 0, done.stderr
    assert sentinel_tables(target) == []
    assert sql(target, "SELECT sum(requests) > 0 FROM tykpulse.traffic_1m") == [[True]]
