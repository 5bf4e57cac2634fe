"""What every harness needs to run a helper process: a free port, and a stop that always stops."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from typing import Any


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
