"""Make what the embedded engine wrote survive power loss, before the log that could rewrite it is dropped.

ClickHouse does not fsync an inserted part (`fsync_after_insert` and
`fsync_part_directory` are off by default) nor its deduplication log: an
acknowledged insert sits in the page cache for up to the kernel's writeback
delay (30 s by default). The write-ahead log deletes a range once ClickHouse
has acknowledged it, so a power loss in that delay lost acknowledged flushes,
silently. One syncfs(2) of the embedded directory's filesystem per flush, after
the inserts and before the checkpoint moves, makes the parts, their renames and
their tokens durable together; os.sync() where syncfs is missing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def sync_filesystem(path: Path, *, syncfs: Callable[[int], None] | None = None) -> None:
    """Flush every dirty page of the filesystem holding `path` to its disk."""
    call = syncfs or (_syncfs if hasattr(_libc, "syncfs") else None)
    if call is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        call(fd)
    finally:
        os.close(fd)
