"""Syncing the embedded database's filesystem (the flusher's commit relies on it: test_wal_flusher)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinks.clickhouse.durable import sync_filesystem


def test_the_filesystem_holding_the_directory_is_the_one_synced(tmp_path: Path) -> None:
    synced: list[int] = []
    sync_filesystem(tmp_path, syncfs=lambda fd: synced.append(os.fstat(fd).st_dev))
    assert synced == [os.stat(tmp_path).st_dev]
    sync_filesystem(tmp_path)  # the real syscall


def test_a_failed_sync_is_an_error_not_a_silent_success(tmp_path: Path) -> None:
    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        sync_filesystem(tmp_path, syncfs=failing)
