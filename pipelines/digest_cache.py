"""The digests of keys seen, remembered so that a busy key is digested once.

The workers' KeyHasher and the bridges' KeyDigester both keep one. Keys come
from outside, at any length: a webhook body's `key` (up to --max-body-bytes),
an analytics element's APIKey, each entry of a KeySpaceUpdateNotification, any
field the archive hashes for its name. So the cache is bounded in entries and
in the characters of the keys it holds, and a long key is digested every time
instead of kept: when every distinct key was kept whole, a webhook receiver
grew by 286 MB after 300 events with 1 MB keys, and kept it.
"""

from __future__ import annotations

from typing import Final, Generic, TypeVar

T = TypeVar("T")

MAX_ENTRIES: Final = 1_000_000
# Tyk's keys and their digests are tens of characters; a longer key is not remembered.
MAX_KEY_CHARS: Final = 1_024
MAX_TOTAL_CHARS: Final = 64 << 20


class DigestCache(Generic[T]):
    """key -> digest; emptied when full (entries or characters), as a busy key comes back at once."""

    __slots__ = ("_chars", "_values", "max_entries", "max_total_chars")

    def __init__(self, *, max_entries: int = MAX_ENTRIES, max_total_chars: int = MAX_TOTAL_CHARS) -> None:
        self.max_entries = max_entries
        self.max_total_chars = max_total_chars
        self._values: dict[str, T] = {}
        self._chars = 0

    def get(self, key: str) -> T | None:
        return self._values.get(key)

    def keep(self, key: str, value: T) -> None:
        if len(key) > MAX_KEY_CHARS:
            return
        if len(self._values) >= self.max_entries or self._chars >= self.max_total_chars:
            self._values.clear()
            self._chars = 0
        self._values[key] = value
        self._chars += len(key)

    def keys(self) -> list[str]:
        """The keys remembered now (tests, diagnostics)."""
        return list(self._values)
