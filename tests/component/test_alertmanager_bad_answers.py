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
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pipelines.alerts.alertmanager import AlertmanagerClient
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
