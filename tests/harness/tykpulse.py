"""Running the `tykpulse` command as its own process in tests, and waiting for it without sleeps."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any


def tykpulse(*args: str, log_level: str = "warning") -> list[str]:
    """The command line of `tykpulse ARGS` with this interpreter (warnings and errors logged by default)."""
    return [sys.executable, "-m", "pipelines.cli.main", "--log-level", log_level, *args]


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 120.0, every: float = 0.1) -> Any:
    """Poll `condition` until it returns something truthy, and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(every)
    msg = f"timed out after {timeout:.0f}s waiting for {what}"
    raise AssertionError(msg)


def http_get(url: str) -> bytes | None:
    """The body at `url`, or None when nothing answers (yet)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http in tests
            return bytes(response.read())
    except OSError:
        return None


def wait_for_endpoint(port: int, process: subprocess.Popen[Any], timeout: float = 120.0) -> None:
    """Until the ClickHouse endpoint served by `process` answers /ping (fails if the process exits)."""

    def ready() -> bool:
        assert process.poll() is None, "the serving process exited"
        return http_get(f"http://127.0.0.1:{port}/ping") == b"Ok.\n"

    wait_until(ready, f"the endpoint on port {port}", timeout)
