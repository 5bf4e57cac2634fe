"""What every harness needs to run a helper process: a free port, a stop that always stops, and
Processes, the tykpulse processes of one test with their log files."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from tests.harness.tykpulse import tykpulse


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout`; True if it exited (it is our own child, by pid)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return True
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
            return True
    return proc.poll() is not None


class Processes:
    """Every process a test starts, each with its log file, stopped (by pid) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[Any] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        self._files.append(log)
        proc = subprocess.Popen(tykpulse(*args, log_level="info"), stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str, timeout: float = 60.0) -> int | None:
        proc = self.procs.pop(name)
        stop_process(proc, timeout)
        return proc.returncode

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, 20.0)
        for f in self._files:
            f.close()
