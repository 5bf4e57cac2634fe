"""HTTP compression as ClickHouse negotiates it.

Request bodies are decompressed by their `Content-Encoding`; responses are
compressed only when the request set `enable_http_compression=1` and sent an
`Accept-Encoding` the endpoint can produce, choosing the client's first
preference (clickhouse-connect lists lz4, zstd, br, gzip, deflate in that
order). lz4 is the LZ4 frame format, as clickhouse-connect writes and reads it.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Callable
from typing import Final

import lz4.frame

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from sinks.clickhouse.serve.errors import CANNOT_DECOMPRESS, NOT_IMPLEMENTED, ServeError

_DECOMPRESS: Final[dict[str, Callable[[bytes], bytes]]] = {
    "lz4": lz4.frame.decompress,
    "zstd": zstd.decompress,
    "gzip": gzip.decompress,
    "x-gzip": gzip.decompress,
    "deflate": zlib.decompress,
}

_COMPRESS: Final[dict[str, Callable[[bytes], bytes]]] = {
    "lz4": lambda data: lz4.frame.compress(data),
    "zstd": lambda data: zstd.compress(data),
    "gzip": lambda data: gzip.compress(data, compresslevel=3),
    "deflate": lambda data: zlib.compress(data, 3),
}


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    decompress = _DECOMPRESS.get(encoding)
    if decompress is None:
        msg = f"Unsupported Content-Encoding {encoding!r}; supported: {', '.join(sorted(_DECOMPRESS))}"
        raise ServeError(NOT_IMPLEMENTED, msg)
    try:
        return decompress(body)
    except (OSError, RuntimeError, ValueError, zlib.error, zstd.ZstdError) as exc:
        msg = f"Cannot decompress the request body as {encoding}: {exc}"
        raise ServeError(CANNOT_DECOMPRESS, msg) from exc


def choose_encoding(accept_encoding: str | None) -> str | None:
    """The first encoding in Accept-Encoding that the endpoint can produce (q-values ignored)."""
    for part in (accept_encoding or "").split(","):
        name = part.split(";", 1)[0].strip().lower()
        if name in _COMPRESS:
            return name
    return None


def encode_body(body: bytes, encoding: str) -> bytes:
    return _COMPRESS[encoding](body)
