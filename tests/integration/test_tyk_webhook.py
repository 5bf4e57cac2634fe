"""A burst of Tyk-shaped webhook posts -> `tykpulse bridge tyk-webhook` -> worker -> chDB.

Thousands of event bodies, rendered exactly as Tyk's webhook handler renders tykpulse's template
(tests/tyk_webhooks.py, checked byte for byte against Go's html/template), are posted with the
headers Tyk sends: over keep-alive connections, pipelined connections and one connection per
request, all at once. Keys include `+`, `/`, `=`, quotes and non-ASCII. Every event must be
counted: the rollups are compared with ground truth computed here from what was posted.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import clickhouse_connect
import pytest

from tests.harness.processes import free_port, stop_process
from tests.tyk_webhooks import go_time_string, render

pytestmark = pytest.mark.integration

SECRET = "s3cret-shared"
NODE = "tyk-webhook-e2e"
ORGS = ["5e9d9544a1dcd60001d0ed20", "org-b", "org-c"]
APIS = ["b84fe1a04e5648927971c0557971565c", "api-two", "api-three", "api-four"]
RATE_EVENTS = ["RatelimitExceeded", "QuotaExceeded", "OrgRateLimitExceeded", "OrgQuotaExceeded"]
TOKEN_EVENTS = ["TokenCreated", "TokenUpdated", "TokenDeleted"]
KEEPALIVE_CONNECTIONS, PIPELINED_CONNECTIONS, PER_CONNECTION = 80, 70, 20
SINGLE_SHOT = 600
BAD_SECRET, BAD_BODY = 20, 10
WORKER_FLAGS = ["--flush-interval-s", "0.5", "--drain-timeout-s", "1"]


def make_events(seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    keys = [f"key-{i}" for i in range(200)] + [f"eyJ{i}+ab/c=\"d'é{i}" for i in range(100)]
    base = (time.time_ns() - 10 * 60 * 10**9) // 60_000_000_000 * 60_000_000_000  # a whole minute, 10 min ago
    total = (KEEPALIVE_CONNECTIONS + PIPELINED_CONNECTIONS) * PER_CONNECTION + SINGLE_SHOT
    events = []
    for i in range(total):
        ts = base + i * 30_000_000  # 30 ms apart: ~108 s, so two or three windows
        org, api = rng.choice(ORGS), rng.choice(APIS)
        roll = rng.random()
        if roll < 0.7:
            name = rng.choice(RATE_EVENTS)
            key = org if name.startswith("Org") else rng.choice(keys)
        elif roll < 0.9:
            name, key = rng.choice(TOKEN_EVENTS), rng.choice(keys)
        else:
            name, key = "AuthFailure", rng.choice(keys)
        events.append({"event": name, "ts": ts, "org": org, "api": api, "key": key})
    return events


def request_bytes(event: dict[str, Any], port: int, secret: str = SECRET, body: str | None = None) -> bytes:
    """The request Go's net/http client sends for one webhook (Tyk's handler: POST, template body)."""
    if body is None:
        body = render(
            event["event"],
            go_time_string(event["ts"], 7200, "CEST"),
            key=event["key"],
            path=f"/orders/{event['ts'] % 1000}",
            origin="203.0.113.7",
            message="Rate Limit Exceeded",
            org=event["org"],
        )
    query = urlencode({"org_id": event["org"], "api_id": event["api"]})
    payload = body.encode()
    head = (
        f"POST /tyk/events?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Tyk-Hookshot\r\n"
        f"Content-Length: {len(payload)}\r\nContent-Type: application/json\r\nX-Tykpulse-Secret: {secret}\r\n"
        "Accept-Encoding: gzip\r\n\r\n"
    )
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def connection(port: int, requests: list[bytes], pipelined: bool) -> list[int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if pipelined:
            writer.write(b"".join(requests))
            await writer.drain()
            return [await read_response(reader) for _ in requests]
        statuses = []
        for request in requests:
            writer.write(request)
            await writer.drain()
            statuses.append(await read_response(reader))
        return statuses
    finally:
        writer.close()
        await writer.wait_closed()


async def burst(port: int, events: list[dict[str, Any]]) -> collections.Counter[int]:
    jobs = []
    it = iter(events)
    for c in range(KEEPALIVE_CONNECTIONS + PIPELINED_CONNECTIONS):
        reqs = [request_bytes(next(it), port) for _ in range(PER_CONNECTION)]
        jobs.append(connection(port, reqs, pipelined=c >= KEEPALIVE_CONNECTIONS))
    jobs += [connection(port, [request_bytes(e, port)], pipelined=False) for e in it]
    bad = events[0]
    jobs += [connection(port, [request_bytes(bad, port, secret="wrong")], False) for _ in range(BAD_SECRET)]
    jobs += [
        connection(port, [request_bytes(bad, port, body='{"event":"X",')], False) for _ in range(BAD_BODY)
    ]
    results = await asyncio.gather(*jobs)
    return collections.Counter(status for statuses in results for status in statuses)


def http_get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


@pytest.fixture(scope="module")
def webhook_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tyk-webhook")
    zmq_port, http_port = free_port(), free_port()
    dsn = f"chdb://{tmp / 'clickhouse'}"
    events = make_events()
    cli = [sys.executable, "-m", "pipelines.cli.main"]
    logs = {name: (tmp / f"{name}.log").open("wb") for name in ("worker", "bridge")}
    worker = subprocess.Popen(
        [*cli, "run", "--firehose", f"@tcp://127.0.0.1:{zmq_port}", "--clickhouse", dsn, *WORKER_FLAGS],
        stdout=logs["worker"],
        stderr=subprocess.STDOUT,
    )
    bridge = subprocess.Popen(
        [
            *cli,
            "bridge",
            "tyk-webhook",
            "--listen",
            f"127.0.0.1:{http_port}",
            "--publish",
            f"tcp://127.0.0.1:{zmq_port}",
            "--node",
            NODE,
            "--secret",
            SECRET,
        ],
        stdout=logs["bridge"],
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while http_get(http_port, "/healthz")[0] != 200:
            assert bridge.poll() is None, "the bridge exited before it was ready"
            assert worker.poll() is None, "the worker exited before it was ready"
            assert time.monotonic() < deadline, "the receiver never saw a firehose subscriber"
            time.sleep(0.1)
        statuses = asyncio.run(burst(http_port, events))
        stats = http_get(http_port, "/stats")[1]
        assert stop_process(bridge, 60)
        assert bridge.returncode == 0
        assert stop_process(worker, 60)
        assert worker.returncode == 0
    finally:
        stop_process(bridge, 5)
        stop_process(worker, 5)
        for log in logs.values():
            log.close()
    client = clickhouse_connect.get_client(dsn=dsn)
    try:
        yield {
            "ch": client,
            "events": events,
            "statuses": statuses,
            "stats": stats,
            "bridge_log": (tmp / "bridge.log").read_text(errors="replace"),
        }
    finally:
        client.close()


def window(ns: int) -> int:
    return ns // 10**9 // 60 * 60


def test_every_post_answered(webhook_run: dict[str, Any]) -> None:
    accepted = len(webhook_run["events"])
    assert webhook_run["statuses"] == {200: accepted, 401: BAD_SECRET, 400: BAD_BODY}
    stats = webhook_run["stats"]
    assert stats["accepted"] == accepted
    assert stats["rejected"] == {"unauthorized": BAD_SECRET, "bad_body": BAD_BODY}
    assert f"accepted={accepted} published={accepted} " in webhook_run["bridge_log"]


def test_rate_limit_hits_match_what_was_posted(webhook_run: dict[str, Any]) -> None:
    hits: collections.Counter[tuple[Any, ...]] = collections.Counter()
    keys: dict[tuple[Any, ...], set[str]] = collections.defaultdict(set)
    for e in webhook_run["events"]:
        if e["event"] in RATE_EVENTS:
            group = (window(e["ts"]), e["org"], e["api"], e["event"])
            hits[group] += 1
            keys[group].add(e["key"])
    rows = (
        webhook_run["ch"]
        .query(
            "SELECT toUnixTimestamp(window_start), org_id, api_id, event_type, hits, distinct_keys "
            "FROM tykpulse.rate_limit_hits_1m"
        )
        .result_rows
    )
    actual = {tuple(r[:4]): (r[4], r[5]) for r in rows}
    assert actual == {g: (hits[g], len(keys[g])) for g in hits}


def test_token_churn_matches_what_was_posted(webhook_run: dict[str, Any]) -> None:
    counts: dict[tuple[int, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
    keys: dict[tuple[int, str], set[str]] = collections.defaultdict(set)
    for e in webhook_run["events"]:
        if e["event"] in TOKEN_EVENTS:
            group = (window(e["ts"]), e["org"])
            counts[group][e["event"]] += 1
            keys[group].add(e["key"])
    rows = (
        webhook_run["ch"]
        .query(
            "SELECT toUnixTimestamp(window_start), org_id, created, updated, deleted, distinct_keys "
            "FROM tykpulse.token_churn_1m"
        )
        .result_rows
    )
    actual = {tuple(r[:2]): tuple(r[2:]) for r in rows}
    expected = {
        g: (c["TokenCreated"], c["TokenUpdated"], c["TokenDeleted"], len(keys[g])) for g, c in counts.items()
    }
    assert actual == expected


def test_nothing_lost_or_rejected_downstream(webhook_run: dict[str, Any]) -> None:
    rows = (
        webhook_run["ch"]
        .query(
            "SELECT node_id, sum(records), sum(lost_messages), sum(rejected) FROM tykpulse.ingest_health_1m "
            "GROUP BY node_id"
        )
        .result_rows
    )
    assert rows == [(NODE, len(webhook_run["events"]), 0, 0)]
