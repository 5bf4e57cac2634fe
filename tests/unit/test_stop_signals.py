"""SIGTERM/SIGINT stop a command wherever its main thread was; a second one exits at once.

Each case runs in a process of its own: a signal is process-wide, and the failure this guards
against is a process that never exits.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# The signal arrives while the main thread is inside stop.wait(), holding the lock of the
# Event's condition: Python runs the handler right there (raise_signal checks for handlers before
# it returns). The profile hook picks that moment; an idle bridge's loop is in stop.wait() 20 times
# a second, and a SIGTERM landed there once in CI.
_SIGNAL_INSIDE_WAIT = """
import signal, sys, threading
from pipelines.cli.signals import stop_on_signals

stop = stop_on_signals()
raised = []

def raise_inside_wait(frame, event, _arg):
    if event == "call" and frame.f_code is threading.Condition.wait.__code__ and not raised:
        raised.append(True)
        signal.raise_signal(signal.SIGTERM)

sys.setprofile(raise_inside_wait)
while not stop.wait(0.05):
    pass
sys.setprofile(None)
print("stopped", flush=True)
"""

_SLOW_SHUTDOWN = """
import time
from pipelines.cli.signals import stop_on_signals

stop = stop_on_signals()
print("ready", flush=True)
stop.wait()
print("stopping", flush=True)
time.sleep(60)
"""


def run_script(script: str, hang: str) -> subprocess.CompletedProcess[str]:
    """`script` run in a Python process of its own; the test fails, saying `hang`, if it has not
    ended 20 s later."""
    try:
        return subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{hang}: still running 20 s later")


def test_a_signal_while_the_main_thread_waits_on_stop_stops_it() -> None:
    done = run_script(_SIGNAL_INSIDE_WAIT, "SIGTERM inside stop.wait()")
    assert (done.returncode, done.stdout) == (0, "stopped\n"), done.stderr


def test_a_second_signal_exits_at_once() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _SLOW_SHUTDOWN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            proc.send_signal(signal.SIGTERM)
            assert proc.stdout.readline() == "stopping\n"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 130
        finally:
            proc.kill()  # our own child, by pid; a no-op once it exited


# A second SIGHUP while a reload holds its lock: in the handler, the reload ran again inside the
# first one, on the thread that held the lock.
_SIGHUP_DURING_RELOAD = """
import signal, threading, time
from pipelines.cli.signals import reload_on_sighup

lock, calls = threading.Lock(), []

def reload():
    with lock:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGHUP)
            time.sleep(0.2)  # the main thread runs the handler meanwhile

reload_on_sighup(reload)
signal.raise_signal(signal.SIGHUP)
deadline = time.monotonic() + 10
while len(calls) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
print("reloads", len(calls), flush=True)
"""


def test_a_sighup_during_a_reload_reloads_again_after_it() -> None:
    done = run_script(_SIGHUP_DURING_RELOAD, "the second SIGHUP deadlocked the reload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reloads 2"
