"""A bound ipc:// endpoint is its user's alone, whatever the umask, and still carries the firehose."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import zmq

from pipelines.firehose.endpoints import attach, bind, parse_endpoint

pytestmark = pytest.mark.component


def test_a_bound_ipc_socket_file_is_owner_only_and_works(tmp_path: Path) -> None:
    # Found by attack: under umask 000 the proxy's backend socket was srwxrwxrwx and another user
    # completed a ZeroMQ handshake with it, reading the firehose.
    path = tmp_path / "firehose.sock"
    context: zmq.Context[Any] = zmq.Context()
    sub, pub = context.socket(zmq.SUB), context.socket(zmq.PUB)
    old = os.umask(0)
    try:
        attach(sub, parse_endpoint(f"@ipc://{path}"))
    finally:
        os.umask(old)
    try:
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert info.st_mode & 0o777 == 0o600
        assert os.umask(old) == old  # the process's umask is as it was
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        attach(pub, parse_endpoint(f"ipc://{path}"))
        for _ in range(100):  # the subscription reaches the publisher asynchronously
            pub.send(b"tyk.heartbeat")
            if sub.poll(50):
                break
        assert sub.recv() == b"tyk.heartbeat"
    finally:
        sub.close(0)
        pub.close(0)
        context.term()


class DirectoryMakingSocket:
    """Stands in for a socket whose bind runs while another thread makes a directory."""

    def __init__(self, directory: Path, socket_file: Path) -> None:
        self.directory = directory
        self.socket_file = socket_file

    def bind(self, address: str) -> None:
        self.directory.mkdir()
        self.socket_file.touch()


def test_a_directory_another_thread_makes_during_a_bind_stays_usable_by_its_owner(tmp_path: Path) -> None:
    # Found by attack: the umask set around the bind is the whole process's; at 0o177 a directory
    # made meanwhile was 0600, and a real chDB inserting beside 2,000 ipc binds failed 19 inserts
    # (CANNOT_OPEN_FILE) and left 60 part directories it could not remove.
    made = tmp_path / "part"
    socket_file = tmp_path / "firehose.sock"
    bind(DirectoryMakingSocket(made, socket_file), f"ipc://{socket_file}")
    assert made.stat().st_mode & 0o777 == 0o700  # owner-only, and its owner can enter it
    assert socket_file.stat().st_mode & 0o777 == 0o600
