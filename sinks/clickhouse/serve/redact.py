"""Credentials out of log lines.

The endpoint takes a password as a URL parameter (`?password=`, as
ClickHouse does), so a request line, or an error quoting one, would carry it
into the log. Every line the HTTP layer logs goes through `redact`, which
replaces the value of each URL parameter whose name, once percent-decoded,
names a secret (password, key, token, secret, ...). Headers (`X-ClickHouse-Key`,
`Authorization`) are never logged at all.

The query string is split the way the server splits it (on `&`, then at the
first `=`), so the value redacted is exactly the value the server would read,
whatever characters it holds; `name=value` pairs outside a URL are redacted
too, up to the next `&` or blank.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote_plus

REDACTED: Final = "<redacted>"
# substrings of a parameter name that say its value is a secret (`quota_key` included)
SECRET_WORDS: Final = ("password", "passwd", "pwd", "secret", "token", "key", "auth", "credential")

_QUERY_STRING: Final = re.compile(r"\?(\S*)")
_PAIR: Final = re.compile(r"([^\s?&=;'\"(]+)=([^&\s]*)")
_DECODE_ROUNDS: Final = 3


def _decoded(text: str) -> str:
    # a name encoded twice is not one the server reads, but it is still what the user meant
    for _ in range(_DECODE_ROUNDS):
        text = unquote_plus(text)
    return text.lower()


def is_secret(name: str) -> bool:
    decoded = _decoded(name)
    return any(word in decoded for word in SECRET_WORDS)


def _piece(piece: str) -> str:
    name, eq, _value = piece.partition("=")
    if eq:
        return f"{name}={REDACTED}" if is_secret(name) else piece
    # `password%3DSECRET` has no `=` to split at, but says the same thing
    return REDACTED if is_secret(piece) else piece


def _query_string(match: re.Match[str]) -> str:
    return "?" + "&".join(_piece(piece) for piece in match.group(1).split("&"))


def _pair(match: re.Match[str]) -> str:
    return f"{match.group(1)}={REDACTED}" if is_secret(match.group(1)) else match.group(0)


def redact(text: str) -> str:
    """`text` with the value of every secret-named parameter replaced by REDACTED."""
    return _PAIR.sub(_pair, _QUERY_STRING.sub(_query_string, text))
