"""SIGINT/SIGTERM -> a stop event; a second signal exits at once. SIGHUP -> reload.

The stop event is set by a thread of its own, never inside the signal handler: Python runs a
handler in the main thread between two bytecodes, and `Event.set()` takes the lock that
`Event.wait()` holds around its wait. A signal landing while the main thread was inside
`stop.wait()` made the handler wait for a lock its own thread held: the process never exited
(seen as a bridge still running 30 s after SIGTERM, and a second signal deadlocked the same way).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

from pipelines.observe.thread_names import name_os_thread

log = logging.getLogger(__name__)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    received: list[int] = []
    # a pipe: os.write takes no lock, so the handler is safe wherever the main thread was
    reader, writer = os.pipe()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if received:
            try:
                log.warning("second %s: exiting now", signal.Signals(signum).name)
            finally:  # the main thread may have been inside a write to the same stream
                os._exit(130)
        received.append(signum)
        os.write(writer, bytes([signum]))

    def set_on_signal() -> None:
        name_os_thread()
        signum = os.read(reader, 1)[0]
        log.info("%s received: finishing (send again to exit at once)", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    threading.Thread(target=set_on_signal, name="tykpulse-signals", daemon=True).start()
    return stop


def reload_on_sighup(reload: Callable[[], object]) -> None:
    """Call `reload` on SIGHUP (e.g. re-read the CURVE allowlist), on a thread of its own.

    Not in the handler, for the reason above: a reload takes locks (the CURVE session's, the
    proxy's control socket's), and a second SIGHUP during a reload ran the handler inside it, on
    the thread that held them. A later call replaces `reload`.
    """
    _reloads[:] = [reload]
    if _reload_pipe:
        return
    reader, writer = os.pipe()
    _reload_pipe.append(writer)

    def handle(_signum: int, _frame: FrameType | None) -> None:
        os.write(writer, b"\x01")

    def reload_on_signal() -> None:
        name_os_thread()
        while os.read(reader, 1):
            log.info("SIGHUP received: reloading")
            try:
                _reloads[0]()
            except Exception:  # a failed reload keeps what is loaded; the next SIGHUP tries again
                log.exception("reload on SIGHUP failed")

    signal.signal(signal.SIGHUP, handle)
    threading.Thread(target=reload_on_signal, name="tykpulse-reload", daemon=True).start()


# the reload SIGHUP calls, and the write end of its pipe once its thread runs (one per process)
_reloads: list[Callable[[], object]] = []
_reload_pipe: list[int] = []
