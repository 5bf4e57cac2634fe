"""Where a running command announces its /metrics endpoint, so `tykpulse status` finds it.

Every long-running command writes `<command>-<pid>.json` (its command, pid and
endpoint URL) into the runtime directory while it serves, and removes it when it
stops; a file whose process is gone (killed) is skipped and removed by readers.
The directory is --runtime-dir, else $XDG_RUNTIME_DIR/tykpulse, else
<tmp>/tykpulse-<uid>; it is created 0700. Anyone may create a name in a shared
<tmp> first, so a directory that is a link, belongs to another user or others
may write to is not used: a stranger's directory could plant endpoints for
`status` to fetch, or links that make the announcement overwrite the user's files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def runtime_dir(configured: str | None = None) -> Path:
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "tykpulse"
    return Path(tempfile.gettempdir()) / f"tykpulse-{os.getuid()}"


def private_directory(directory: Path) -> Path:
    """`directory`, created 0700 if missing; PermissionError unless it is this user's own, unshared."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode):
        msg = f"{directory} is not a directory (a link?): not used for announcements"
        raise PermissionError(msg)
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        msg = (
            f"{directory} belongs to uid {info.st_uid} with mode {stat.filemode(info.st_mode)}: "
            "announcements need a directory of this user that no one else can write"
        )
        raise PermissionError(msg)
    return directory


class Announcement:
    """The file naming a running endpoint; remove() when the endpoint closes."""

    def __init__(self, directory: Path, command: str, url: str) -> None:
        private_directory(directory)
        self.path = directory / f"{command.replace(' ', '-')}-{os.getpid()}.json"
        body = {"command": command, "pid": os.getpid(), "url": url, "started": time.time()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def announced(directory: Path) -> list[dict[str, Any]]:
    """Every endpoint announced in `directory` by a process still alive, oldest first."""
    if not directory.is_dir():
        return []
    try:
        private_directory(directory)
    except PermissionError as exc:
        log.warning("not reading announcements: %s", exc)
        return []
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("pid"), int):
            continue
        if not _alive(entry["pid"]):
            with contextlib.suppress(OSError):
                path.unlink()  # a killed process could not remove its own
            continue
        found.append(entry)
    return sorted(found, key=lambda e: float(e.get("started", 0)))
