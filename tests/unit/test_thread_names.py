"""A worker's threads carry their names into the operating system (top -H, /proc, profilers)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipelines.observe.thread_names import name_os_thread, os_thread_name

pytestmark = pytest.mark.unit


def test_the_prefix_is_dropped_and_the_name_fits_the_kernels_15_bytes() -> None:
    assert os_thread_name("tykpulse-wal-append") == b"wal-append"
    assert os_thread_name("tykpulse-receiver") == b"receiver"
    assert os_thread_name("a-rather-long-thread-name") == b"a-rather-long-t"
    assert os_thread_name("flusher") == b"flusher"


def test_a_thread_shows_its_python_name_in_proc() -> None:
    seen: list[str] = []

    def work() -> None:
        name_os_thread()
        comm = Path(f"/proc/self/task/{threading.get_native_id()}/comm")
        seen.append(comm.read_text().strip())

    thread = threading.Thread(target=work, name="tykpulse-wal-append")
    thread.start()
    thread.join()
    assert seen == ["wal-append"]
