"""Data directories are the owner's alone: made 0700, and never someone else's link or directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.errors import ConfigurationError
from pipelines.wal.writer import WalWriter
from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.errors import SinkRejectedError
from sinks.owned_directory import owned_directory

pytestmark = pytest.mark.unit


def test_a_new_directory_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = owned_directory(tmp_path / "data" / "clickhouse")
    finally:
        os.umask(old)
    assert made.stat().st_mode & 0o777 == 0o700


def test_an_existing_directory_of_this_user_is_made_owner_only(tmp_path: Path) -> None:
    # Found by attack: the embedded database was 0755 with 0644 files; any local user copied all
    # of it (rollups and the raw-event archive) past `db serve`'s passwords.
    existing = tmp_path / "clickhouse"
    existing.mkdir(mode=0o755)
    (existing / "part.bin").write_bytes(b"rows")
    owned_directory(existing)
    assert existing.stat().st_mode & 0o777 == 0o700


def test_a_link_of_this_users_to_its_own_directory_is_kept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "fast-disk"
    elsewhere.mkdir()
    (tmp_path / "wal").symlink_to(elsewhere)
    owned_directory(tmp_path / "wal")
    assert elsewhere.stat().st_mode & 0o777 == 0o700


def pretend_another_user_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """What this process made now looks like another user's (no root needed to test the refusal)."""
    me = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: me + 1)


def test_a_link_or_directory_planted_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by attack: `shared/clickhouse.wal -> victim/` planted by another user made the worker
    # chmod the victim's directory 0700 and write its segments, LOCK and checkpoint into it.
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    (tmp_path / "clickhouse.wal").symlink_to(victim)
    (tmp_path / "clickhouse").mkdir(mode=0o755)
    pretend_another_user_made(monkeypatch)
    with pytest.raises(PermissionError, match="belongs to uid"):
        owned_directory(tmp_path / "clickhouse.wal")
    with pytest.raises(ConfigurationError, match="WAL directory"):
        WalWriter(tmp_path / "clickhouse.wal").open(0)
    with pytest.raises(SinkRejectedError, match="belongs to uid"):
        connect(ClickHouseSettings(clickhouse_dsn=f"chdb://{tmp_path / 'clickhouse'}"))
    monkeypatch.undo()
    assert victim.stat().st_mode & 0o777 == 0o755  # untouched
    assert list(victim.iterdir()) == []


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "wal").write_text("")
    with pytest.raises(PermissionError, match="not a directory"):
        owned_directory(tmp_path / "wal")
