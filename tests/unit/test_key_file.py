"""The per-deployment key of API-key digests: generated once, kept 0600, shared by file or env."""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipelines.bridges.key_digest import KeyDigester
from pipelines.errors import ConfigurationError
from pipelines.keys import KEY_FILE_NAME, KeyHasher, bridge_with_key, load_key, worker_with_key
from pipelines.settings import TykBridgeSettings, WorkerSettings

pytestmark = pytest.mark.unit
ENV = "TYKPULSE_KEY_HASH_SALT"


def test_first_start_creates_a_private_key_file_and_says_how_to_share_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pipelines.keys")
    key = load_key(SecretStr(""), False, tmp_path / KEY_FILE_NAME, ENV)
    path = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.fullmatch(r"[0-9a-f]{64}", path.read_text().strip())
    assert key == path.read_text().strip().encode()
    assert ENV in caplog.text
    assert key.decode() not in caplog.text  # the key itself is never logged


def test_a_second_start_reuses_the_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    worker = WorkerSettings()
    first = worker_with_key(worker, tmp_path)
    caplog.set_level(logging.INFO, logger="pipelines.keys")
    second = worker_with_key(worker, tmp_path)
    assert "generated" not in caplog.text  # logged once, at the first start
    salt = first.key_hash_salt.get_secret_value().encode()
    assert salt
    assert salt == second.key_hash_salt.get_secret_value().encode()
    assert KeyHasher(salt).hash("k") == KeyHasher(second.key_hash_salt.get_secret_value().encode()).hash("k")


def test_bridges_share_a_key_file_and_digest_alike(tmp_path: Path) -> None:
    path = str(tmp_path / "state" / KEY_FILE_NAME)
    one = bridge_with_key(TykBridgeSettings(key_hash_salt_file=path))
    two = bridge_with_key(TykBridgeSettings(key_hash_salt_file=path))
    digests = {KeyDigester(s.key_hash_salt.get_secret_value().encode()).digest("raw-key") for s in (one, two)}
    assert len(digests) == 1
    assert digests != {KeyDigester().digest("raw-key")}


def test_an_explicit_key_wins_and_no_file_is_written(tmp_path: Path) -> None:
    worker = worker_with_key(WorkerSettings(key_hash_salt=SecretStr("chosen")), tmp_path)
    assert worker.key_hash_salt.get_secret_value() == "chosen"
    assert not (tmp_path / KEY_FILE_NAME).exists()


def test_an_explicit_empty_key_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = worker_with_key(WorkerSettings(key_hash_salt=SecretStr("")), tmp_path)
    assert worker.key_hash_salt.get_secret_value() == ""
    assert not (tmp_path / KEY_FILE_NAME).exists()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "public hash" in caplog.text


def test_a_key_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text("a" * 64 + "\n")
    path.chmod(0o644)
    assert load_key(SecretStr(""), False, path, ENV) == b"a" * 64
    assert "readable by group or others" in caplog.text


def _start(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        results.put(load_key(SecretStr(""), False, Path(path), "TYKPULSE_KEY_HASH_SALT").decode())
    except Exception as exc:  # reported to the test, which fails on it
        results.put(f"error: {exc}")


def test_processes_starting_together_all_get_the_one_key_created(tmp_path: Path) -> None:
    """Seen in CI: a worker read the key file another had created but not yet written ("empty")."""
    context = multiprocessing.get_context("fork")
    starters = 6
    for attempt in range(25):
        path = tmp_path / str(attempt) / KEY_FILE_NAME
        barrier, results = context.Barrier(starters), context.Queue()
        processes = [
            context.Process(target=_start, args=(str(path), barrier, results)) for _ in range(starters)
        ]
        for process in processes:
            process.start()
        keys = [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert len(set(keys)) == 1, keys
        assert keys[0] == path.read_text().strip()
        assert sorted(p.name for p in path.parent.iterdir()) == [KEY_FILE_NAME]  # no draft left behind


def another_users(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    """Make `paths` another user's: chown them as root, else make this process another user."""
    if os.getuid() == 0:
        for path in paths:
            os.lchown(path, 65534, 65534)
    else:
        me = os.getuid()
        monkeypatch.setattr(os, "getuid", lambda: me + 1)


def test_a_key_file_another_user_planted_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found by attack: beside `--wal-dir /tmp/wal` the key file is /tmp's; another user created it
    # first (0644, a salt of their choosing), the worker took it with a warning, and every digest
    # in the archive could be computed from guessed API keys.
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    planted = sticky / KEY_FILE_NAME
    planted.write_text("attacker-known-salt\n")
    planted.chmod(0o644)
    another_users(monkeypatch, planted)
    with pytest.raises(ConfigurationError, match="refusing a key another user chose"):
        worker_with_key(WorkerSettings(), sticky)
    with pytest.raises(ConfigurationError, match="refusing a key another user chose"):
        worker_with_key(WorkerSettings(), sticky, create=False)  # rebuild


def test_a_link_another_user_planted_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    public = tmp_path / "timezone"  # a file whose contents everyone knows
    public.write_text("Etc/UTC\n")
    (tmp_path / KEY_FILE_NAME).symlink_to(public)
    another_users(monkeypatch, tmp_path / KEY_FILE_NAME)
    with pytest.raises(ConfigurationError, match="is a link of uid"):
        load_key(SecretStr(""), False, tmp_path / KEY_FILE_NAME, ENV)


def test_a_key_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE_NAME
    path.write_text("a" * 64 + "\n")
    path.chmod(0o666)
    with pytest.raises(ConfigurationError, match="may be written by group or others"):
        load_key(SecretStr(""), False, path, ENV)


def test_a_fifo_under_the_key_file_s_name_is_refused_at_once(tmp_path: Path) -> None:
    # Found by attack: the start waited in open() for a writer that never came; SIGTERM did not end it.
    path = tmp_path / KEY_FILE_NAME
    os.mkfifo(path, 0o600)
    outcome: list[BaseException | bytes] = []

    def start() -> None:
        try:
            outcome.append(load_key(SecretStr(""), False, path, ENV))
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    starter.join(5)
    if starter.is_alive():  # let the old code's open() go, so the thread ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        starter.join(5)
        pytest.fail("the start waited on a FIFO")
    assert len(outcome) == 1
    assert isinstance(outcome[0], ConfigurationError)
    assert "not a regular file" in str(outcome[0])
