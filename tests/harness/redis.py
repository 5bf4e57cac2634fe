"""A real ``redis-server`` (Debian package ``redis-server``) for tests.

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)

Starts on a free loopback port with a private temp dir and no persistence, waits until the
server answers ``PING`` (no sleeps), and stops it on exit (``SHUTDOWN NOSAVE``, then SIGTERM,
then SIGKILL). Readiness and shutdown speak RESP over a plain socket, so this module needs no
Redis client library.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from tests.harness.processes import free_port, stop_process

__all__ = ["RedisServer", "RedisServerError"]

_LOOPBACK = "127.0.0.1"


class RedisServerError(RuntimeError):
    """redis-server could not be found, started or reached."""


def _resp_command(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for p in parts:
        b = p.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class RedisServer:
    """Context manager around one ``redis-server`` process bound to 127.0.0.1."""

    def __init__(
        self,
        *,
        executable: str | None = None,
        startup_timeout: float = 15.0,
        shutdown_timeout: float = 5.0,
        extra_args: tuple[str, ...] | list[str] = (),
        port_attempts: int = 3,
    ) -> None:
        self.executable = executable
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.extra_args = tuple(extra_args)
        self.port_attempts = port_attempts
        self.host = _LOOPBACK
        self.port = 0
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        if not self.running:
            msg = "RedisServer is not running"
            raise RedisServerError(msg)
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return self.dir / "redis-server.log" if self.dir is not None else None

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"

    def start(self) -> Self:
        if self._proc is not None:
            msg = "RedisServer already started"
            raise RedisServerError(msg)
        exe = self._find_executable()
        last_error: RedisServerError | None = None
        for _ in range(max(1, self.port_attempts)):
            try:
                self._start_once(exe)
            except RedisServerError as exc:
                # Another process may have taken the port between probing and binding: retry.
                if "Address already in use" not in str(exc):
                    raise
                last_error = exc
            else:
                return self
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Stop the server (idempotent) and remove its temp dir."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                self._terminate(proc)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid} port={self.port}" if self.running else "stopped"
        return f"<RedisServer {state}>"

    # ------------------------------------------------------------------ internals

    def _find_executable(self) -> str:
        exe = self.executable or shutil.which("redis-server")
        if exe is None and os.access("/usr/bin/redis-server", os.X_OK):
            exe = "/usr/bin/redis-server"
        if exe is None:
            msg = "redis-server not found on PATH: install the Debian package 'redis-server'"
            raise RedisServerError(msg)
        return exe

    def _start_once(self, exe: str) -> None:
        self.port = free_port(_LOOPBACK)
        self.dir = Path(tempfile.mkdtemp(prefix="tykpulse-redis-"))
        assert self.log_path is not None
        self._log = self.log_path.open("wb")
        args = [
            exe,
            "--port", str(self.port),
            "--bind", _LOOPBACK,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",  # log to stdout, which goes to redis-server.log
            *self.extra_args,
        ]  # fmt: skip
        try:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        except OSError as exc:
            self.stop()
            msg = f"cannot execute {exe}: {exc}"
            raise RedisServerError(msg) from exc
        try:
            self._wait_ready()
        except RedisServerError as exc:
            tail = self.log_tail()
            self.stop()
            msg = f"redis-server on port {self.port} did not become ready ({exc}):\n--- log tail ---\n{tail}"
            raise RedisServerError(msg) from None

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                msg = f"redis-server exited with code {code}"
                raise RedisServerError(msg)
            if self._ping():
                return
            if time.monotonic() > deadline:
                msg = f"no PONG within {self.startup_timeout}s"
                raise RedisServerError(msg)
            time.sleep(0.02)

    def _ping(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as s:
                s.sendall(_resp_command("PING"))
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _terminate(self, proc: subprocess.Popen[bytes]) -> None:
        # 1. SHUTDOWN NOSAVE (the server closes the connection instead of replying).
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1.0) as s:
            s.sendall(_resp_command("SHUTDOWN", "NOSAVE"))
            s.recv(64)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=self.shutdown_timeout)
            return
        # 2. SIGTERM, 3. SIGKILL (only our own child, by pid).
        if stop_process(proc, self.shutdown_timeout):
            return
        msg = f"redis-server pid {proc.pid} did not exit after SIGKILL"
        raise RedisServerError(msg)
