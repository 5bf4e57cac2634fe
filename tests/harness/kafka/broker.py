"""A real single-node Apache Kafka broker (KRaft mode) for tests and development.

No Docker: the broker jars come from Maven Central through ``mvn`` (see ``pom.xml``
beside this file), are cached under ``.cache/kafka/<version>/libs`` at the repo root
(or ``$TYKPULSE_KAFKA_HOME/libs``), and the broker runs as a plain ``java`` process
on loopback ports, with its config, data and logs in a temp dir that is removed on exit.

Library use::

    from tests.harness.kafka.broker import KafkaBroker

    with KafkaBroker() as broker:
        broker.create_topic("events", partitions=4)
        ...  # connect clients to broker.bootstrap ("127.0.0.1:PORT")

Command line (development)::

    python -m tests.harness.kafka.broker [--port 9092] [--controller-port 9093]
    python -m tests.harness.kafka.broker --fetch-only     # just fetch the jars (CI install step)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.harness.processes import free_port, stop_process

KAFKA_VERSION = "4.1.1"
"""Kafka version fetched and run by default (``kafka.version`` in pom.xml is only a fallback)."""

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
REPO_ROOT = HERE.parents[2]
ENV_HOME = "TYKPULSE_KAFKA_HOME"

DEFAULT_HEAP = "512m"
DEFAULT_STARTUP_TIMEOUT = 120.0
DEFAULT_STOP_TIMEOUT = 30.0
_TAIL_LINES = 60

_T = TypeVar("_T")


class KafkaHarnessError(RuntimeError):
    """The harness could not fetch, start or talk to the Kafka broker."""


# --------------------------------------------------------------------------- jars


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """Directory that holds ``libs/`` with the broker jars.

    ``$TYKPULSE_KAFKA_HOME`` if set (it may also point at an unpacked Kafka
    distribution, whose ``libs/`` has the same layout), else ``.cache/kafka/<version>``
    at the repo root.
    """
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT / ".cache" / "kafka" / version


def _has_broker_jar(libs: Path) -> bool:
    return libs.is_dir() and any(libs.glob("kafka_2.13-*.jar"))


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _file_tail(path: Path, lines: int = _TAIL_LINES) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return ""


def java_executable() -> str:
    """``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else ``java`` from PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("java")
    if not found:
        msg = (
            "Kafka harness: `java` not found (neither $JAVA_HOME/bin/java nor on PATH). "
            "Kafka 4.x needs Java 17 or newer: install a JDK/JRE 17+ (e.g. openjdk-17-jre-headless)."
        )
        raise KafkaHarnessError(msg)
    return found


def ensure_kafka_jars(version: str = KAFKA_VERSION, *, offline: bool = False) -> Path:
    """Return the ``libs`` dir with the Kafka broker jars, fetching them with mvn once.

    Idempotent: when the cache already holds the broker jar nothing runs (so it works
    with no network). Concurrent callers are serialised with a lock file; the jars are
    copied to a staging dir and renamed into place, so a half-finished fetch never
    looks complete. ``offline=True`` passes ``-o`` to mvn (resolve from ~/.m2 only).
    """
    home = kafka_home(version)
    libs = home / "libs"
    if _has_broker_jar(libs):
        return libs

    java_executable()  # fail early with a clear message: the jars are useless without java
    mvn = shutil.which("mvn")
    if not mvn:
        msg = (
            f"Kafka harness: `mvn` not found on PATH, so the Kafka {version} jars cannot be "
            f"fetched into {libs}. Install Maven 3.8+ (e.g. the Debian package `maven`), or set "
            f"{ENV_HOME} to a directory whose libs/ already holds the Kafka broker jars."
        )
        raise KafkaHarnessError(msg)

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _has_broker_jar(libs):  # another process fetched while we waited
            return libs
        staging = Path(tempfile.mkdtemp(prefix="libs.partial-", dir=home))
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            *(["-o"] if offline else []),
            "-f",
            str(POM),
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            out = "".join(
                x.decode(errors="replace") if isinstance(x, bytes) else x
                for x in (exc.stdout or "", exc.stderr or "")
            )
            msg = f"Kafka harness: fetching Kafka {version} jars timed out.\n--- mvn output (tail) ---\n"
            raise KafkaHarnessError(msg + _tail(out)) from exc
        output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # mvn's colour codes
        (home / "fetch.log").write_text(" ".join(cmd) + "\n" + output)
        if proc.returncode != 0 or not _has_broker_jar(staging):
            shutil.rmtree(staging, ignore_errors=True)
            msg = (
                f"Kafka harness: fetching Kafka {version} jars with mvn failed "
                f"(exit {proc.returncode}).\ncommand: {' '.join(cmd)}\n--- mvn output (tail) ---\n"
                f"{_tail(output)}"
            )
            raise KafkaHarnessError(msg)
        if libs.exists():  # leftover without the broker jar: replace it
            shutil.rmtree(libs)
        staging.rename(libs)
    return libs


# --------------------------------------------------------------------------- broker


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (like ``Uuid``).

    Like Kafka's ``Uuid.randomUuid()`` it never starts with "-", which command-line
    parsers would take for an option.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _run_coro(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from sync code, even if the caller is inside an event loop."""

    async def main() -> _T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    result: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, name="kafka-harness-admin")
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return result[0]


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the broker if the Python process that started it dies."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class KafkaBroker:
    """A single-node KRaft Kafka broker (``process.roles=broker,controller``) on loopback.

    ``start()`` (or ``with``) fetches the jars if needed, writes ``server.properties`` into
    a fresh temp dir, formats the storage, launches ``java ... kafka.Kafka`` and returns once
    the broker answers a metadata request listing itself (no fixed sleeps). ``stop()`` sends
    SIGTERM, then SIGKILL after ``stop_timeout`` seconds, and removes the temp dir.
    """

    def __init__(
        self,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        version: str = KAFKA_VERSION,
        heap: str = DEFAULT_HEAP,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        extra_config: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.version = version
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_config = dict(extra_config or {})
        self._want_port = port
        self._want_controller_port = controller_port
        self.port: int | None = None
        self.controller_port: int | None = None
        self.cluster_id: str | None = None
        self.workdir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: Any = None

    # -- public API ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` for ``bootstrap_servers``."""
        if self.port is None or self._proc is None:
            msg = "Kafka harness: broker is not running (call start() or use it as a context manager)"
            raise KafkaHarnessError(msg)
        return f"{self.host}:{self.port}"

    @property
    def server_log(self) -> Path | None:
        return self.workdir / "logs" / "server.log" if self.workdir else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> KafkaBroker:
        if self._proc is not None:
            msg = "Kafka harness: broker already started"
            raise KafkaHarnessError(msg)
        libs = ensure_kafka_jars(self.version)
        java = java_executable()
        # Ports we pick ourselves can be taken by someone else before java binds them:
        # retry with new ports in that case (only when the caller did not fix them).
        attempts = 1 if (self._want_port or self._want_controller_port) else 3
        for attempt in range(1, attempts + 1):
            try:
                self._launch(java, libs)
                return self
            except KafkaHarnessError as exc:
                bind_clash = "Address already in use" in str(exc)
                self.stop()
                if not bind_clash or attempt == attempts:
                    raise
            except BaseException:  # Ctrl-C, timeout of the caller, ...: never leak the JVM
                self.stop()
                raise
        msg = "unreachable"  # pragma: no cover
        raise AssertionError(msg)  # pragma: no cover

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its temp dir. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, self.stop_timeout)
        if self._console is not None:
            self._console.close()
            self._console = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def create_topic(
        self,
        name: str,
        partitions: int = 4,
        *,
        replication_factor: int = 1,
        config: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create a topic and wait until every partition has a leader (sync; safe inside a loop)."""
        bootstrap = self.bootstrap
        _run_coro(
            lambda: acreate_topic(
                bootstrap,
                name,
                partitions,
                replication_factor=replication_factor,
                config=config,
                timeout=timeout,
            )
        )

    def log_tail(self, lines: int = _TAIL_LINES) -> str:
        """Tail of the broker's server.log and of its console output (stdout/stderr)."""
        if self.workdir is None:
            return ""
        parts = []
        errors = self._error_lines()
        if errors:
            parts.append("--- first errors in server.log ---\n" + "\n".join(errors))
        for label, path in (
            ("server.log", self.workdir / "logs" / "server.log"),
            ("console", self.workdir / "logs" / "console.log"),
            ("format", self.workdir / "logs" / "format.log"),
        ):
            text = _file_tail(path, lines)
            if text.strip():
                parts.append(f"--- {label} ({path}) ---\n{text}")
        return "\n".join(parts)

    # -- internals ----------------------------------------------------------------------------

    def _error_lines(self, limit: int = 8) -> list[str]:
        """The first ERROR/FATAL lines and exception causes of server.log (the root cause)."""
        if self.workdir is None:
            return []
        try:
            text = (self.workdir / "logs" / "server.log").read_text(errors="replace")
        except OSError:
            return []
        found: list[str] = []
        for line in text.splitlines():
            important = " ERROR " in line or " FATAL " in line or line.startswith("Caused by:")
            if important and line not in found:
                found.append(line)
                if len(found) >= limit:
                    break
        return found

    def _launch(self, java: str, libs: Path) -> None:
        t0 = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="tykpulse-kafka-"))
        (self.workdir / "logs").mkdir()
        self.port = self._want_port or free_port(self.host)
        self.controller_port = self._want_controller_port or free_port(self.host)
        while self.controller_port == self.port:
            self.controller_port = free_port(self.host)
        self.cluster_id = new_cluster_id()
        props = self.workdir / "server.properties"
        props.write_text(self._server_properties())
        log4j = self.workdir / "log4j2.properties"
        log4j.write_text(self._log4j_properties())

        classpath = f"{libs}/*"
        jvm = [
            java,
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp",
            classpath,
        ]
        fmt = subprocess.run(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={self.cluster_id}",
                f"--config={props}",
            ],
            capture_output=True,
            text=True,
            timeout=max(self.startup_timeout, 60),
            check=False,
        )
        (self.workdir / "logs" / "format.log").write_text(fmt.stdout + fmt.stderr)
        if fmt.returncode != 0:
            msg = (
                f"Kafka harness: formatting KRaft storage failed (exit {fmt.returncode}).\n{self.log_tail()}"
            )
            raise KafkaHarnessError(msg)

        self._console = open(self.workdir / "logs" / "console.log", "wb")  # noqa: SIM115
        in_main_thread = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(props)],
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop the broker cleanly
            # PR_SET_PDEATHSIG fires when the *thread* that forked exits, so only use it from main.
            preexec_fn=_pdeathsig if in_main_thread and sys.platform == "linux" else None,
        )
        self._wait_ready(t0 + self.startup_timeout)
        self.startup_seconds = time.monotonic() - t0

    def _server_properties(self) -> str:
        assert self.workdir is not None
        h, p, c = self.host, self.port, self.controller_port
        config: dict[str, str] = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{h}:{c}",
            "listeners": f"PLAINTEXT://{h}:{p},CONTROLLER://{h}:{c}",
            "advertised.listeners": f"PLAINTEXT://{h}:{p}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            # single node: every internal topic with one replica
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # small machine: few threads
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "4",
        }
        config.update(self.extra_config)
        lines = ["# written by tests/harness/kafka/broker.py"]
        lines += [f"{k}={v}" for k, v in config.items()]
        return "\n".join(lines) + "\n"

    def _log4j_properties(self) -> str:
        assert self.workdir is not None
        log = self.workdir / "logs" / "server.log"
        return "\n".join(
            [
                "status = warn",
                "appender.file.type = File",
                "appender.file.name = FILE",
                f"appender.file.fileName = {log}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = FILE",
                # the state-change and request loggers are noisy and not useful here
                "logger.state.name = state.change.logger",
                "logger.state.level = WARN",
                "logger.request.name = kafka.request.logger",
                "logger.request.level = WARN",
                "",
            ]
        )

    def _wait_ready(self, deadline: float) -> None:
        """Poll until the broker's listener accepts and a metadata request lists node 1."""
        assert self._proc is not None
        last_error = "no answer yet"
        probe_timeout = 2.0  # grows on timeouts (slow, loaded machine) but stays short so a
        # broker that dies while a probe waits is noticed quickly
        while True:
            code = self._proc.poll()
            if code is not None:
                msg = f"Kafka harness: broker exited during startup (exit {code}).\n{self.log_tail()}"
                raise KafkaHarnessError(msg)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                msg = (
                    f"Kafka harness: broker not ready after {self.startup_timeout:.0f}s "
                    f"(last check: {last_error}).\n{self.log_tail()}"
                )
                raise KafkaHarnessError(msg)
            if _port_open(self.host, self.port or 0):
                try:
                    timeout = min(remaining, probe_timeout)
                    meta = _run_coro(functools.partial(_describe_cluster, self.bootstrap, timeout))
                except TimeoutError:
                    last_error = f"metadata request timed out after {timeout:.1f}s"
                    probe_timeout = min(probe_timeout * 2, 16.0)
                except Exception as exc:  # not ready yet: connection reset, refused, ...
                    last_error = f"{type(exc).__name__}: {exc}"
                else:
                    ids = {b["node_id"] for b in meta.get("brokers", [])}
                    if 1 in ids and meta.get("controller_id", -1) != -1:
                        return
                    last_error = f"metadata without this broker yet: {meta}"
            else:
                last_error = f"port {self.port} not accepting connections"
            time.sleep(0.1)  # poll interval, not a wait for readiness


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


async def _describe_cluster(bootstrap: str, timeout: float) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            meta: dict[str, Any] = await admin.describe_cluster()
            return meta
    finally:
        await admin.close()


async def acreate_topic(
    bootstrap: str,
    name: str,
    partitions: int = 4,
    *,
    replication_factor: int = 1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create a topic (error if it exists) and wait until all its partitions have a leader."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            topic = NewTopic(name, partitions, replication_factor, topic_configs=dict(config or {}))
            resp = (await admin.create_topics([topic], timeout_ms=int(timeout * 1000))).to_object()
            for err in resp.get("topic_errors", []):
                if err["error_code"] != 0:
                    msg = (
                        f"Kafka harness: creating topic {name!r} failed: error {err['error_code']} "
                        f"{err.get('error_message') or ''}".rstrip()
                    )
                    raise KafkaHarnessError(msg)
            while True:
                [desc] = await admin.describe_topics([name])
                parts = desc.get("partitions", [])
                if (
                    desc.get("error_code", 0) == 0
                    and len(parts) == partitions
                    and all(p["leader"] >= 0 for p in parts)
                ):
                    return
                await asyncio.sleep(0.05)
    finally:
        await admin.close()


# --------------------------------------------------------------------------- CLI


def _foreground(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    broker = KafkaBroker(args.port, args.controller_port, version=args.version, heap=args.heap)
    with broker:
        print(broker.bootstrap, flush=True)
        print(
            f"# Kafka {broker.version} ready in {broker.startup_seconds:.1f}s, pid {broker.pid}, "
            f"controller 127.0.0.1:{broker.controller_port}\n"
            f"# workdir {broker.workdir} (logs in logs/server.log; removed on exit)\n"
            f"# Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        for topic in args.topic:
            name, _, parts = topic.partition(":")
            broker.create_topic(name, int(parts or 4))
            print(f"# created topic {name} ({int(parts or 4)} partitions)", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            if not broker.is_running():
                print(f"broker died:\n{broker.log_tail()}", file=sys.stderr)
                return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.kafka.broker",
        description="Run a single-node KRaft Kafka broker on loopback in the foreground "
        "(prints the bootstrap address on stdout), or just fetch its jars.",
    )
    parser.add_argument("--port", type=int, default=None, help="broker port (default: a free one)")
    parser.add_argument("--controller-port", type=int, default=None, help="KRaft controller port")
    parser.add_argument("--version", default=KAFKA_VERSION, help="Kafka version (default %(default)s)")
    parser.add_argument("--heap", default=DEFAULT_HEAP, help="JVM max heap (default %(default)s)")
    parser.add_argument(
        "--topic", action="append", default=[], metavar="NAME[:PARTITIONS]", help="create topic(s)"
    )
    parser.add_argument("--fetch-only", action="store_true", help="fetch the jars, print libs dir, exit")
    parser.add_argument("--offline", action="store_true", help="with --fetch-only: mvn -o (local repo only)")
    args = parser.parse_args(argv)
    try:
        if args.fetch_only:
            print(ensure_kafka_jars(args.version, offline=args.offline))
            return 0
        return _foreground(args)
    except KafkaHarnessError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "KAFKA_VERSION",
    "KafkaBroker",
    "KafkaHarnessError",
    "acreate_topic",
    "ensure_kafka_jars",
    "free_port",
    "kafka_home",
]
