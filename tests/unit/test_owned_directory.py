"""Data directories are the owner's alone: made 0700, and never someone else's link or directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.errors import ConfigurationError
from pipelines.keys import worker_with_key
from pipelines.settings import WorkerSettings
from pipelines.wal.writer import WalWriter
from sinks import owned_directory as owned_module
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


def another_users(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    """Make `paths` another user's: chown them as root, else make this process another user."""
    if os.getuid() == 0:
        for path in paths:
            os.lchown(path, 65534, 65534)
    else:
        pretend_another_user_made(monkeypatch)


def test_a_link_planted_one_level_up_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by a second attack: only the last component was checked, so `shared/data -> victim`
    # planted by another user took `chdb://.../shared/data/clickhouse` into the victim's directory.
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o1777)
    (shared / "data").symlink_to(victim)
    another_users(monkeypatch, shared / "data")
    with pytest.raises(PermissionError, match="is a link of uid"):
        owned_directory(shared / "data" / "clickhouse")
    with pytest.raises(SinkRejectedError, match="is a link of uid"):
        connect(ClickHouseSettings(clickhouse_dsn=f"chdb://{shared / 'data' / 'clickhouse'}"))
    monkeypatch.undo()
    assert list(victim.iterdir()) == []


def test_a_directory_on_the_way_that_others_own_or_may_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)  # not sticky: anyone may rename what is in it
    with pytest.raises(PermissionError, match="may be written by other users"):
        owned_directory(open_to_all / "data" / "clickhouse")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # as /tmp: only an entry's owner may rename it
    assert owned_directory(sticky / "data" / "clickhouse").is_dir()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    another_users(monkeypatch, theirs)
    with pytest.raises(PermissionError, match="who could replace what is in it"):
        owned_directory(theirs / "clickhouse")


def test_links_of_this_users_on_the_way_are_followed(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    (disk / "tykpulse").mkdir(parents=True)
    (tmp_path / "data").symlink_to(disk / "tykpulse")  # absolute
    (tmp_path / "rel").symlink_to("disk/tykpulse")  # relative
    assert owned_directory(tmp_path / "data" / "clickhouse").is_dir()
    assert owned_directory(tmp_path / "rel" / "wal").is_dir()
    assert sorted(p.name for p in (disk / "tykpulse").iterdir()) == ["clickhouse", "wal"]


@pytest.mark.parametrize("umask", [0o000, 0o002])
def test_the_levels_it_makes_on_the_way_are_not_open_to_others_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    # Found by attack: the levels were made with the umask's mode, so under umask 002 (the default
    # of users with a group of their own) `data/` was 0775 and the restart refused the way the first
    # start had made; under 000 it was 0777, and anyone could swap the running worker's log.
    old = os.umask(umask)
    try:
        made = owned_directory(tmp_path / "new" / "data" / "wal")
        assert owned_directory(tmp_path / "new" / "data" / "wal") == made  # a restart
    finally:
        os.umask(old)
    for level in (tmp_path / "new", tmp_path / "new" / "data"):
        assert level.stat().st_mode & 0o022 == 0, oct(level.stat().st_mode)


def test_a_level_made_by_someone_else_while_the_way_was_walked_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A name still free when the way was walked can be taken before it is made: in a sticky /tmp by
    # any user, with a directory they may then empty and refill under the running worker.
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    walk = owned_module._check_the_way

    def walk_then_lose_the_race(directory: Path) -> None:
        walk(directory)
        if not (sticky / "data").exists():
            (sticky / "data").mkdir()
            (sticky / "data").chmod(0o777)

    monkeypatch.setattr(owned_module, "_check_the_way", walk_then_lose_the_race)
    with pytest.raises(PermissionError, match="may be written by other users"):
        owned_directory(sticky / "data" / "clickhouse")
    assert list((sticky / "data").iterdir()) == []


def test_a_first_start_under_umask_002_keeps_its_log_beside_the_key_file_it_made(tmp_path: Path) -> None:
    # Found by attack: `tykpulse run` on a fresh checkout under umask 002 made data/ 0775 for the
    # key file, then refused it for the log (`data may be written by other users`).
    old = os.umask(0o002)
    try:
        worker_with_key(WorkerSettings(), tmp_path / "data")
        writer = WalWriter(tmp_path / "data" / "wal")
        writer.open(0)
        writer.close()
    finally:
        os.umask(old)
    assert (tmp_path / "data").stat().st_mode & 0o022 == 0
