"""A real local HTTP receiver for Alertmanager API v2 posts (`POST /api/v2/alerts`)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class AlertReceiver:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dt.datetime, list[dict[str, Any]]]] = []
        self.authorizations: list[str | None] = []  # each post's Authorization header
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver._changed:
                    receiver.posts.append((self.path, dt.datetime.now(dt.UTC), body))
                    receiver.authorizations.append(self.headers.get("Authorization"))
                    receiver._changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def alerts(self) -> list[tuple[dt.datetime, dict[str, Any]]]:
        with self._changed:
            return [(at, alert) for _, at, body in self.posts for alert in body]

    def wait_for(
        self, predicate: Callable[[dict[str, Any], dt.datetime], bool], timeout: float
    ) -> dict[str, Any]:
        """The first alert received for which predicate(alert, received_at) holds."""
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout)
        with self._changed:
            while True:
                for _, at, body in self.posts:
                    for alert in body:
                        if predicate(alert, at):
                            return alert
                remaining = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
                if remaining <= 0:
                    msg = f"no matching alert within {timeout}s; received {len(self.posts)} posts"
                    raise AssertionError(msg)
                self._changed.wait(remaining)


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
def alert_receiver() -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
    receiver.thread.join(timeout=10)
