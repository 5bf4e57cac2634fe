"""The runtime directory `tykpulse status` reads: only a private directory of this user is used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.observe.discovery import Announcement, announced, private_directory

pytestmark = pytest.mark.unit


def test_an_announcement_is_found_while_its_process_lives_and_gone_after_remove(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    announcement = Announcement(directory, "bridge kafka", "http://127.0.0.1:9464")
    assert oct(directory.stat().st_mode & 0o777) == oct(0o700)
    assert [(e["command"], e["pid"]) for e in announced(directory)] == [("bridge kafka", os.getpid())]
    announcement.remove()
    assert announced(directory) == []


def test_a_directory_others_can_write_is_neither_written_nor_read(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "planted-1.json").write_text(
        f'{{"command": "run", "pid": {os.getpid()}, "url": "http://evil"}}'
    )
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="no one else can write"):
        Announcement(shared, "proxy", "http://127.0.0.1:1")
    assert announced(shared) == []
    assert sorted(p.name for p in shared.iterdir()) == ["planted-1.json"]


def test_a_link_in_place_of_the_directory_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "tykpulse-link"
    link.symlink_to(target)
    with pytest.raises(PermissionError, match="not a directory"):
        private_directory(link)
    with pytest.raises(PermissionError):
        Announcement(link, "proxy", "http://127.0.0.1:1")
    assert list(target.iterdir()) == []
