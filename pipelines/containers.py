"""How many maps and lists a payload may hold before it is built whole in Python.

Decoding into Python objects builds one per map and list, and one msgpack byte
can be a whole map (a Python dict costs ~70 bytes): 16 MiB of empty maps became
1.2 GB. Where a payload is built whole (the archive sanitizes every field of
every record; the Tyk bridge decodes Tyk's record with its GraphQL error paths)
it is first counted natively, nothing built, and refused above one container
per 16 bytes: ~3x the density of Tyk's densest records (one per ~50 bytes).
"""

from __future__ import annotations

from typing import Final

from pipelines._native import containers_within

MIN_CONTAINERS: Final = 1_024
BYTES_PER_CONTAINER: Final = 16


def container_limit(size: int) -> int:
    """The most maps and lists a payload of `size` bytes may hold to be built."""
    return MIN_CONTAINERS + size // BYTES_PER_CONTAINER


def msgpack_buildable(payload: bytes) -> bool:
    """Whether `payload` is one msgpack value holding at most container_limit maps and lists."""
    return containers_within(payload, container_limit(len(payload))) is not None
