"""API keys as the bridges publish them: a keyed digest, never the raw key.

Tyk's event metadata carries raw keys (and analytics do too when the gateway
runs with `hash_keys: false`). A bridge replaces every key by
`kd1:<32 hex digits>`, a 128-bit keyed BLAKE2b of the key, before anything
leaves its process. Workers then hash that string again (pipelines.keys) for
their distinct counts; since the digest is a fixed one-to-one function of the
key (collisions at 128 bits are out of reach), distinct counts are unchanged.

What this means for consistency:
- every bridge feeding one database must use the same `--key-hash-salt`
  (TYKPULSE_KEY_HASH_SALT), or the same key counts once per salt;
- a publisher other than the bridges that sends events for the same keys must
  publish `KeyDigester(salt).digest(key)` too, not the raw key, or a key seen
  by both is counted twice;
- digesting is idempotent: a value that already is a digest (`kd1:` + 32 hex)
  is passed through, so bridges can be chained;
- an empty key stays empty (keyless APIs carry no key).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from pipelines.digest_cache import DigestCache

KEY_DIGEST_PREFIX: Final = "kd1:"
_PERSON: Final = b"tykpulse-keydig1"  # BLAKE2b personalisation: separates this use of the salt
_DIGEST_BYTES: Final = 16
_IS_DIGEST: Final = re.compile(r"kd1:[0-9a-f]{32}")


class KeyDigester:
    def __init__(self, salt: bytes = b"") -> None:
        if len(salt) > 64:
            msg = "key salt must be at most 64 bytes"
            raise ValueError(msg)
        self._salt = salt
        self.cache: DigestCache[str] = DigestCache()

    def digest(self, key: str) -> str:
        if not key:
            return ""
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        value = self.digest_text(key)
        self.cache.keep(key, value)
        return value

    def digest_text(self, text: str) -> str:
        """The digest of `text` without remembering it: for long one-off values (a whole
        configuration), which the cache of keys would otherwise hold in full."""
        if not text or _IS_DIGEST.fullmatch(text):
            return text
        raw = text.encode("utf-8", "surrogatepass")
        h = hashlib.blake2b(raw, digest_size=_DIGEST_BYTES, key=self._salt, person=_PERSON)
        return KEY_DIGEST_PREFIX + h.hexdigest()
