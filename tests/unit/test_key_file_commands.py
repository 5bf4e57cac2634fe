"""run, worker and rebuild find the same key file on the same data, so their digests agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelines.cli.commands.rebuild import command as rebuild_command
from pipelines.errors import ConfigurationError
from pipelines.keys import KEY_FILE_NAME, KeyHasher, worker_with_key
from pipelines.settings import WalSettings, WorkerSettings
from pipelines.wal.build import key_directory, wal_directory
from sinks.clickhouse.settings import ClickHouseSettings


def run_key(clickhouse: ClickHouseSettings, wal: WalSettings) -> bytes:
    """What `tykpulse run` resolves (pipelines/cli/commands/run.py)."""
    worker = worker_with_key(WorkerSettings(), wal_directory(wal, clickhouse).parent)
    return worker.key_hash_salt.get_secret_value().encode()


def test_rebuild_and_worker_read_the_key_run_created(tmp_path: Path) -> None:
    clickhouse = ClickHouseSettings(clickhouse_dsn=f"chdb://{tmp_path / 'db'}")
    created = run_key(clickhouse, WalSettings())
    assert (tmp_path / KEY_FILE_NAME).exists()
    rebuild = worker_with_key(WorkerSettings(), key_directory(clickhouse), create=False)
    faust_worker = worker_with_key(WorkerSettings(), key_directory(clickhouse))
    for settings in (rebuild, faust_worker):
        salt = settings.key_hash_salt.get_secret_value().encode()
        assert salt == created
        assert KeyHasher(salt).hash("raw-key") == KeyHasher(created).hash("raw-key")


def test_a_wal_dir_from_the_environment_moves_the_key_for_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TYKPULSE_WAL_DIR", str(tmp_path / "state" / "wal"))
    clickhouse = ClickHouseSettings(clickhouse_dsn="http://ch:8123/")
    assert key_directory(clickhouse) == wal_directory(WalSettings(), clickhouse).parent == tmp_path / "state"


def test_rebuild_never_invents_a_key(tmp_path: Path) -> None:
    clickhouse = ClickHouseSettings(clickhouse_dsn=f"chdb://{tmp_path / 'db'}")
    with pytest.raises(ConfigurationError, match="no key file"):
        worker_with_key(WorkerSettings(), key_directory(clickhouse), create=False)
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_rebuild_command_refuses_without_the_workers_key(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        rebuild_command,
        ["--from", "0", "--to", "3600", "--clickhouse", f"chdb://{tmp_path / 'db'}"],
        env={"TYKPULSE_KEY_HASH_SALT": None, "TYKPULSE_WAL_DIR": None},
    )
    assert result.exit_code == 2, result.output
    assert "no key file" in result.output
    assert not (tmp_path / "db").exists()  # refused before opening the database
