"""Hashing of API keys: raw keys never leave the process that receives them.

A key becomes a 64-bit keyed BLAKE2b digest. Every worker that writes to the
same database must use the same salt (TYKPULSE_KEY_HASH_SALT) so that distinct
counts merge across workers. The cache bounds the cost to one hash per
distinct key, not per record.
"""

from __future__ import annotations

import hashlib
from typing import Final

_CACHE_LIMIT: Final = 1_000_000


class KeyHasher:
    def __init__(self, salt: bytes = b"") -> None:
        if len(salt) > 64:
            msg = "key hash salt must be at most 64 bytes"
            raise ValueError(msg)
        self._salt = salt
        self._cache: dict[str, int] = {}

    def hash(self, key: str) -> int:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=self._salt).digest()
        value = int.from_bytes(digest, "little")
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = value
        return value

    def hash_many(self, keys: list[str]) -> list[int | None]:
        """Hashes, with None for empty keys (keyless APIs carry no key)."""
        return [self.hash(k) if k else None for k in keys]
