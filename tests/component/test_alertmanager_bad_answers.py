"""Whatever answers at the Alertmanager URL, a POST ends in its timeout, delivered or failed.

Found by attack on a real socket: an answer that is not HTTP (an SSH or TLS server on that port)
raised http.client.BadStatusLine out of the client and ended `alerts run`; an answer trickled a
byte a second held a POST with a 2 s timeout for ever, and a 200 whose body never ends was read
into memory (2.6 GB in 8 s) for ever, every rule evaluation waiting behind it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipelines.alerts.alertmanager import AlertmanagerClient, _Deadline
from pipelines.alerts.state import Alert

pytestmark = pytest.mark.component

Answer = Callable[[socket.socket], None]


@pytest.fixture
def answering() -> Iterator[Callable[[Answer], str]]:
    """A loopback listener that reads each request's first bytes, then answers with the given function."""
    listeners: list[socket.socket] = []

    def start(answer: Answer) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve() -> None:
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                with connection:
                    connection.recv(65536)
                    with contextlib.suppress(OSError):  # the client gave up first
                        answer(connection)

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    for listener in listeners:
        listener.close()


def firing() -> Alert:
    now = dt.datetime.now(dt.UTC)
    return Alert({"alertname": "data_loss"}, {}, now, now + dt.timedelta(minutes=3), "file:///alerts")


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"y" * 70_000 + b"\r\n\r\n",
    ],
    ids=["not-http", "header-too-long"],
)
def test_a_broken_answer_is_a_failed_delivery(answering: Callable[[Answer], str], answer: bytes) -> None:
    client = AlertmanagerClient(answering(lambda connection: connection.sendall(answer)), timeout_s=5)
    resolved = dataclasses.replace(firing(), resolved=True)
    assert client.send([resolved]) is False
    assert (client.sent, client.failures) == (0, 1)
    assert list(client._resolved) == [resolved]  # kept for the next POST


def test_a_refused_post_logs_what_the_receiver_said(
    answering: Callable[[Answer], str], caplog: pytest.LogCaptureFixture
) -> None:
    # A 400 repeats at every evaluation (an operator rule's label Alertmanager refuses): the log said
    # only "HTTP Error 400: Bad Request", never which label.
    said = b'{"code":400,"message":"invalid label set: invalid name 1team"}\n' + b"x" * 5000
    head = b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % len(said)
    client = AlertmanagerClient(answering(lambda connection: connection.sendall(head + said)), timeout_s=5)
    with caplog.at_level(logging.WARNING):
        assert client.send([firing()]) is False
    (line,) = [r.getMessage() for r in caplog.records if "alerts not delivered" in r.getMessage()]
    assert "HTTP Error 400" in line
    assert "invalid label set: invalid name 1team" in line
    assert len(line) < 800  # at most 300 characters of it, on one line
    assert "\n" not in line


def trickle(connection: socket.socket) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 10_000:
        connection.sendall(bytes([byte]))
        time.sleep(0.1)


def endless(connection: socket.socket) -> None:
    """Never ends for a reader without a deadline; 6.4 MB/s at most, so old code does not eat the machine."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    for _ in range(3000):
        connection.sendall(b"x" * 65536)
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("answer", "delivered"), [(trickle, False), (endless, True)], ids=["trickle", "endless"]
)
def test_a_post_takes_at_most_its_timeout_however_the_answer_arrives(
    answering: Callable[[Answer], str], answer: Answer, delivered: bool
) -> None:
    client = AlertmanagerClient(answering(answer), timeout_s=1)
    outcome: list[bool] = []
    sending = threading.Thread(target=lambda: outcome.append(client.send([firing()])), daemon=True)
    sending.start()
    sending.join(5)
    assert not sending.is_alive(), "the POST outlived its 1 s timeout by 4 s"
    assert outcome == [delivered]  # a 200 is a delivery, whatever follows it


def trickled_handshake(connection: socket.socket) -> None:
    """A TLS record header announcing 16 KiB, then its bytes one at a time: a handshake without end."""
    connection.sendall(b"\x16\x03\x03\x40\x00")
    for _ in range(100):
        connection.sendall(b"\x02")
        time.sleep(0.1)


def test_an_https_post_whose_handshake_is_trickled_ends_in_its_timeout(
    answering: Callable[[Answer], str],
) -> None:
    # The deadline holds the raw socket from its connect on; the handshake is bounded too.
    url = answering(trickled_handshake).replace("http://", "https://")
    client = AlertmanagerClient(url, timeout_s=1)
    outcome: list[bool] = []
    sending = threading.Thread(target=lambda: outcome.append(client.send([firing()])), daemon=True)
    sending.start()
    sending.join(5)
    assert not sending.is_alive(), "the handshake outlived the POST's 1 s timeout by 4 s"
    assert outcome == [False]


def test_a_connection_made_after_the_deadline_is_shut_at_once() -> None:
    # The deadline only shut the sockets it held when it fired: one that finished connecting (and
    # its TLS handshake, which has a timeout of its own) just after was read without a bound.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        deadline = _Deadline()
        deadline.expire()
        with deadline.connect(listener.getsockname(), 5) as late:
            peer, _ = listener.accept()
            with peer:
                peer.sendall(b"HTTP/1.1 200 OK\r\n")
                try:
                    answer = late.recv(100)
                except ConnectionResetError:  # shut, then written to: the kernel resets it
                    answer = b""
                assert answer == b""  # nothing of the answer is read from it


@pytest.fixture
def unavailable_once() -> Iterator[tuple[str, list[list[dict[str, Any]]]]]:
    """An Alertmanager that answers 503 to the first POST and 200 after, and the bodies it took."""
    taken: list[list[dict[str, Any]]] = []
    posts = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            posts[0] += 1
            if posts[0] > 1:
                taken.append(body)
            self.send_response(503 if posts[0] == 1 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", taken
    server.shutdown()
    server.server_close()


def test_a_series_resolved_while_undelivered_and_firing_again_is_last_sent_firing(
    unavailable_once: tuple[str, list[list[dict[str, Any]]]],
) -> None:
    """Alertmanager stamps one POST's alerts with one time and stores them in order (the later of two
    with the same labels wins): a stale resolved after the firing one resolved a firing alert."""
    url, taken = unavailable_once
    client = AlertmanagerClient(url, timeout_s=5)
    earlier = firing()
    resolved = dataclasses.replace(
        earlier, ends_at=earlier.starts_at + dt.timedelta(seconds=30), resolved=True
    )
    assert client.send([resolved]) is False  # 503: kept
    again = dataclasses.replace(earlier, starts_at=resolved.ends_at + dt.timedelta(seconds=30))
    assert client.send([again]) is True
    [body] = taken
    last = {json.dumps(alert["labels"], sort_keys=True): alert for alert in body}
    assert [alert["startsAt"] for alert in last.values()] == [again.to_alertmanager()["startsAt"]]
