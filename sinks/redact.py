"""Credentials out of log lines and error messages.

Settings carry passwords inside URLs (Redis `redis://:pass@host`, ClickHouse
`http://user:pass@host`, Alertmanager webhooks, Kafka SASL) and library
exceptions repeat those URLs in their text. Everything logged that may hold a
URL or an exception's text goes through `redact()` first; a ClickHouse DSN
has its own `Target.describe()` (sinks.clickhouse.client) for the location.

It lives in `sinks` because `sinks` never imports `pipelines`, and both need it.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import SplitResult, parse_qsl, urlsplit

MASK: Final = "***"
# scheme://user:password@  or  scheme://:password@  or  scheme://token@ : the userinfo of a URL
_USERINFO: Final = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^/\s:@]*)(?P<pw>:[^/\s@]*)?@"
)
# password=..., secret=..., token=... in query strings and key=value texts
_SECRET_PARAM: Final = re.compile(
    r"(?P<name>\b(?:password|passwd|pwd|secret|token|sasl_plain_password|api_key)=)[^&\s,;'\"]+",
    re.IGNORECASE,
)


def _userinfo(match: re.Match[str]) -> str:
    # user:password keeps the user (it helps to debug); a lone userinfo may itself be a token
    user = match.group("user") if match.group("pw") else ""
    return f"{match.group('scheme')}{user + ':' if user else ''}{MASK}@"


def redact(text: object, *secrets: str) -> str:
    """`text` (a URL, an exception, any value) as a string safe to log.

    Removes the password part of every URL's userinfo, `password=`-style
    parameters, and every exact occurrence of the given `secrets` (values the
    caller knows, e.g. a SASL password or a writer password).
    """
    out = str(text)
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        out = out.replace(secret, MASK)
    out = _USERINFO.sub(_userinfo, out)
    return _SECRET_PARAM.sub(lambda m: m.group("name") + MASK, out)


def checked_url(url: str, what: str) -> SplitResult:
    """`url` split, with its port read; a malformed one raises ValueError naming its scheme only.

    A password holding an unencoded `#`, `/` or `?` ends the URL's authority there, so urllib
    reads the rest of the password as the port and its own error quotes it ("Port could not be
    cast to integer value as 'pass'"), as does the traceback of any library given the URL.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        shown = f"{scheme}://..." if scheme.isalnum() else "the URL"
        msg = (
            f"malformed {what} ({shown}): percent-encode the characters # / ? @ : in its user name "
            "and password (%23 %2F %3F %40 %3A)"
        )
        raise ValueError(msg) from None
    return parts


def query_names(parts: SplitResult) -> frozenset[str]:
    """The names of a URL's query parameters, lower-cased (where credentials may hide)."""
    return frozenset(key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True))
