"""TCP endpoints that fail like a broken network, for the http(s):// ClickHouse path.

    refused    nothing listens on the port
    reset      the connection is accepted, then reset (RST) at once
    blackhole  the connection is accepted and read, and never answered (a timeout)
    tls        a TLS handshake with a self-signed certificate, then the connection is closed

Each is a real listening socket on loopback served by a thread; the client
under test is the real clickhouse-connect HTTP client.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.harness.processes import free_port


class FaultServer:
    def __init__(self, mode: str, tls: ssl.SSLContext | None = None) -> None:
        self.mode = mode
        self.tls = tls
        self.handshakes = 0
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
            if self.tls is not None:
                self._handshake(conn)
            elif self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            else:
                self._held.append(conn)  # blackhole: keep it open, never answer

    def _handshake(self, conn: socket.socket) -> None:
        assert self.tls is not None
        conn.settimeout(5)
        try:
            with self.tls.wrap_socket(conn, server_side=True) as wrapped:
                self.handshakes += 1
                wrapped.recv(1024)
        except (ssl.SSLError, OSError):
            conn.close()

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


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) for CN=127.0.0.1, made with the openssl command."""
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@contextlib.contextmanager
def tls_endpoint(cert: Path, key: Path) -> Iterator[FaultServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = FaultServer("tls", context)
    try:
        yield server
    finally:
        server.close()
