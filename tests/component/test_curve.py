"""CurveZMQ with real certificates over real tcp: who gets in, rotation while running, no keys in logs."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from pipelines.errors import ConfigurationError
from pipelines.firehose.codec import DecodedMessage, MessageDecoder
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.proxy import FirehoseProxy, run_in_thread
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.firehose.subscriber import FirehoseSubscriber
from pipelines.security.curve import CurveSession, generate_certificates
from pipelines.settings import CurveSettings
from tests.conftest import T0_NS
from tests.harness.processes import free_port
from tests.helpers import analytics

pytestmark = pytest.mark.component


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """server, worker and rogue key pairs; allow/ admits only the worker."""
    out: dict[str, Path] = {"dir": tmp_path / "keys", "allow": tmp_path / "allow"}
    for name in ("server", "worker", "rogue", "gateway"):
        out[name], out[name + "_secret"] = generate_certificates(out["dir"], name)
    out["allow"].mkdir()
    shutil.copy(out["worker"], out["allow"])
    return out


def key_material(keys: dict[str, Path]) -> list[str]:
    """Every public and secret key string in the certificate files."""
    found = []
    for path in keys["dir"].iterdir():
        for line in path.read_text().splitlines():
            if "-key = " in line:
                found.append(line.split("=", 1)[1].strip().strip('"'))
    assert len(found) == 12
    return found


@pytest.fixture
def contexts() -> Iterator[Callable[[], zmq.Context[Any]]]:
    made: list[zmq.Context[Any]] = []

    def make() -> zmq.Context[Any]:
        made.append(zmq.Context())
        return made[-1]

    yield make
    for context in made:
        context.destroy(linger=0)


def client(context: zmq.Context[Any], keys: dict[str, Path], name: str) -> CurveSession:
    return CurveSession(
        context,
        CurveSettings(curve_secret_key=str(keys[name + "_secret"]), curve_server_key=str(keys["server"])),
    )


def server(context: zmq.Context[Any], keys: dict[str, Path]) -> CurveSession:
    return CurveSession(
        context, CurveSettings(curve_secret_key=str(keys["server_secret"]), curve_allow=str(keys["allow"]))
    )


def collect(subscriber: FirehoseSubscriber, expected: int, timeout_s: float = 15.0) -> list[list[bytes]]:
    got: list[list[bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(subscriber.receive(50))
    return got


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def probe_until_received(publisher: FirehosePublisher, subscriber: FirehoseSubscriber) -> bool:
    """Publish small probes until this subscriber gets one (readiness, not a sleep); drain after."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        publisher.publish("tyk.analytics", [analytics(T0_NS)])
        if list(subscriber.receive(50)):
            while list(subscriber.receive(100)):
                pass
            return True
    return False


def seqs(messages: list[list[bytes]]) -> list[int]:
    decoded = [MessageDecoder().decode(m) for m in messages]
    return [d.envelope.seq for d in decoded if isinstance(d, DecodedMessage)]


def test_allowed_worker_receives_everything_others_nothing_and_no_key_is_logged(
    keys: dict[str, Path], contexts: Callable[[], zmq.Context[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    server_context = contexts()
    server_session = server(server_context, keys)
    publisher = FirehosePublisher(
        server_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="gw1", curve=server_session
    )
    clients = contexts()
    sessions = [client(clients, keys, "worker"), client(clients, keys, "rogue")]
    endpoint = [parse_endpoint(f"tcp://127.0.0.1:{port}")]
    allowed = FirehoseSubscriber(clients, endpoint, curve=sessions[0])
    rogue = FirehoseSubscriber(clients, endpoint, curve=sessions[1])
    plain = FirehoseSubscriber(contexts(), endpoint)
    try:
        assert server_session.allowlist is not None
        assert wait_until(
            lambda: server_session.allowlist is not None and server_session.allowlist.denied >= 1
        )
        assert publisher.wait_for_subscribers(15)
        first = publisher.nodes["gw1"].seq
        for i in range(200):
            publisher.publish("tyk.analytics", [analytics(T0_NS + i)])
        got = collect(allowed, 200)
        assert seqs(got) == list(range(first, first + 200))
        assert collect(rogue, 1, timeout_s=0.5) == []
        assert collect(plain, 1, timeout_s=0.5) == []
    finally:
        for subscriber in (allowed, rogue, plain):
            subscriber.close()
        publisher.close(0)
        for session in (*sessions, server_session):
            session.close()
    for secret in key_material(keys):
        assert secret not in caplog.text
    assert "fingerprint=" in caplog.text


def test_keys_rotate_while_running_added_admitted_removed_revoked(
    keys: dict[str, Path], contexts: Callable[[], zmq.Context[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    server_context = contexts()
    server_session = server(server_context, keys)
    allowlist = server_session.allowlist
    assert allowlist is not None
    publisher = FirehosePublisher(
        server_context, [parse_endpoint(f"@tcp://127.0.0.1:{port}")], node="gw1", curve=server_session
    )
    clients = contexts()
    sessions = [client(clients, keys, "worker"), client(clients, keys, "gateway")]
    endpoint = [parse_endpoint(f"tcp://127.0.0.1:{port}")]
    worker = FirehoseSubscriber(clients, endpoint, curve=sessions[0])
    early = FirehoseSubscriber(clients, endpoint, curve=sessions[1])
    subscribers = [worker, early]
    try:
        assert wait_until(lambda: allowlist.denied >= 1)  # the gateway key is not admitted yet
        assert probe_until_received(publisher, worker)
        # admit it: copy its public key in and reload (what SIGHUP does); no restart of the server
        shutil.copy(keys["gateway"], keys["allow"])
        assert server_session.reload() == (1, 0)
        # libzmq ends a session refused by ZAP for good, so the refused client connects anew
        newcomer = FirehoseSubscriber(clients, endpoint, curve=sessions[1])
        subscribers.append(newcomer)
        assert probe_until_received(publisher, newcomer)
        # revoke the worker: remove its key and reload; the publisher rebinds on its next send
        (keys["allow"] / "worker.key").unlink()
        denied_before = allowlist.denied
        assert server_session.reload() == (0, 1)
        assert probe_until_received(publisher, newcomer)  # rebinding happened, the newcomer is back
        assert wait_until(lambda: allowlist.denied > denied_before)  # the worker tried again, refused
        while list(worker.receive(100)):
            pass  # anything that was already in its queue before the revocation
        first = publisher.nodes["gw1"].seq
        for i in range(100):
            publisher.publish("tyk.analytics", [analytics(T0_NS + i)])
        assert seqs(collect(newcomer, 100)) == list(range(first, first + 100))
        assert collect(worker, 1, timeout_s=0.5) == []
        assert collect(early, 1, timeout_s=0.1) == []
    finally:
        for subscriber in subscribers:
            subscriber.close()
        publisher.close(0)
        for session in (*sessions, server_session):
            session.close()
    for secret in key_material(keys):
        assert secret not in caplog.text


def test_proxy_with_curve_on_both_sides_forwards_to_allowed_workers(
    keys: dict[str, Path], contexts: Callable[[], zmq.Context[Any]]
) -> None:
    shutil.copy(keys["gateway"], keys["allow"])
    front, back = free_port(), free_port()
    proxy_context = contexts()
    proxy_session = server(proxy_context, keys)
    proxy = FirehoseProxy(
        proxy_context,
        [parse_endpoint(f"@tcp://127.0.0.1:{front}")],
        [parse_endpoint(f"@tcp://127.0.0.1:{back}")],
        curve=proxy_session,
    )
    thread = run_in_thread(proxy)
    clients = contexts()
    worker_session, gateway_session = client(clients, keys, "worker"), client(clients, keys, "gateway")
    subscriber = FirehoseSubscriber(
        clients, [parse_endpoint(f"tcp://127.0.0.1:{back}")], curve=worker_session
    )
    publisher = FirehosePublisher(
        clients, [parse_endpoint(f"tcp://127.0.0.1:{front}")], node="gw1", curve=gateway_session
    )
    try:
        assert publisher.wait_for_subscribers(15), "subscription did not cross the CURVE proxy"
        for i in range(50):
            publisher.publish("tyk.analytics", [analytics(T0_NS + i)])
        assert seqs(collect(subscriber, 50)) == list(range(50))
        # a revocation makes the proxy rebind both sides and carry on
        (keys["allow"] / "gateway.key").unlink()
        proxy_session.reload()
        proxy.refresh()
        assert proxy_session.allowlist is not None
        denied = proxy_session.allowlist.denied
        assert wait_until(
            lambda: proxy_session.allowlist is not None and proxy_session.allowlist.denied > denied
        )
    finally:
        publisher.close(0)
        subscriber.close()
        proxy.stop()
        thread.join(5)
        proxy.close()
        for session in (worker_session, gateway_session, proxy_session):
            session.close()


def test_misconfigurations_fail_clearly(
    keys: dict[str, Path], contexts: Callable[[], zmq.Context[Any]]
) -> None:
    context = contexts()
    no_allow = CurveSession(context, CurveSettings(curve_secret_key=str(keys["server_secret"])))
    with pytest.raises(ConfigurationError, match="--curve-allow"):
        FirehoseSubscriber(context, [parse_endpoint(f"@tcp://127.0.0.1:{free_port()}")], curve=no_allow)
    with pytest.raises(ConfigurationError, match="--curve-server-key"):
        FirehoseSubscriber(context, [parse_endpoint(f"tcp://127.0.0.1:{free_port()}")], curve=no_allow)
    with pytest.raises(ConfigurationError, match="no secret key"):
        CurveSession(context, CurveSettings(curve_secret_key=str(keys["server"])))
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        generate_certificates(keys["dir"], "server")
    assert (keys["server_secret"].stat().st_mode & 0o777) == 0o600


def test_a_key_file_that_is_a_fifo_is_refused_at_once_and_an_open_secret_warned(
    keys: dict[str, Path],
    contexts: Callable[[], zmq.Context[Any]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A FIFO given (or planted) as a key file held the start in open() until a writer came.
    fifo = tmp_path / "planted.key_secret"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        CurveSession(contexts(), CurveSettings(curve_secret_key=str(fifo)))
    keys["worker_secret"].chmod(0o644)
    with caplog.at_level(logging.WARNING):
        client(contexts(), keys, "worker").close()
    assert any("readable by group or others" in r.getMessage() for r in caplog.records)


def test_a_secret_key_is_written_where_only_its_owner_can_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by attack: pyzmq wrote NAME.key_secret 0644 into the key directory and the mode was
    # fixed afterwards; a user watching the directory opened it in between (2 runs in 20).
    written_in: list[tuple[Path, int]] = []
    create = zmq.auth.create_certificates

    def recording(directory: str | Path, name: str) -> tuple[str, str]:
        written_in.append((Path(directory), Path(directory).stat().st_mode & 0o777))
        return create(directory, name)

    monkeypatch.setattr(zmq.auth, "create_certificates", recording)
    old_umask = os.umask(0)  # the worst umask: pyzmq's files would be world-writable
    try:
        public, secret = generate_certificates(tmp_path, "gw")
    finally:
        os.umask(old_umask)
    ((where, mode),) = written_in
    assert (where.parent, mode) == (tmp_path, 0o700)  # beside the keys, in a directory of its own
    # the public half too is no one else's to rewrite: it is what gets copied into allowlists
    assert (public.stat().st_mode & 0o777, secret.stat().st_mode & 0o777) == (0o644, 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.key", "gw.key_secret"]  # nothing left
    assert not where.exists()
    assert public.read_text().count("public-key") == secret.read_text().count("public-key") == 1


def test_the_key_directory_it_makes_is_no_one_else_s_to_write_whatever_the_umask(tmp_path: Path) -> None:
    # Found by attack: `keys generate w1 --dir kd/keys` under umask 000 made kd/ and kd/keys 0777 and
    # w1.key 0666: any user could replace the key pair, or the public key an operator then admits.
    old_umask = os.umask(0)
    try:
        public, _ = generate_certificates(tmp_path / "kd" / "keys", "w1")
    finally:
        os.umask(old_umask)
    for path in (tmp_path / "kd", tmp_path / "kd" / "keys", public):
        assert path.stat().st_mode & 0o022 == 0, (path, oct(path.stat().st_mode))


@pytest.mark.parametrize("open_to_others", ["directory", "key file"])
def test_an_allowlist_others_may_write_admits_no_key(
    keys: dict[str, Path], contexts: Callable[[], zmq.Context[Any]], open_to_others: str
) -> None:
    # Found by review: the allowlist was read whatever its modes, so a user who may write the
    # directory (or a key file in it) had their own public key admitted at the next reload.
    session = server(contexts(), keys)
    try:
        assert session.allowlist is not None
        assert len(session.allowlist.keys) == 1
        shutil.copy(keys["rogue"], keys["allow"])
        target = keys["allow"] if open_to_others == "directory" else keys["allow"] / "rogue.key"
        target.chmod(0o777 if open_to_others == "directory" else 0o666)
        assert session.reload() == (0, 0)  # refused: the list as it was
        assert len(session.allowlist.keys) == 1
        target.chmod(0o755 if open_to_others == "directory" else 0o644)
        assert session.reload() == (1, 0)  # the operator's own rogue.key, now that no one else may write
    finally:
        session.close()


def test_a_revocation_rebind_keeps_an_ipc_socket_file_owner_only(
    keys: dict[str, Path], contexts: Callable[[], zmq.Context[Any]], tmp_path: Path
) -> None:
    # Found by review: the rebind after a revocation bound ipc:// plainly, so the socket file took
    # the umask's mode (0775 under umask 002: the group could connect) instead of attach's 0600.
    context = contexts()
    session = server(context, keys)
    path = tmp_path / "firehose.sock"
    old = os.umask(0o002)
    try:
        publisher = FirehosePublisher(context, [parse_endpoint(f"@ipc://{path}")], node="gw1", curve=session)
        try:
            assert path.stat().st_mode & 0o777 == 0o600
            (keys["allow"] / "worker.key").unlink()
            assert session.reload() == (0, 1)
            assert publisher.bound.refresh()  # what the publisher does on its next send
            assert path.stat().st_mode & 0o777 == 0o600
        finally:
            publisher.close(0)
    finally:
        os.umask(old)
        session.close()
