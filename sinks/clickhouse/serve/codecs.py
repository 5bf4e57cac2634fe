"""HTTP compression as ClickHouse negotiates it.

Request bodies are decompressed by their `Content-Encoding`; responses are
compressed only when the request set `enable_http_compression=1` and sent an
`Accept-Encoding` the endpoint can produce, choosing the client's first
preference (clickhouse-connect lists lz4, zstd, br, gzip, deflate in that
order). lz4 is the LZ4 frame format, as clickhouse-connect writes and reads it.

Decompression streams with a bound on its output: a body that would expand
past `max_size` bytes is refused with BAD_ARGUMENTS (HTTP 413) once that many
bytes came out, so a small compressed body cannot make the process allocate
gigabytes. Concatenated gzip members and lz4/zstd frames are all decoded.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Callable
from typing import Final, Protocol

import lz4.frame

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from sinks.clickhouse.serve.errors import BAD_ARGUMENTS, CANNOT_DECOMPRESS, NOT_IMPLEMENTED, ServeError

DEFAULT_MAX_SIZE: Final = 256 << 20
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS
_ZLIB_WBITS: Final = zlib.MAX_WBITS


class _FrameDecompressor(Protocol):
    """lz4.frame.LZ4FrameDecompressor and zstd.ZstdDecompressor: they keep input not yet emitted."""

    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes: ...


def too_large(limit: int) -> ServeError:
    msg = f"Request body is larger than the limit of {limit} bytes after decompression"
    return ServeError(BAD_ARGUMENTS, msg, status=413)


def _inflate(data: bytes, wbits: int, limit: int, *, members: bool) -> bytes:
    """zlib/gzip data, at most `limit` bytes of it (zlib's max_length=0 means unbounded: never pass 0)."""
    out = bytearray()
    while True:
        stream = zlib.decompressobj(wbits)
        out += stream.decompress(data, limit + 1 - len(out))
        while stream.unconsumed_tail and len(out) <= limit:
            out += stream.decompress(stream.unconsumed_tail, limit + 1 - len(out))
        if len(out) > limit:
            raise too_large(limit)
        if not stream.eof:
            msg = "Compressed data ended before the end-of-stream marker"
            raise EOFError(msg)
        data = stream.unused_data
        if not (members and data):
            return bytes(out)


def _unframe(data: bytes, new: Callable[[], _FrameDecompressor], limit: int) -> bytes:
    """Every lz4/zstd frame in `data`, at most `limit` bytes of output in all."""
    out = bytearray()
    while data:
        stream = new()
        out += stream.decompress(data, limit + 1 - len(out))
        while not stream.eof and not stream.needs_input and len(out) <= limit:
            chunk = stream.decompress(b"", limit + 1 - len(out))
            if not chunk:
                break
            out += chunk
        if len(out) > limit:
            raise too_large(limit)
        if not stream.eof:
            msg = "Compressed data ended before the end of the frame"
            raise EOFError(msg)
        data = stream.unused_data
    return bytes(out)


_DECOMPRESS: Final[dict[str, Callable[[bytes, int], bytes]]] = {
    "lz4": lambda data, limit: _unframe(data, lz4.frame.LZ4FrameDecompressor, limit),
    "zstd": lambda data, limit: _unframe(data, zstd.ZstdDecompressor, limit),
    "gzip": lambda data, limit: _inflate(data, _GZIP_WBITS, limit, members=True),
    "x-gzip": lambda data, limit: _inflate(data, _GZIP_WBITS, limit, members=True),
    "deflate": lambda data, limit: _inflate(data, _ZLIB_WBITS, limit, members=False),
}

_COMPRESS: Final[dict[str, Callable[[bytes], bytes]]] = {
    "lz4": lambda data: lz4.frame.compress(data),
    "zstd": lambda data: zstd.compress(data),
    "gzip": lambda data: gzip.compress(data, compresslevel=3),
    "deflate": lambda data: zlib.compress(data, 3),
}


def decode_body(body: bytes, content_encoding: str | None, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """`body` decoded by its Content-Encoding (raises ServeError: NOT_IMPLEMENTED for an unknown
    encoding, CANNOT_DECOMPRESS for corrupt data, BAD_ARGUMENTS/413 past `max_size` bytes)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return body
    decompress = _DECOMPRESS.get(encoding)
    if decompress is None:
        msg = f"Unsupported Content-Encoding {encoding!r}; supported: {', '.join(sorted(_DECOMPRESS))}"
        raise ServeError(NOT_IMPLEMENTED, msg)
    if not body:
        return b""
    try:
        return decompress(body, max_size)
    except (EOFError, OSError, RuntimeError, ValueError, zlib.error, zstd.ZstdError) as exc:
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
