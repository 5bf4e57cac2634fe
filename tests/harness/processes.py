"""What every harness needs to run a helper process: a free port, a stop that always stops, and
Processes, the tykpulse processes of one test with their log files."""

from __future__ import annotations

import contextlib
import os
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
        return self.start_command(name, tykpulse(*args, log_level="info"))

    def start_command(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Any command line (`faust -A ...`), its output in the log of `name`."""
        log = (self.logs / f"{name}.log").open("ab")
        self._files.append(log)
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
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


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on: its socket descriptors matched to the kernel's
    tables (a port another process holds is not counted)."""
    sockets = set()
    for descriptor in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # a descriptor closed while listed
            target = os.readlink(descriptor)
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in sockets:  # 0A: TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
