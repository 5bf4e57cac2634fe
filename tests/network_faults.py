"""TCP endpoints that fail like a broken network, for the http(s):// ClickHouse path.

    refused    nothing listens on the port
    reset      the connection is accepted, then reset (RST) at once
    blackhole  the connection is accepted and read, and never answered (a timeout)

Each is a real listening socket on loopback served by a thread; the client
under test is the real clickhouse-connect HTTP client.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

from tests.harness.processes import free_port


class FaultServer:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fault-{mode}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                self._held.append(conn)  # blackhole: keep it open, never answer

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.listener.close()
        for conn in self._held:
            conn.close()


@contextlib.contextmanager
def fault_endpoint(mode: str) -> Iterator[tuple[int, FaultServer | None]]:
    """(port, server): a loopback port that fails in the given mode (no server when refused)."""
    if mode == "refused":
        yield free_port(), None
        return
    server = FaultServer(mode)
    try:
        yield server.port, server
    finally:
        server.close()
