"""The webhook receiver in-process: real HTTP on loopback, real ZeroMQ, every answer it gives."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
from pydantic import SecretStr

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.publishing import BridgePublisher
from pipelines.bridges.tyk_webhook_server import (
    WebhookReceiver,
    WebhookStats,
    check_exposure,
    exposure_error,
    parse_listen,
    serve,
)
from pipelines.errors import ConfigurationError
from pipelines.firehose.endpoints import parse_endpoint
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.settings import TykWebhookSettings
from tests.harness.processes import free_port
from tests.harness.tykpulse import tykpulse

pytestmark = pytest.mark.component

WEBHOOKS = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures/tyk/webhooks.json").read_text(encoding="utf-8")
)
BODY = next(e for e in WEBHOOKS["events"] if e["name"] == "ratelimit_base64_key")
SECRET = "component-secret"


@pytest.fixture
def receiver(zmq_context: zmq.Context[Any]) -> Iterator[dict[str, Any]]:
    with running_receiver(zmq_context) as running:
        yield running


@contextlib.contextmanager
def running_receiver(zmq_context: zmq.Context[Any], **overrides: Any) -> Iterator[dict[str, Any]]:
    port = free_port()
    options: dict[str, Any] = {
        "secret": SECRET,
        "key_hash_salt": "salt",
        "max_body_bytes": 4096,
        "flush_ms": 5,
    }
    settings = TykWebhookSettings(listen=f"127.0.0.1:{port}", **(options | overrides))
    publisher = BridgePublisher(
        FirehosePublisher(zmq_context, [parse_endpoint("@tcp://127.0.0.1:0")], node="webhook-test")
    )
    stop = threading.Event()
    result: dict[str, WebhookStats] = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", serve(settings, publisher, stop)))
    thread.start()
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    try:
        yield {"port": port, "zmq": publisher.publisher.addresses[0], "result": result}
    finally:
        stop.set()
        thread.join(timeout=20)
        publisher.close(0)


def request(
    port: int, method: str, path: str, body: str = "", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body.encode(), headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_no_subscriber_means_503(receiver: dict[str, Any]) -> None:
    port = receiver["port"]
    assert request(port, "GET", "/healthz") == (503, {"subscribed": False})
    status, body = request(port, "POST", "/tyk/events", BODY["body"], {"X-Tykpulse-Secret": SECRET})
    assert (status, body["rejected"]) == (503, "no_subscriber")


def test_accepts_publishes_and_refuses(receiver: dict[str, Any], zmq_context: zmq.Context[Any]) -> None:
    port = receiver["port"]
    sub = zmq_context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"tyk.event.")
    sub.connect(receiver["zmq"])
    try:
        while request(port, "GET", "/healthz")[0] != 200:
            sub.poll(20)  # lets the SUB attach its pipe and send the subscription
        ok = {"X-Tykpulse-Secret": SECRET, "User-Agent": "Tyk-Hookshot", "Content-Type": "application/json"}
        path = "/tyk/events?org_id=org-1&api_id=api-1"
        assert request(port, "POST", path, BODY["body"], ok) == (200, {"accepted": 1})
        assert sub.poll(5000)
        topic, envelope, payload = sub.recv_multipart()
        assert topic == b"tyk.event.RatelimitExceeded"
        assert msgspec.msgpack.decode(envelope)["node"] == "webhook-test"
        [record] = msgspec.msgpack.decode(payload)
        assert record["key"] == KeyDigester(b"salt").digest(BODY["expected"]["key"])
        assert (record["org_id"], record["api_id"], record["origin"]) == ("org-1", "api-1", "2001:db8::7")

        assert request(port, "POST", path, BODY["body"])[0] == 401
        assert request(port, "POST", path, BODY["body"], {"X-Tykpulse-Secret": "nope"})[0] == 401
        assert request(port, "POST", path, "x" * 5000, ok)[0] == 413
        assert request(port, "POST", path, "{not json", ok)[0] == 400
        assert request(port, "GET", "/tyk/events", "", ok)[0] == 405
        assert request(port, "POST", "/elsewhere", BODY["body"], ok)[0] == 404
        status, stats = request(port, "GET", "/stats")
        assert status == 200
        assert stats["accepted"] == 1
        assert stats["rejected"] == {
            "unauthorized": 2,
            "too_large": 1,
            "bad_body": 1,
            "method": 1,
            "not_found": 1,
        }
    finally:
        sub.close()


def test_malformed_http_is_a_400(receiver: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", receiver["port"]), timeout=5) as s:
        s.sendall(b"POST /tyk/events HTTP/1.1\r\nContent-Length: banana\r\n\r\n")
        assert s.recv(200).startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("listen", [":0", "0.0.0.0:0", "[::]:0"])
def test_a_listen_other_machines_reach_needs_a_secret(listen: str, zmq_context: zmq.Context[Any]) -> None:
    publisher = BridgePublisher(FirehosePublisher(zmq_context, [parse_endpoint("@tcp://127.0.0.1:0")]))
    try:
        with pytest.raises(ConfigurationError, match="--secret"):
            serve(TykWebhookSettings(listen=listen), publisher, threading.Event())
    finally:
        publisher.close(0)
    host = parse_listen(listen)[0]
    assert exposure_error(TykWebhookSettings(listen=listen, secret=SecretStr("s")), host) is None


def test_the_command_refuses_every_interface_without_a_secret() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TYKPULSE_")}
    done = subprocess.run(
        tykpulse("bridge", "tyk-webhook", "--listen", ":8089"),
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert done.returncode == 2
    assert "--secret" in done.stderr
    assert "Traceback" not in done.stderr


def test_loopback_without_a_secret_is_allowed_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    for listen in ("127.0.0.1:8089", "[::1]:8089", "localhost:8089"):
        caplog.clear()
        check_exposure(TykWebhookSettings(listen=listen), parse_listen(listen)[0])
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "no --secret" in caplog.records[0].getMessage()


def test_a_deep_body_is_a_400_and_the_next_post_is_served(
    receiver: dict[str, Any], zmq_context: zmq.Context[Any], caplog: pytest.LogCaptureFixture
) -> None:
    port = receiver["port"]
    sub = zmq_context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"tyk.event.")
    sub.connect(receiver["zmq"])
    ok = {"X-Tykpulse-Secret": SECRET, "Content-Type": "application/json"}
    # Deeper than the interpreter's recursion limit (1 000), within the fixture's 4 096-byte limit.
    closed = '{"event": "RatelimitExceeded", "x": ' + "[" * 2000 + "]" * 2000 + "}"
    unclosed = "[" * 4000
    try:
        while request(port, "GET", "/healthz")[0] != 200:
            sub.poll(20)
        for body in (closed, unclosed, closed):
            status, reply = request(port, "POST", "/tyk/events", body, ok)
            assert (status, reply["rejected"]) == (400, "too_deep")
            assert "64" in reply["detail"]
        assert request(port, "POST", "/tyk/events", "{not json", ok)[0] == 400
        assert request(port, "POST", "/tyk/events", BODY["body"], ok) == (200, {"accepted": 1})
        assert sub.poll(5000)
        assert sub.recv_multipart()[0] == b"tyk.event.RatelimitExceeded"
        stats = request(port, "GET", "/stats")[1]
        assert stats["accepted"] == 1
        assert stats["rejected"] == {"too_deep": 3, "bad_body": 1}
    finally:
        sub.close()
    logged = [r.getMessage() for r in caplog.records if "webhook rejected" in r.getMessage()]
    assert len([line for line in logged if "reason=too_deep" in line]) == 1  # throttled: one per period
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text


def _events_received(sub: zmq.Socket[Any], count: int) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while len(records) < count:
        assert sub.poll(5000), f"got {len(records)} of {count} events"
        records += msgspec.msgpack.decode(sub.recv_multipart()[2])
    return records


def test_unpublishable_values_are_400s_and_the_good_events_around_them_are_published(
    receiver: dict[str, Any], zmq_context: zmq.Context[Any]
) -> None:
    port = receiver["port"]
    sub = zmq_context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"tyk.event.")
    sub.connect(receiver["zmq"])
    ok = {"X-Tykpulse-Secret": SECRET, "Content-Type": "application/json"}

    def post(i: int, extra: str = "") -> tuple[int, dict[str, Any]]:
        body = f'{{"event":"AuthFailure","key":"rawkey{i}","message":"good {i}"{extra}}}'
        result: tuple[int, dict[str, Any]] = request(port, "POST", "/tyk/events", body, ok)
        return result

    try:
        while request(port, "GET", "/healthz")[0] != 200:
            sub.poll(20)
        # msgpack cannot carry the number, UTF-8 cannot carry the lone surrogate: before, both were
        # answered 200 and the flush holding them failed with OverflowError / UnicodeEncodeError,
        # silently dropping every event batched with them
        assert post(1) == (200, {"accepted": 1})
        status, reply = post(2, ',"response_code":99999999999999999999999')
        assert (status, reply["rejected"]) == (400, "out_of_range")
        assert "response_code" in reply["detail"]
        assert post(3) == (200, {"accepted": 1})
        status, reply = post(4, ',"reason":"\\ud800"')
        assert (status, reply["rejected"]) == (400, "bad_body")
        assert post(5, ',"response_code":-9223372036854775808') == (200, {"accepted": 1})
        records = _events_received(sub, 3)
        assert [r["message"] for r in records] == ["good 1", "good 3", "good 5"]
        deadline = time.monotonic() + 5
        while (stats := request(port, "GET", "/stats")[1])["published"] < 3:  # counted after the send
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert (stats["accepted"], stats["published"]) == (3, 3)
        assert stats["rejected"] == {"out_of_range": 1, "bad_body": 1}
    finally:
        sub.close()


def test_an_event_the_publisher_refuses_is_counted_logged_and_spares_its_batch(
    zmq_context: zmq.Context[Any], caplog: pytest.LogCaptureFixture
) -> None:
    settings = TykWebhookSettings(listen="127.0.0.1:0", key_hash_salt=SecretStr("salt"), message_records=10)
    publisher = BridgePublisher(
        FirehosePublisher(zmq_context, [parse_endpoint("@tcp://127.0.0.1:0")], node="webhook-test")
    )
    sub = zmq_context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"tyk.event.")
    sub.connect(publisher.publisher.addresses[0])
    receiver = WebhookReceiver(settings, publisher)
    try:
        assert publisher.wait_for_subscriber("tyk.event.X", 10)
        # what validation should never let through, handed to the flush as if it had
        batch = [{"event": "X", "n": 1}, {"event": "X", "n": 2**70}, {"event": "X", "n": 3}]
        receiver.publish({"tyk.event.X": batch})
        assert [r["n"] for r in _events_received(sub, 2)] == [1, 3]
    finally:
        sub.close()
        receiver.zmq_thread.shutdown()
        publisher.close(0)
    assert (receiver.stats.published, dict(receiver.stats.rejected)) == (2, {"publish_failed": 1})
    [line] = [r.getMessage() for r in caplog.records if "not published" in r.getMessage()]
    assert "OverflowError" in line


def read_response(s: socket.socket) -> bytes:
    """One whole response (head and a content-length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.startswith(b"content-length"))
    )
    while len(body) < length:
        chunk = s.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_target_that_is_not_a_url_is_a_400_and_the_connection_still_serves(
    receiver: dict[str, Any],
) -> None:
    # urlsplit raised ValueError (unclosed IPv6 bracket) and the connection was closed without a reply
    with socket.create_connection(("127.0.0.1", receiver["port"]), timeout=5) as s:
        s.sendall(b"POST //[x/tyk/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        reply = read_response(s)
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert b'"bad_target"' in reply
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 503 ")  # same connection, next request answered
    assert request(receiver["port"], "GET", "/stats")[1]["rejected"] == {"bad_target": 1}


def test_a_request_dribbled_in_is_answered_408_at_its_deadline(zmq_context: zmq.Context[Any]) -> None:
    # slowloris: before, the 120 s timeout applied to each read, so a byte every few seconds held the
    # connection (and its task) open for as long as the client liked
    with running_receiver(zmq_context, request_timeout_s=1.0) as running:
        with socket.create_connection(("127.0.0.1", running["port"]), timeout=10) as s:
            started = time.monotonic()
            head = b"POST /tyk/events HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
            s.setblocking(False)
            reply = b""
            for byte in head:  # a byte every 0.1 s: each read is quick, the request never completes
                with contextlib.suppress(BlockingIOError):
                    reply = s.recv(4096)
                if reply or time.monotonic() - started > 8:
                    break
                with contextlib.suppress(OSError):
                    s.send(bytes([byte]))
                time.sleep(0.1)
            s.setblocking(True)
            reply = reply or read_response(s)
            assert reply.startswith(b"HTTP/1.1 408 "), reply
            assert time.monotonic() - started < 5
            assert b'"request_timeout"' in reply + read_rest(s)
        assert request(running["port"], "GET", "/stats")[1]["rejected"] == {"request_timeout": 1}


def read_rest(s: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := s.recv(4096):
            data += chunk
    return data


def test_connections_beyond_the_cap_are_refused_503(zmq_context: zmq.Context[Any]) -> None:
    with running_receiver(zmq_context, max_connections=3) as running:
        port = running["port"]
        refused = 0
        authorised = (
            f"POST /tyk/events HTTP/1.1\r\nHost: x\r\nX-Tykpulse-Secret: {SECRET}\r\n"
            f"Content-Length: {len(BODY['body'])}\r\n\r\n{BODY['body']}"
        ).encode()

        def occupy() -> socket.socket:
            """A keep-alive connection that sent the secret (never closed to make room; a slot may still
            be held by a closed one)."""
            nonlocal refused
            while True:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                try:
                    s.sendall(authorised)
                    if b'"no_subscriber"' in read_response(s):
                        return s
                except ConnectionError:  # refused before the request was read: may arrive as a reset
                    pass
                refused += 1
                s.close()
                time.sleep(0.05)

        held = [occupy() for _ in range(3)]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                refusal = read_response(extra)
                refused += 1
                assert refusal.startswith(b"HTTP/1.1 503 ")
                assert b'"too_many_connections"' in refusal
                assert extra.recv(100) == b""  # closed
            for s in held:  # none of them was closed to make room
                s.sendall(authorised)
                assert b'"no_subscriber"' in read_response(s)
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 5
        while True:  # until the receiver has seen the idle ones close
            try:
                reply = request(port, "GET", "/stats")
            except ConnectionError:  # refused before the request was read: may arrive as a reset
                reply = (503, {})
            if reply[0] != 503:
                break
            refused += 1
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert reply[1]["rejected"] == {"too_many_connections": refused, "no_subscriber": 6}


def test_connections_that_send_nothing_cannot_hold_every_slot(zmq_context: zmq.Context[Any]) -> None:
    """Anyone who reaches the port, without the secret, opened max_connections connections and sent
    nothing (or a GET now and then): each was kept for the 120 s idle timeout, and every webhook Tyk
    sent meanwhile was answered 503 too_many_connections (and lost: Tyk never retries one). Now a new
    connection closes the one that has waited longest among those that never sent the secret."""
    with running_receiver(zmq_context, max_connections=4) as running:
        port = running["port"]
        ok = {"X-Tykpulse-Secret": SECRET}
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
        keeping = socket.create_connection(("127.0.0.1", port), timeout=5)  # one that asks now and then
        tyk: list[http.client.HTTPConnection] = []
        try:
            keeping.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b'"subscribed"' in read_response(keeping)
            for _ in range(4):  # Tyk's kept-alive connections are served (no worker: 503 no_subscriber)
                tyk.append(http.client.HTTPConnection("127.0.0.1", port, timeout=10))
                tyk[-1].request("POST", "/tyk/events", body=BODY["body"].encode(), headers=ok)
                response = tyk[-1].getresponse()
                assert (response.status, json.loads(response.read())["rejected"]) == (503, "no_subscriber")
            for s in [*silent, keeping]:  # every one of them was closed to make room
                s.settimeout(5)
                with contextlib.suppress(ConnectionError):
                    assert s.recv(100) == b""
        finally:
            for s in [*silent, keeping]:
                s.close()
            for c in tyk:
                c.close()
        stats = request(port, "GET", "/stats")[1]
        assert "too_many_connections" not in stats["rejected"]
        assert stats["rejected"]["evicted"] >= 5  # (and the fixture's readiness probe, when still open)


def test_an_oversized_body_is_refused_without_reading_it(receiver: dict[str, Any]) -> None:
    # before, the body was read (and discarded) to its end before the 413: here it never ends
    with socket.create_connection(("127.0.0.1", receiver["port"]), timeout=5) as s:
        head = f"POST /tyk/events HTTP/1.1\r\nHost: x\r\nX-Tykpulse-Secret: {SECRET}\r\n"
        s.sendall(head.encode() + b"Content-Length: 100000000\r\n\r\n" + b"x" * 8192)
        reply = read_response(s)
        assert reply.startswith(b"HTTP/1.1 413 ")
        assert b"connection: close" in reply.lower()
        assert read_rest(s) == b""  # closed by the receiver, the body never read to its end
    for chunked in (False, True):  # a body that only turns out too large while it arrives
        with socket.create_connection(("127.0.0.1", receiver["port"]), timeout=5) as s:
            framing = b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: 100\r\n\r\n"
            s.sendall(head.encode() + framing)
            if chunked:
                s.sendall(b"2000\r\n" + b"x" * 8192 + b"\r\n")
                reply = read_response(s)
                assert reply.startswith(b"HTTP/1.1 413 ")
            else:
                s.sendall(b"x" * 100)
                assert read_response(s).startswith(b"HTTP/1.1 503 ")  # within the limit: read, handled
    assert request(receiver["port"], "GET", "/stats")[1]["rejected"] == {"too_large": 2, "no_subscriber": 1}


def test_a_body_is_not_read_when_the_head_decides_the_answer(receiver: dict[str, Any]) -> None:
    """Without the secret, a POST's body was read to its end (and h11 parsed each chunk) before the
    401: a real receiver spent 7.3 s of its only event loop on 4 MB of one-byte chunks (a legit
    webhook meanwhile waited 1.3 s). Now the head alone earns the answer; the body is never read."""
    port = receiver["port"]
    heads = [
        b"POST /tyk/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",  # no secret
        b"POST /tyk/events HTTP/1.1\r\nHost: x\r\nX-Tykpulse-Secret: nope\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /stats HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    expected = [b"HTTP/1.1 401 ", b"HTTP/1.1 401 ", b"HTTP/1.1 404 ", b"HTTP/1.1 200 "]
    for head, status in zip(heads, expected, strict=True):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(head + b"1\r\nx\r\n" * 100)  # the body never ends
            reply = read_response(s)
            assert reply.startswith(status), reply
            assert b"connection: close" in reply.lower()
            assert read_rest(s) == b""  # closed by the receiver, the body never read to its end
    # the request a body decides is still read whole and answered on a kept-alive connection
    ok = {"X-Tykpulse-Secret": SECRET}
    assert request(port, "POST", "/tyk/events", BODY["body"], ok)[1]["rejected"] == "no_subscriber"
    assert request(port, "GET", "/stats")[1]["rejected"] == {
        "unauthorized": 2,
        "not_found": 1,
        "no_subscriber": 1,
    }


def pipeline_unread(port: int, seconds: float) -> socket.socket:
    """A connection that pipelines requests for `seconds` and never reads an answer (each answer is a
    404 that names the 8 KB path asked, so the socket buffers fill after a few hundred)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    requests = b"GET /" + b"x" * 8000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            s.send(requests)
        except BlockingIOError:
            time.sleep(0.05)
    return s


def test_a_client_that_never_reads_its_answers_holds_no_slot(zmq_context: zmq.Context[Any]) -> None:
    """Pipelined requests whose answers are never read left the receiver waiting for ever in
    writer.drain() (no deadline), the connection counted against --max-connections and not closed
    for room: two such connections and a cap of 2, and every webhook was a 503 for as long as the
    client liked. Now a reply not taken within request_timeout_s closes the connection (counted
    reply_unread), and one without the secret may be closed for room meanwhile."""
    with running_receiver(zmq_context, max_connections=2, request_timeout_s=1.0) as running:
        port = running["port"]
        hogs = [pipeline_unread(port, 1.0) for _ in range(2)]
        try:
            ok = {"X-Tykpulse-Secret": SECRET}
            status, body = request(port, "POST", "/tyk/events", BODY["body"], ok)
            assert (status, body.get("rejected")) == (503, "no_subscriber"), body  # served, not the cap
        finally:
            for s in hogs:
                s.close()
    with running_receiver(zmq_context, request_timeout_s=1.0) as running:
        hog = pipeline_unread(running["port"], 1.0)
        try:
            deadline = time.monotonic() + 8
            while True:  # the receiver gives up on it 1 s after its answers stop being taken
                rejected = request(running["port"], "GET", "/stats")[1]["rejected"]
                if "reply_unread" in rejected or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert rejected.get("reply_unread") == 1, rejected
            assert served_connections(running["port"]) == 0  # closed, not kept until its replies are read
        finally:
            hog.close()


def served_connections(port: int) -> int:
    """Established TCP connections whose local port is `port` (the receiver's side), from /proc."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "01")


def test_idle_connections_cannot_exhaust_the_descriptor_limit(tmp_path: Path) -> None:
    """A real receiver under the common 1,024-descriptor limit (soft and hard), --max-connections at
    its default 1,024: the cap was never reached, accept() failed with EMFILE first, and asyncio
    logged a traceback for each of up to 4,096 accept attempts at every wake-up (34 MB of log in 15 s,
    /healthz unanswered, CPU busy) for as long as anyone held ~1,000 idle connections. Now the cap
    fits the limit (with a warning) and the oldest idle connection is closed for a new one."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TYKPULSE_")}
    environment |= {"TYKPULSE_SECRET": SECRET, "TYKPULSE_KEY_HASH_SALT": "salt"}
    command = tykpulse(
        "bridge", "tyk-webhook", "--listen", f"0.0.0.0:{port}", "--bind", "tcp://127.0.0.1:0", "--no-metrics"
    )
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            command,
            env=environment,
            stderr=err,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)),
        )
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert request(port, "GET", "/healthz")[0] == 503  # served (no worker subscribes here)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        idle.extend(socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(1000))
        time.sleep(1.0)
        status, body = request(port, "POST", "/tyk/events", BODY["body"], {"X-Tykpulse-Secret": SECRET})
        assert (status, body.get("rejected")) == (503, "no_subscriber"), body
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(30)
    log = stderr.read_text(errors="replace")
    assert "out of system resource" not in log, f"{len(log)} bytes of log"
    assert "--max-connections 1024 lowered to 576" in log


def test_clients_that_go_away_mid_answer_leave_no_error_in_the_log(
    zmq_context: zmq.Context[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Oversized requests whose client reads a few bytes of the answer and closes (a reset): the
    receiver's half-close could find the socket gone, and asyncio logged 'Unhandled exception in
    client_connected_cb' (ENOTCONN) for it: a log any client could fill."""
    with running_receiver(zmq_context) as running:
        port = running["port"]
        head = b"POST /tyk/events HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
        for i in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            with contextlib.suppress(OSError):
                s.sendall(head + b"x" * (1_000 * (i % 200)))
                s.recv(1 + i % 50)
            s.close()  # with the rest of the answer unread: a reset
        assert request(port, "GET", "/healthz")[0] == 503  # still serving (no subscriber here)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
