"""SIGINT/SIGTERM -> a stop event; a second signal exits at once. SIGHUP -> reload."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger(__name__)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(130)
        log.info("%s received: finishing (send again to exit at once)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


def reload_on_sighup(reload: Callable[[], object]) -> None:
    """Call `reload` on SIGHUP (e.g. re-read the CURVE allowlist)."""

    def handle(_signum: int, _frame: FrameType | None) -> None:
        log.info("SIGHUP received: reloading")
        reload()

    signal.signal(signal.SIGHUP, handle)
