"""Threads named for the operating system too, so `top -H`, /proc/PID/task/*/comm and profilers
show which of a worker's threads spends the CPU (Python names its threads for itself only).

The kernel keeps 15 bytes of a name: the `tykpulse-` prefix of a Python thread name is dropped.
Elsewhere than Linux this does nothing.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from typing import Final

_PR_SET_NAME: Final = 15
_MAX_BYTES: Final = 15
_PREFIX: Final = "tykpulse-"


def os_thread_name(name: str) -> bytes:
    """What the kernel will show for a thread called `name`."""
    return name.removeprefix(_PREFIX).encode("ascii", "replace")[:_MAX_BYTES]


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread its Python name (or `name`) in the operating system."""
    if sys.platform != "linux":
        return
    wanted = os_thread_name(name or threading.current_thread().name)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(wanted), 0, 0, 0)
