"""Webhook bodies rendered by Go's html/template (tests/fixtures/tyk/webhooks.json) -> firehose events.

The fixtures were rendered by the generator with the template tykpulse ships, exactly as Tyk's
webhook handler executes it; the test checks every published field against what went into the
template, keys digested.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.tyk_webhook import (
    _JSON_TOKEN,
    MAX_JSON_DEPTH,
    WebhookEvent,
    WebhookRejection,
    nesting_exceeds,
    parse_go_time,
    unescape_go_html,
    webhook_event,
)
from tests.tyk_webhooks import KEY_FAILURE_EVENTS, TOKEN_EVENTS, go_time_string, render

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = json.loads((ROOT / "tests/fixtures/tyk/webhooks.json").read_text(encoding="utf-8"))
EVENTS: list[dict[str, Any]] = FIXTURES["events"]
DIGESTER = KeyDigester(b"test-salt")
RECEIVED = 1_700_000_000_000_000_000
T_UTC = 1_787_315_987_123_456_789  # 2026-08-21 12:39:47.123456789 +0000 UTC
T_CEST = 1_787_315_987_500_000_000  # 2026-08-21 14:39:47.5 +0200 CEST


def test_fixtures_were_rendered_from_the_shipped_template() -> None:
    template = (ROOT / FIXTURES["template"]).read_bytes()
    assert hashlib.sha256(template).hexdigest() == FIXTURES["template_sha256"], "run `make fixtures`"


@pytest.mark.parametrize("entry", EVENTS, ids=[e["name"] for e in EVENTS])
def test_shipped_template_body(entry: dict[str, Any]) -> None:
    query = {"org_id": "org-from-url", "api_id": "api-from-url"}
    result = webhook_event(entry["body"].encode(), query, RECEIVED, DIGESTER)
    assert isinstance(result, WebhookEvent), result
    expected = dict(entry["expected"])
    name = expected.pop("event")
    assert result.topic == f"tyk.event.{name}"
    record = dict(result.record)
    assert record.pop("event") == name
    assert record.pop("timestamp") == parse_go_time(expected.pop("tyk_timestamp"))
    assert record.pop("key") == DIGESTER.digest(expected.pop("key", ""))
    assert record.pop("org_id") == (expected.pop("org_id", "") or "org-from-url")
    assert record.pop("api_id") == (expected.pop("api_id", "") or "api-from-url")
    assert record == expected


@pytest.mark.parametrize("entry", [e for e in EVENTS if e.get("default_style_body")], ids=lambda e: e["name"])
def test_default_style_body(entry: dict[str, Any]) -> None:
    """Plain {{.Meta.X}} bodies: fine unless a value holds a backslash or control character."""
    result = webhook_event(entry["default_style_body"].encode(), {}, RECEIVED, DIGESTER)
    expected = entry["expected"]
    hostile = any(c == "\\" or ord(c) < 0x20 for c in expected["key"] + expected["path"])
    if hostile:
        assert isinstance(result, WebhookRejection)
        assert result.reason == "bad_body"
        return
    assert isinstance(result, WebhookEvent), result
    assert result.record["key"] == DIGESTER.digest(expected["key"])
    assert result.record["path"] == expected["path"]
    assert result.record["timestamp"] == RECEIVED  # the default template carries no time


def test_tricky_key_survives_exactly() -> None:
    entry = next(e for e in EVENTS if e["name"] == "quota_tricky_strings")
    raw = entry["expected"]["key"]
    for hostile in ("\\", '"', "+", "\n", "&amp;"):
        assert hostile in raw
    result = webhook_event(entry["body"].encode(), {}, RECEIVED, DIGESTER)
    assert isinstance(result, WebhookEvent)
    assert result.record["key"] == DIGESTER.digest(raw)
    assert raw not in json.dumps(result.record)


def test_go_time_strings() -> None:
    assert parse_go_time("2026-08-21 12:39:47.123456789 +0000 UTC") == T_UTC
    assert parse_go_time("2026-08-21 14:39:47.5 +0200 CEST") == T_CEST
    assert parse_go_time("2026-08-21 12:39:47.123456789 +0000 UTC m=+12.345678901") == T_UTC
    assert parse_go_time("2026-08-21 07:09:47 -0530 -0530") == 1_787_315_987_000_000_000
    assert parse_go_time("2026-08-21T12:39:47Z") is None
    assert parse_go_time("2026-02-30 12:39:47 +0000 UTC") is None


def test_unescape_is_exactly_go_html_template() -> None:
    assert unescape_go_html("a&#43;b&#34;c&#39;d&amp;e&lt;f&gt;") == "a+b\"c'd&e<f>"
    assert unescape_go_html("&amp;amp; &copy &#x2B; &#44;") == "&amp; &copy &#x2B; &#44;"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "bad_body"),
        (b"[1, 2]", "bad_body"),
        (b'{"event": "Ratelimit Exceeded"}', "bad_event"),
        (b'{"message": "no event"}', "bad_event"),
        (b'{"tykpulse_template":1,"event":"X","key":"a\\', "bad_body"),
        (b'{"event": "X", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep"),
        (b"[" * 5000, "too_deep"),
        (b'{"tykpulse_template":1,"event":"X","x":' + b"{&#34;a&#34;:" * 100 + b"1" + b"}" * 101, "too_deep"),
        (b'{"event": "X", "response_code": 99999999999999999999999}', "out_of_range"),
        (b'{"event": "X", "days_remaining": -9223372036854775809}', "out_of_range"),
        (b'{"event": "X", "message": "\\ud800"}', "bad_body"),
        (b'{"event": "X", "org_id": "\\udfff"}', "bad_body"),
    ],
)
def test_rejections(body: bytes, reason: str) -> None:
    result = webhook_event(body, {}, RECEIVED, DIGESTER)
    assert isinstance(result, WebhookRejection)
    assert result.reason == reason


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[{{{"}', 1),  # brackets in strings do not nest
        ('{"a": "\\"[[["}', 1),  # nor after an escaped quote
        ('{"a": "\\\\", "b": [[]]}', 3),  # an escaped backslash ends before the closing quote
        ('[[ "unterminated [[[', 2),  # not JSON: json.loads stops at the string, as the scan does
        ('[[ "unterminated \\', 2),  # ending in a lone backslash
    ],
)
def test_nesting_depth_scan(text: str, depth: int) -> None:
    assert not nesting_exceeds(text, depth)
    assert nesting_exceeds(text, depth - 1)


@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 20_000,  # every quote escaped but the first: no string ever closes
        '[{"a": ' + '"\\' * 20_000,
        '"' * 20_001,  # an odd number of quotes
    ],
)
def test_a_body_no_string_closes_is_scanned_in_one_pass(text: str) -> None:
    # Found by attack: a string token could fail at a quote, and finditer retried it from every later
    # quote, each retry scanning to the end: quadratic on the event loop (32 KB of '"\\"...' held every
    # connection 5 s, a good event posted meanwhile waited; the 1 MiB default limit ~1.5 hours). Now a
    # token starts at every quote, so the scan is one pass over the text.
    quotes = [i for i, char in enumerate(text) if char == '"']
    assert all(_JSON_TOKEN.match(text, i) is not None for i in quotes)
    assert len(list(_JSON_TOKEN.finditer(text))) <= text.count("[") + text.count("{") + len(quotes)
    assert not nesting_exceeds(text, MAX_JSON_DEPTH)
    result = webhook_event(text.encode(), {}, RECEIVED, DIGESTER)
    assert isinstance(result, WebhookRejection)
    assert result.reason == "bad_body"


def test_default_template_aliases_and_scalars_only() -> None:
    body = b'{"event": "BreakerTriggered", "api_id": "a1", "path": "/x", "Status": "1", "org": "o1", '
    body += b'"host": {"x": 1}}'
    result = webhook_event(body, {"api_id": "ignored"}, RECEIVED, DIGESTER)
    assert isinstance(result, WebhookEvent)
    assert result.record["circuit_event"] == "1"
    assert result.record["org_id"] == "o1"
    assert result.record["api_id"] == "a1"
    assert "host" not in result.record


@pytest.mark.parametrize(
    "entry",
    [e for e in EVENTS if e["expected"]["event"] in KEY_FAILURE_EVENTS | TOKEN_EVENTS],
    ids=lambda e: e["name"],
)
def test_test_renderer_matches_go(entry: dict[str, Any]) -> None:
    """The burst test's renderer (tests/tyk_webhooks.py) writes exactly what Go's html/template wrote."""
    exp = entry["expected"]
    body = render(
        exp["event"],
        exp["tyk_timestamp"],
        key=exp.get("key", ""),
        path=exp.get("path", ""),
        origin=exp.get("origin", ""),
        message=exp.get("message", ""),
        org=exp.get("org_id", ""),
    )
    assert body == entry["body"]


def test_go_time_string_round_trip() -> None:
    assert go_time_string(T_UTC) == "2026-08-21 12:39:47.123456789 +0000 UTC"
    assert go_time_string(T_CEST, 7200, "CEST") == "2026-08-21 14:39:47.5 +0200 CEST"
    assert parse_go_time(go_time_string(T_CEST, -19800, "IST")) == T_CEST
