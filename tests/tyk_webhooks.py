"""Test-side renderer of tykpulse's webhook template, for bursts of Tyk-shaped webhook posts.

A Python replica of what Go's html/template produces from
pipelines/bridges/templates/tykpulse_webhook.json for key-failure and token events: `js`
(text/template's JSEscape) and then html/template's HTML escaping. It is checked byte for
byte against the bodies the Go generator rendered (tests/fixtures/tyk/webhooks.json), so the
burst test posts what a gateway would post, for any key.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

KEY_FAILURE_EVENTS: Final = frozenset(
    {
        "RatelimitExceeded",
        "QuotaExceeded",
        "OrgRateLimitExceeded",
        "OrgQuotaExceeded",
        "AuthFailure",
        "KeyExpired",
        "RateLimitSmoothingUp",
        "RateLimitSmoothingDown",
    }
)
TOKEN_EVENTS: Final = frozenset({"TokenCreated", "TokenUpdated", "TokenDeleted"})

_JS_ASCII: Final = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}
_HTML: Final = {
    '"': "&#34;",
    "'": "&#39;",
    "&": "&amp;",
    "+": "&#43;",
    "<": "&lt;",
    ">": "&gt;",
    "\0": "\ufffd",
}


def go_js_escape(text: str) -> str:
    """text/template's JSEscapeString."""
    out = []
    for ch in text:
        if ch in _JS_ASCII:
            out.append(_JS_ASCII[ch])
        elif ch < " ":
            out.append(f"\\u00{ord(ch):02X}")
        elif ord(ch) >= 0x80 and not ch.isprintable():
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def go_html_escape(text: str) -> str:
    """html/template's escaping of text-context output."""
    return "".join(_HTML.get(ch, ch) for ch in text)


def _v(text: str) -> str:
    return go_html_escape(go_js_escape(text))


def go_time_string(ns: int, offset_s: int = 0, zone: str = "UTC") -> str:
    """Go's time.Time.String() for an instant shown in a zone."""
    sec, frac = divmod(ns, 1_000_000_000)
    wall = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=sec + offset_s)
    text = wall.strftime("%Y-%m-%d %H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    sign = "+" if offset_s >= 0 else "-"
    hours, minutes = divmod(abs(offset_s) // 60, 60)
    return f"{text} {sign}{hours:02d}{minutes:02d} {zone}"


def render(
    event: str,
    timestamp: str,
    *,
    key: str = "",
    path: str = "",
    origin: str = "",
    message: str = "",
    org: str = "",
) -> str:
    """The body Tyk sends for a key-failure or token event with tykpulse's template."""
    head = f'{{"tykpulse_template":1,"event":"{_v(event)}","tyk_timestamp":"{_v(timestamp)}"'
    if event in TOKEN_EVENTS:
        tail = f',"org_id":"{_v(org)}","key":"{_v(key)}","message":"{_v(message)}"'
    elif event in KEY_FAILURE_EVENTS:
        tail = f',"path":"{_v(path)}","origin":"{_v(origin)}","key":"{_v(key)}","message":"{_v(message)}"'
    else:
        tail = ""
    return head + tail + "}\n"
