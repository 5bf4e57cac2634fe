"""Data directories (the embedded database, the write-ahead log) that only their owner reads.

They hold every rollup, the raw-event archive and raw firehose frames, so they
are made 0700 whatever the umask (`db serve`'s passwords guard nothing if the
files can be copied). And they must be this user's own: a link planted in a
shared directory (`data/clickhouse.wal -> /home/victim/`) made the worker chmod
the victim's directory and write its log there.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def owned_directory(path: Path) -> Path:
    """`path`, created 0700 if missing, else made 0700; PermissionError if it (or the link at it,
    or what the link names) belongs to another user, or is not a directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    uid = os.getuid()
    entry = path.lstat()
    if entry.st_uid != uid:
        msg = f"{path} belongs to uid {entry.st_uid}, not to this user ({uid}): refusing to keep data there"
        raise PermissionError(msg)
    if stat.S_ISLNK(entry.st_mode):
        named = path.stat()
        if named.st_uid != uid or not stat.S_ISDIR(named.st_mode):
            msg = f"{path} is a link to {os.readlink(path)}, not a directory of this user: refusing it"
            raise PermissionError(msg)
    elif not stat.S_ISDIR(entry.st_mode):
        msg = f"{path} is not a directory"
        raise PermissionError(msg)
    path.chmod(0o700)
    return path
