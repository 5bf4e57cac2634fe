"""What the archive keeps of a record: everything except credentials.

Raw API keys never reach the archive. Before a message is archived:

| where                                   | what happens                                         |
|-----------------------------------------|------------------------------------------------------|
| analytics `api_key`, event `key`        | replaced by `h:<16 hex>`, the worker's 64-bit hash    |
| analytics `tags` `key-<key>`            | `key-h:<16 hex>`                                     |
| analytics `raw_request`, `raw_response` | dropped (whole HTTP messages: they carry credentials) |
| notice `KeySpaceUpdateNotification`     | each key of the comma-separated payload hashed;      |
|                                         | the signature blanked (it no longer matches)         |

The hash is the one the rollups use (pipelines.keys, salted with
TYKPULSE_KEY_HASH_SALT), so `rebuild` recovers exactly the key hashes the
first pass counted (ArchivedKeyHasher), and distinct counts of a rebuilt
window merge with the untouched ones.
"""

from __future__ import annotations

from typing import Any, Final

from pipelines.firehose.protocol import TopicKind
from pipelines.keys import KeyHasher

HASHED_PREFIX: Final = "h:"
_HASHED_LENGTH: Final = len(HASHED_PREFIX) + 16
_DROPPED_FIELDS: Final = ("raw_request", "raw_response")
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


class Sanitizer:
    def __init__(self, hasher: KeyHasher) -> None:
        self.hasher = hasher

    def records(self, kind: TopicKind, records: list[Any]) -> list[dict[str, Any]]:
        """Copies of the map records with credentials hashed or dropped (non-maps are left out)."""
        clean = []
        for record in records:
            if not isinstance(record, dict):
                continue
            record = dict(record)
            if kind is TopicKind.ANALYTICS:
                self._analytics(record)
            elif kind is TopicKind.EVENT:
                self._hash_field(record, "key")
            elif kind is TopicKind.NOTICE:
                self._notice(record)
            clean.append(record)
        return clean

    def _hash_field(self, record: dict[str, Any], field: str) -> None:
        value = record.get(field)
        if isinstance(value, str):
            record[field] = hashed_key(self.hasher, value)
        elif value is not None:
            record[field] = ""

    def _analytics(self, record: dict[str, Any]) -> None:
        self._hash_field(record, "api_key")
        for field in _DROPPED_FIELDS:
            record.pop(field, None)
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
