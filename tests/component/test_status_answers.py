"""`tykpulse status --url` against endpoints that answer something other than a tykpulse /status
(real HTTP server, real sockets): a clear line and exit 2, never a traceback, never an unbounded read.
A port can outlive the command that announced it and be anyone's."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from pipelines.cli.commands import status

pytestmark = pytest.mark.component

STATUS = b'{"command": "proxy", "healthy": true, "detail": "ok", "uptime_s": 1.0, "totals": {}}'


@pytest.fixture
def answering() -> Iterator[tuple[str, list[bytes]]]:
    """A server whose every answer is the last body put in the list."""
    bodies: list[bytes] = [STATUS]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies[-1]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"<html>hello</html>", "not JSON"),
        (b"\xff\xfe not text", "not JSON"),
        (b"[1, 2, 3]", "without a status's"),
        (b'{"healthy": true}', "without a status's"),
        (b'{"command": "run", "healthy": true, "detail": "ok", "uptime_s": 1}', "cannot read the status"),
        (STATUS.replace(b'"totals": {}', b'"totals": [1]'), "cannot read the status"),
    ],
)
def test_an_answer_that_is_no_status_is_a_clear_error(
    answering: tuple[str, list[bytes]], body: bytes, says: str
) -> None:
    url, bodies = answering
    bodies.append(body)
    result = CliRunner().invoke(status.command, ["--url", url])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert says in result.output


def test_a_status_is_still_read_and_an_oversized_answer_is_not(answering: tuple[str, list[bytes]]) -> None:
    url, bodies = answering
    result = CliRunner().invoke(status.command, ["--url", url])
    assert (result.exit_code, "proxy healthy" in result.output) == (0, True), result.output
    bodies.append(STATUS + b" " * 4096)  # valid JSON, but past the bound given below
    assert status.fetch_status(url, max_bytes=len(STATUS) + 4096)["healthy"] is True
    with pytest.raises(status.NotAStatusError, match="over 4096 bytes"):
        status.fetch_status(url, max_bytes=4096)
