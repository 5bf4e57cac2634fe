"""Make what the embedded engine wrote survive power loss, before the log that could rewrite it is dropped.

ClickHouse does not fsync an inserted part (`fsync_after_insert` and
`fsync_part_directory` are off by default) nor its deduplication log: an
acknowledged insert sits in the page cache for up to the kernel's writeback
delay (30 s by default). The write-ahead log deletes a range once ClickHouse
has acknowledged it, so a power loss in that delay lost acknowledged flushes,
silently. One syncfs(2) of the embedded directory's filesystem per flush, after
the inserts and before the checkpoint moves, makes the parts, their renames and
their tokens durable together; os.sync() where syncfs is missing.

The directory is opened once, when the engine is: syncfs reports a writeback
error only to descriptors opened before it happened, so a descriptor opened
for each call would miss one that a previous call, or the kernel's own
writeback, met first.
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


class FilesystemSync:
    """Flushes every dirty page of the filesystem holding `path` to its disk, on demand."""

    def __init__(self, path: Path, *, syncfs: Callable[[int], None] | None = None) -> None:
        self.path = path
        self._call = syncfs or (_syncfs if hasattr(_libc, "syncfs") else None)
        self._fd: int | None = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def sync(self) -> None:
        """Raises OSError when the disk failed to take something written since this was opened."""
        if self._fd is None:
            msg = f"the sync of {self.path} is closed"
            raise ValueError(msg)
        if self._call is None:
            os.sync()  # reports no error: the best there is without syncfs
        else:
            self._call(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
