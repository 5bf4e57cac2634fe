"""A Tyk webhook body (eh_web_hook_handler) -> one firehose `tyk.event.<Name>` record.

Tyk renders a webhook body with Go's **html/template**, so every value is
HTML-escaped: `"` -> `&#34;`, `'` -> `&#39;`, `+` -> `&#43;`, `&` -> `&amp;`,
`<` -> `&lt;`, `>` -> `&gt;` (and nothing else). Two shapes arrive:

- tykpulse's template (pipelines/bridges/templates/tykpulse_webhook.json,
  recognised by its leading `{"tykpulse_template":`) passes every string through
  `js` first, so the body is JSON once the six entities are undone and `\\'`
  (JavaScript's escaped apostrophe) becomes `'`. Quotes, backslashes, control
  characters and non-ASCII keys all survive.
- anything else (Tyk's default template or a user's own) is parsed as JSON
  first and then each string value is unescaped. Values containing a backslash
  or a control character make such bodies invalid JSON; they are rejected with
  `bad_body`, which is why tykpulse ships its own template.

Where the ids come from: Tyk's event metadata never carries the API id and
only token events carry the org, so the receiver also reads `org_id` and
`api_id` from the webhook URL's query string (each API definition's handler
points at `...?org_id=<org>&api_id=<api>`); a value in the body wins.

Nesting is bounded before parsing: Python's json module recurses once per
nested array or object, so a small body nested thousands deep would raise
RecursionError instead of a rejection. Tyk's bodies are two levels deep.

The key is replaced by the bridge's key digest (pipelines.bridges.key_digest)
before the record is built. Only the fields listed here are forwarded, so the
raw request a custom template might include never leaves the bridge.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pipelines.bridges.int_ranges import INT64
from pipelines.bridges.key_digest import KeyDigester
from pipelines.firehose.protocol import event_topic, parse_topic
from pipelines.firehose.timestamps import parse_rfc3339_ns
from pipelines.json_tokens import JSON_STRING

TEMPLATE_MARKER: Final = '{"tykpulse_template":'
# Far above any webhook body (2 levels) and far below the interpreter's recursion limit (1 000).
MAX_JSON_DEPTH: Final = 64

# A JSON string (pipelines.json_tokens: one pass, whatever the quotes) or one bracket.
_JSON_TOKEN: Final = re.compile(JSON_STRING + r"|[\[\]{}]", re.DOTALL)

# Go's html/template escaper (htmlReplacementTable): exactly these, nothing more.
_GO_HTML_ENTITIES: Final = {"&#34;": '"', "&#39;": "'", "&#43;": "+", "&amp;": "&", "&lt;": "<", "&gt;": ">"}
_GO_HTML: Final = re.compile("|".join(map(re.escape, _GO_HTML_ENTITIES)))
_JS_ESCAPE: Final = re.compile(r"\\(.)", re.DOTALL)

# Go's time.Time.String(): "2006-01-02 15:04:05.999999999 -0700 MST" (+ " m=+1.2" when monotonic).
_GO_TIME: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? ([+-])(\d\d)(\d\d) \S+(?: m=[+-][0-9.]+)?"
)
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# Body fields forwarded as they are (after unescaping), with the default template's spellings.
_PASSTHROUGH: Final = (
    "origin",
    "path",
    "message",
    "reason",
    "url",
    "host",
    "response_code",
    "tcp_error",
    "circuit_event",
    "trigger_limit",
    "usage_percentage",
    "cert_id",
    "cert_name",
    "cert_role",
    "expires_at",
    "expired_at",
    "days_remaining",
    "days_since_expiry",
)
_ALIASES: Final = {"Status": "circuit_event", "org": "org_id"}


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookEvent:
    topic: str
    record: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookRejection:
    reason: str
    detail: str


_NOT_AN_OBJECT: Final = WebhookRejection("bad_body", "not a JSON object once Tyk's html escaping is undone")


def unescape_go_html(text: str) -> str:
    """Undo Go html/template's escaping of a value (exactly its six entities)."""
    return _GO_HTML.sub(lambda m: _GO_HTML_ENTITIES[m.group(0)], text)


def _js_to_json(text: str) -> str:
    # Go's `js` escapes ' as \' which JSON does not know; every other escape it emits is JSON's.
    return _JS_ESCAPE.sub(lambda m: "'" if m.group(1) == "'" else m.group(0), text)


def parse_go_time(text: str) -> int | None:
    """Unix nanoseconds of Go's time.Time.String() output, or None."""
    m = _GO_TIME.fullmatch(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, sign, off_h, off_m = m.groups()
    try:
        wall = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=dt.UTC
        )
    except ValueError:
        return None
    offset = (1 if sign == "+" else -1) * (int(off_h) * 3600 + int(off_m) * 60)
    delta = wall - _EPOCH
    seconds = delta.days * 86_400 + delta.seconds - offset
    return seconds * 1_000_000_000 + int((frac or "").ljust(9, "0"))


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether JSON `text` nests arrays and objects more than `limit` deep (brackets in strings
    do not count, nor those after a string that never closes, where json.loads stops). Where the
    text is not JSON, the count up to the first error is at least the depth json.loads reaches
    before it fails, so a False here means json.loads cannot recurse deeper than `limit`. One pass."""
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class _TooDeepError(ValueError):
    pass


def _loads(text: str) -> Any:
    if nesting_exceeds(text, MAX_JSON_DEPTH):
        raise _TooDeepError
    return json.loads(text)


def _decode(text: str) -> dict[str, Any] | WebhookRejection:
    """The body as a dict with every string value unescaped, or why it is not a JSON object."""
    try:
        if text.lstrip().startswith(TEMPLATE_MARKER):
            obj = _loads(_js_to_json(unescape_go_html(text)))
        else:
            obj = _loads(text)
            if isinstance(obj, dict):
                obj = {k: unescape_go_html(v) if isinstance(v, str) else v for k, v in obj.items()}
    except (_TooDeepError, RecursionError):  # RecursionError: should the scan ever miss a case
        return WebhookRejection("too_deep", f"JSON nested more than {MAX_JSON_DEPTH} levels")
    except ValueError:
        return _NOT_AN_OBJECT
    return obj if isinstance(obj, dict) else _NOT_AN_OBJECT


def _timestamp(body: Mapping[str, Any], received_ns: int) -> int:
    for name, parse in (("tyk_timestamp", parse_go_time), ("timestamp", parse_rfc3339_ns)):
        value = body.get(name)
        if isinstance(value, str):
            ns = parse(value)
            if ns is not None:
                return ns
    return received_ns


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def webhook_event(
    body: bytes, query: Mapping[str, str], received_ns: int, digester: KeyDigester
) -> WebhookEvent | WebhookRejection:
    """The firehose event for one webhook body, or why there is none."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return WebhookRejection("bad_body", "not UTF-8")
    obj = _decode(text)
    if isinstance(obj, WebhookRejection):
        return obj
    for alias, name in _ALIASES.items():
        if alias in obj and name not in obj:
            obj[name] = obj[alias]
    name = _text(obj.get("event"))
    topic = event_topic(name)
    if parse_topic(topic) is None:
        return WebhookRejection("bad_event", f"event name {name[:64]!r} cannot name a topic")
    record: dict[str, Any] = {
        "event": name,
        "timestamp": _timestamp(obj, received_ns),
        "org_id": _text(obj.get("org_id")) or query.get("org_id", ""),
        "api_id": _text(obj.get("api_id")) or query.get("api_id", ""),
        "key": digester.digest(_text(obj.get("key"))),
    }
    record.update({f: obj[f] for f in _PASSTHROUGH if isinstance(obj.get(f), str | int | float | bool)})
    problem = _unpublishable(record)
    if problem is not None:
        return problem
    return WebhookEvent(topic, record)


def _unpublishable(record: Mapping[str, Any]) -> WebhookRejection | None:
    """Why the firehose's msgpack could not carry `record`, checked before Tyk is told it was accepted.

    JSON numbers are unbounded and JSON escapes can spell lone surrogates (`"\\ud800"`), which
    UTF-8 cannot encode: either would fail the publish of the whole batch the event joined.
    """
    for name, value in record.items():
        if type(value) is int:
            reason = INT64.reason(value)
            if reason is not None:
                return WebhookRejection("out_of_range", f"{name}: {reason}")
        elif isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return WebhookRejection("bad_body", f"{name}: a lone surrogate, not encodable as UTF-8")
    return None
