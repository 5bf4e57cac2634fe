"""A redirect from the Alertmanager URL is a failed delivery: never followed, credentials never resent.

Found by attack: urllib followed a 302 from the webhook to another host, sent it the
`Authorization: Basic` of the webhook URL's user:password, turned the POST into a GET without its
alerts, and `alerts run` logged them delivered.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipelines.alerts.alertmanager import AlertmanagerClient
from pipelines.alerts.state import Alert

pytestmark = pytest.mark.component


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def hosts() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A webhook that redirects every request to another host, and what that host was sent."""
    seen: list[tuple[str, str | None]] = []

    class Other(BaseHTTPRequestHandler):
        def answer(self) -> None:
            seen.append((self.command, self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.answer()

        def do_POST(self) -> None:
            self.answer()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    other, other_address = serve(Other)

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://{other_address}/api/v2/alerts")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    webhook, webhook_address = serve(Redirecting)
    try:
        yield f"http://am-user:Am%40Pass123@{webhook_address}", seen
    finally:
        for server in (webhook, other):
            server.shutdown()
            server.server_close()


def test_a_redirect_is_not_followed_and_counts_as_not_delivered(
    hosts: tuple[str, list[tuple[str, str | None]]],
) -> None:
    webhook, seen_elsewhere = hosts
    now = dt.datetime.now(dt.UTC)
    firing = Alert({"alertname": "data_loss"}, {}, now, now + dt.timedelta(minutes=5), "file:///alerts")
    client = AlertmanagerClient(webhook, timeout_s=5)
    assert client.send([firing]) is False
    assert (client.sent, client.failures) == (0, 1)
    # before: ("GET", "Basic YW0tdXNlcjpBbUBQYXNzMTIz") reached the other host, and send() was True
    assert seen_elsewhere == []
