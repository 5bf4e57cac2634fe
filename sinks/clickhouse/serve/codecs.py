"""HTTP compression as ClickHouse negotiates it.

Request bodies are decompressed by their `Content-Encoding`; responses are
compressed only when the request set `enable_http_compression=1` and sent an
`Accept-Encoding` the endpoint can produce, choosing the client's first
preference (clickhouse-connect lists lz4, zstd, br, gzip, deflate in that
order). lz4 is the LZ4 frame format, as clickhouse-connect writes and reads it.

Decompression streams with a bound on its output: a body that would expand
past `max_size` bytes is refused with BAD_ARGUMENTS (HTTP 413) once that many
bytes came out, so a small compressed body cannot make the process allocate
gigabytes. Concatenated gzip members and lz4/zstd frames are all decoded, in linear time: at most
1,024 of them plus one per 4 KiB they decode to (a body of empty frames is refused, not decoded
for minutes).
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
    def decompress(self, data: bytes | memoryview, max_length: int = -1, /) -> bytes: ...


def too_large(limit: int) -> ServeError:
    msg = f"Request body is larger than the limit of {limit} bytes after decompression"
    return ServeError(BAD_ARGUMENTS, msg, status=413)


# A member or frame is fed in pieces that double from this size: what is left over after one ends
# (unused_data, a copy) is at most the last piece, so the copying stays linear in the body. Fed whole,
# every member's end copied the rest of the body: 1 MiB of empty zstd frames took 4.7 s, 256 MiB days.
_FIRST_PIECE: Final = 256
# Each member or frame costs a decompressor (lz4: ~28 us) whatever it holds, and an empty one is 9-20
# bytes: a body may hold 1,024 of them, and one more per 4 KiB they decode to (clients send one per
# block of rows, or one stream), so 256 MiB of empty lz4 frames is refused instead of taking 11 minutes.
_FREE_MEMBERS: Final = 1024
_BYTES_PER_MEMBER: Final = 4096


def members_allowed(decoded: int) -> int:
    """How many compressed members, frames or blocks a body may hold once they decoded to `decoded`
    bytes (codecs here, ClickHouse's own blocks in blocks.py)."""
    return _FREE_MEMBERS + decoded // _BYTES_PER_MEMBER


class _Pieces:
    """`data` in pieces that double in size within a member, from a cursor a member's end moves back."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.position = 0
        self.size = _FIRST_PIECE
        self.members = 0

    def __bool__(self) -> bool:
        return self.position < len(self.view)

    def next(self) -> memoryview:
        piece = self.view[self.position : self.position + self.size]
        self.position += len(piece)
        self.size *= 2
        return piece

    def member_ended(self, unused: int, decoded: int) -> None:
        """The member ended with `unused` bytes of the last piece not its own: the next starts there.

        Raises ValueError past the members `decoded` bytes of output allow.
        """
        self.position -= unused
        self.size = _FIRST_PIECE
        self.members += 1
        if self.position < len(self.view) and self.members >= members_allowed(decoded):
            msg = f"{self.members} compressed members or frames holding {decoded} bytes: too many for that"
            raise ValueError(msg)


def _inflate(data: bytes, wbits: int, limit: int, *, members: bool) -> bytes:
    """zlib/gzip data, at most `limit` bytes of it (zlib's max_length=0 means unbounded: never pass 0)."""
    out = bytearray()
    pieces = _Pieces(data)
    while True:
        stream = zlib.decompressobj(wbits)
        while not stream.eof:
            if not pieces:
                msg = "Compressed data ended before the end-of-stream marker"
                raise EOFError(msg)
            out += stream.decompress(pieces.next(), limit + 1 - len(out))
            while stream.unconsumed_tail and len(out) <= limit:
                out += stream.decompress(stream.unconsumed_tail, limit + 1 - len(out))
            if len(out) > limit:
                raise too_large(limit)
        pieces.member_ended(len(stream.unused_data), len(out))
        if not (members and pieces):
            return bytes(out)


def _unframe(data: bytes, new: Callable[[], _FrameDecompressor], limit: int) -> bytes:
    """Every lz4/zstd frame in `data`, at most `limit` bytes of output in all."""
    out = bytearray()
    pieces = _Pieces(data)
    while pieces:
        stream = new()
        while not stream.eof:
            if not pieces:
                msg = "Compressed data ended before the end of the frame"
                raise EOFError(msg)
            out += stream.decompress(pieces.next(), limit + 1 - len(out))
            while not stream.eof and not stream.needs_input and len(out) <= limit:
                chunk = stream.decompress(b"", limit + 1 - len(out))
                if not chunk:
                    break
                out += chunk
            if len(out) > limit:
                raise too_large(limit)
        pieces.member_ended(len(stream.unused_data or b""), len(out))  # lz4: None when nothing is left
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
