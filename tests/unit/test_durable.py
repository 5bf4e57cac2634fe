"""Syncing the embedded database's filesystem (the flusher's commit relies on it: test_wal_flusher)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sinks.clickhouse.durable import FilesystemSync


def test_the_filesystem_holding_the_directory_is_synced_through_one_descriptor(tmp_path: Path) -> None:
    # syncfs reports a writeback error only to descriptors opened before it: one, kept open
    synced: list[tuple[int, int]] = []
    sync = FilesystemSync(tmp_path, syncfs=lambda fd: synced.append((fd, os.fstat(fd).st_dev)))
    sync.sync()
    sync.sync()
    sync.close()
    assert [dev for _, dev in synced] == [os.stat(tmp_path).st_dev] * 2
    assert synced[0][0] == synced[1][0]
    with pytest.raises(ValueError, match="closed"):
        sync.sync()
    real = FilesystemSync(tmp_path)  # the real syscall
    real.sync()
    real.close()


def test_a_failed_sync_is_an_error_not_a_silent_success(tmp_path: Path) -> None:
    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    sync = FilesystemSync(tmp_path, syncfs=failing)
    with pytest.raises(OSError, match="Input/output error"):
        sync.sync()
    sync.close()
