"""What the archive keeps of a record: everything except credentials.

Raw API keys never reach the archive. The archive keeps every message the
worker accepted, records it rejected one by one included, so the rules go by field
name, whatever the record's kind and spelling (Tyk's Go names such as
`APIKey` and `RawRequest` as well as the protocol's), at every depth:

| where                                        | what happens                                    |
|----------------------------------------------|-------------------------------------------------|
| a field whose name holds `key`, `token`,     | a string becomes `h:<16 hex>`, the worker's      |
| `secret`, `password`, `passwd`, `credential` | 64-bit hash; any other value becomes nil         |
| (any case, `_`/`-`/`.` ignored): `api_key`,  |                                                  |
| an event's `key`, `APIKey`, `KeyID`, ...     |                                                  |
| `raw_request`, `raw_response`,               | dropped (whole HTTP messages or headers: they   |
| `OriginatingRequest`, `Authorization`,       | carry credentials)                               |
| `Cookie`, `Set-Cookie` (any spelling)        |                                                  |
| analytics `tags` `key-<key>`                 | `key-h:<16 hex>`                                 |
| notice `KeySpaceUpdateNotification`          | each key of the comma-separated payload hashed;  |
|                                              | the signature blanked (it no longer matches)     |
| maps nested deeper than 16 levels            | dropped (no Tyk record is that deep)             |

The hash is the one the rollups use (pipelines.keys, salted with
TYKPULSE_KEY_HASH_SALT), so `rebuild` recovers exactly the key hashes the
first pass counted (ArchivedKeyHasher), and distinct counts of a rebuilt
window merge with the untouched ones.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, Final

from pipelines.firehose.protocol import TopicKind
from pipelines.keys import KeyHasher

HASHED_PREFIX: Final = "h:"
_HASHED_LENGTH: Final = len(HASHED_PREFIX) + 16
_DROPPED_NAMES: Final = frozenset(
    {
        "rawrequest",
        "rawresponse",
        "originatingrequest",
        "authorization",
        "proxyauthorization",
        "cookie",
        "setcookie",
    }
)
_SECRET_WORDS: Final = ("key", "token", "secret", "password", "passwd", "credential")
_MAX_DEPTH: Final = 16
_KEY_TAG: Final = "key-"
KEYSPACE_NOTICE: Final = "KeySpaceUpdateNotification"


def hashed_key(hasher: KeyHasher, key: str) -> str:
    return f"{HASHED_PREFIX}{hasher.hash(key):016x}" if key else ""


class ArchivedKeyHasher(KeyHasher):
    """Reads `h:<hex>` keys back as the hash they stand for; hashes anything else as usual."""

    def hash(self, key: str) -> int:
        if len(key) == _HASHED_LENGTH and key.startswith(HASHED_PREFIX):
            try:
                return int(key[len(HASHED_PREFIX) :], 16)
            except ValueError:
                pass
        return super().hash(key)


class _Rule(enum.Enum):
    KEEP = enum.auto()
    HASH = enum.auto()
    DROP = enum.auto()


@functools.lru_cache(maxsize=4096)  # names come from the wire: bounded
def _rule(name: str) -> _Rule:
    normalized = name.lower().replace("_", "").replace("-", "").replace(".", "")
    if normalized in _DROPPED_NAMES:
        return _Rule.DROP
    if any(word in normalized for word in _SECRET_WORDS):
        return _Rule.HASH
    return _Rule.KEEP


class Sanitizer:
    def __init__(self, hasher: KeyHasher) -> None:
        self.hasher = hasher

    def records(self, kind: TopicKind, records: list[Any]) -> list[dict[str, Any]]:
        """Copies of the map records with credentials hashed or dropped (non-maps are left out)."""
        clean = []
        for record in records:
            if not isinstance(record, dict):
                continue
            record = self._map(record, 0)
            if kind is TopicKind.ANALYTICS:
                self._analytics(record)
            elif kind is TopicKind.NOTICE:
                self._notice(record)
            clean.append(record)
        return clean

    def _map(self, value: dict[Any, Any], depth: int) -> dict[Any, Any]:
        clean: dict[Any, Any] = {}
        for name, item in value.items():
            rule = _rule(name) if isinstance(name, str) else _Rule.KEEP
            if rule is _Rule.DROP:
                continue
            if rule is _Rule.HASH:
                # not a string: None, which fails a string field's check as the original did, so a
                # rebuild rejects exactly the records the first pass rejected
                clean[name] = hashed_key(self.hasher, item) if isinstance(item, str) else None
            else:
                clean[name] = self._value(item, depth + 1)
        return clean

    def _value(self, value: Any, depth: int) -> Any:
        if isinstance(value, dict):
            return self._map(value, depth) if depth < _MAX_DEPTH else None
        if isinstance(value, list):
            return [self._value(item, depth + 1) for item in value] if depth < _MAX_DEPTH else None
        return value

    def _analytics(self, record: dict[str, Any]) -> None:
        tags = record.get("tags")
        if isinstance(tags, list):
            record["tags"] = [self._tag(t) for t in tags]

    def _tag(self, tag: Any) -> Any:
        if isinstance(tag, str) and tag.startswith(_KEY_TAG):
            return _KEY_TAG + hashed_key(self.hasher, tag[len(_KEY_TAG) :])
        return tag

    def _notice(self, record: dict[str, Any]) -> None:
        if record.get("command") != KEYSPACE_NOTICE:
            return
        payload = record.get("payload")
        if isinstance(payload, str):
            record["payload"] = ",".join(hashed_key(self.hasher, k) for k in payload.split(","))
        record["signature"] = ""
