"""Whatever answers at the Alertmanager URL, a POST is delivered or failed: `alerts run` carries on.

Found by attack on a real socket: an answer that is not HTTP (an SSH or TLS server on that port)
raised http.client.BadStatusLine out of the client and ended `alerts run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import socket
import threading
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
