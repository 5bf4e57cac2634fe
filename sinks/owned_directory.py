"""Data directories (the embedded database, the write-ahead log) that only their owner reads.

They hold every rollup, the raw-event archive and raw firehose frames, so they
are made 0700 whatever the umask (`db serve`'s passwords guard nothing if the
files can be copied). And they must be this user's own, and so must the way to
them: a link planted in a shared directory (`data/clickhouse.wal -> /home/victim/`,
or `shared/data -> /home/victim/` one level up) made the worker chmod the
victim's directory and write its log there, and a directory on the way that
another user owns, or may write in, lets that user swap what is in it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from pathlib import Path
from typing import Final

# links followed on the way to a directory, at most (the kernel's own limit is 40)
_MAX_LINKS: Final = 40


def owned_directory(path: Path) -> Path:
    """`path`, created 0700 if missing, else made 0700; PermissionError if it, or anything on the way
    to it (links included), belongs to another user than this one or root, or if a directory on
    the way may be written by others (unless it is sticky, as /tmp is)."""
    path = Path(os.path.abspath(path))
    _check_the_way(path.parent)
    make_directories(path.parent)
    # Again, now that the way exists: what was missing at the first walk may have been made by
    # another user in between (a sticky /tmp lets anyone create a name that is still free).
    _check_the_way(path.parent)
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


def check_trusted_files(directory: Path, pattern: str) -> None:
    """PermissionError unless `directory`, the way to it and its files matching `pattern` are this
    user's or root's and none may be written by others: whoever may add or change such a file
    chooses what is read from it (a key planted in a CURVE allowlist is admitted). Unlike the way,
    the directory itself may not be written by others even if sticky: anyone may add a file there."""
    path = Path(os.path.abspath(directory))
    _check_the_way(path)
    _check_trusted(path, path.stat(), "directory")
    for file in sorted(path.glob(pattern)):
        entry = file.lstat()
        if stat.S_ISLNK(entry.st_mode):
            _check_trusted(file, entry, "link")
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            msg = f"{file} is not a regular file"
            raise PermissionError(msg)
        _check_trusted(file, info, "file")


def _check_trusted(path: Path, info: os.stat_result, what: str) -> None:
    if info.st_uid not in (0, os.getuid()):
        msg = f"{what} {path} belongs to uid {info.st_uid}: refusing what another user chose"
        raise PermissionError(msg)
    if what != "link" and info.st_mode & 0o022:
        msg = f"{what} {path} may be written by other users ({stat.filemode(info.st_mode)}): refusing it"
        raise PermissionError(msg)


def make_directories(directory: Path) -> None:
    """Create what is missing of `directory`, no level of it writable by group or others whatever
    the umask: made with the umask's mode (0777 under umask 000, 0775 under 002) a level was open to
    others to swap what is in it, and the next start refused the way it had made itself."""
    missing: list[Path] = []
    current = directory
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for level in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile: the way is checked as it is
            os.mkdir(level, 0o755)


def _check_the_way(directory: Path) -> None:
    """Walk `directory` from the root as the kernel resolves it, checking every link and directory
    met; what does not exist yet is created by this process, so the walk ends there."""
    trusted = (0, os.getuid())
    current = Path(directory.anchor or "/")
    remaining = deque(directory.parts[1:])
    links = 0
    while remaining:
        part = remaining.popleft()
        if part in ("", "."):
            continue
        candidate = current.parent if part == ".." else current / part
        try:
            entry = candidate.lstat()
        except FileNotFoundError:
            return
        if stat.S_ISLNK(entry.st_mode):
            if entry.st_uid not in trusted:
                msg = f"{candidate} is a link of uid {entry.st_uid}: refusing to keep data behind it"
                raise PermissionError(msg)
            links += 1
            if links > _MAX_LINKS:
                msg = f"{directory}: too many links on the way"
                raise PermissionError(msg)
            target = Path(os.readlink(candidate))
            if target.is_absolute():
                current = Path(target.anchor)
            remaining.extendleft(reversed(target.parts[1:] if target.is_absolute() else target.parts))
            continue
        if not stat.S_ISDIR(entry.st_mode):
            msg = f"{candidate} is not a directory"
            raise PermissionError(msg)
        if entry.st_uid not in trusted:
            msg = (
                f"{candidate} belongs to uid {entry.st_uid}, who could replace what is in it: refusing "
                "to keep data there"
            )
            raise PermissionError(msg)
        if entry.st_mode & 0o022 and not entry.st_mode & stat.S_ISVTX:
            msg = (
                f"{candidate} may be written by other users ({stat.filemode(entry.st_mode)}), who could "
                "replace what is in it: refusing to keep data there"
            )
            raise PermissionError(msg)
        current = candidate
