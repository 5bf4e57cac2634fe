"""Reading a request body off the connection, strictly.

A body is framed by one `Content-Length` of ASCII digits or by
`Transfer-Encoding: chunked` with hex chunk sizes on CRLF-terminated lines of
at most MAX_LINE bytes; anything else (a negative or non-numeric length,
several lengths, both headers at once, another transfer coding, a malformed
chunk) is BAD_ARGUMENTS (HTTP 400), and a body over the limit is refused with
HTTP 413 before it is read. Whenever one of these errors is raised the rest
of the body is still on the connection, so the caller must close it rather
than read the leftovers as the next request (request smuggling).
"""

from __future__ import annotations

import dataclasses
import re
from email.message import Message
from typing import Final, Protocol

from sinks.clickhouse.serve.errors import BAD_ARGUMENTS, ServeError

MAX_LINE: Final = 4096
MAX_TRAILERS: Final = 32
_LENGTH: Final = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE: Final = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Reader(Protocol):
    """The connection's buffered input (BaseHTTPRequestHandler.rfile)."""

    def read(self, size: int, /) -> bytes: ...
    def readline(self, size: int, /) -> bytes: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Framing:
    chunked: bool
    length: int  # of a Content-Length body; 0 when chunked

    @property
    def empty(self) -> bool:
        return not self.chunked and self.length == 0


def _bad(message: str) -> ServeError:
    return ServeError(BAD_ARGUMENTS, message)


def _too_large(limit: int) -> ServeError:
    return ServeError(BAD_ARGUMENTS, f"Request body is larger than the limit of {limit} bytes", status=413)


def may_have_body(headers: Message) -> bool:
    """False only when the request certainly has no body: until it is read, the connection is unsafe."""
    lengths = headers.get_all("Content-Length") or []
    return bool(headers.get_all("Transfer-Encoding")) or any(v.strip() != "0" for v in lengths)


def framing(headers: Message, limit: int) -> Framing:
    """How the body is delimited (raises BAD_ARGUMENTS, or 413 for a Content-Length over `limit`)."""
    lengths = headers.get_all("Content-Length") or []
    codings = headers.get_all("Transfer-Encoding") or []
    if lengths and codings:
        msg = "Both Content-Length and Transfer-Encoding are set"
        raise _bad(msg)
    if codings:
        if len(codings) != 1 or codings[0].strip().lower() != "chunked":
            msg = "Unsupported Transfer-Encoding: only chunked is accepted"
            raise _bad(msg)
        return Framing(chunked=True, length=0)
    if not lengths:
        return Framing(chunked=False, length=0)
    if len(lengths) != 1 or not _LENGTH.fullmatch(lengths[0].strip()):
        msg = "Invalid Content-Length: must be one number of bytes"
        raise _bad(msg)
    length = int(lengths[0].strip())
    if length > limit:
        raise _too_large(limit)
    return Framing(chunked=False, length=length)


def read_body(rfile: Reader, frame: Framing, limit: int) -> bytes:
    """The whole body (raises BAD_ARGUMENTS for a malformed or truncated one, 413 past `limit`)."""
    if frame.chunked:
        return _read_chunked(rfile, limit)
    return _read_exact(rfile, frame.length)


def _read_exact(rfile: Reader, size: int) -> bytes:
    data = rfile.read(size) if size else b""
    if len(data) != size:
        msg = f"Request body ended after {len(data)} of {size} bytes"
        raise _bad(msg)
    return data


def _read_line(rfile: Reader, what: str) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if not line.endswith(b"\r\n"):
        msg = f"Malformed {what}: not a CRLF-terminated line of at most {MAX_LINE} bytes"
        raise _bad(msg)
    return line[:-2]


def _read_chunked(rfile: Reader, limit: int) -> bytes:
    # one buffer, not a list of chunks: a body sent one byte a chunk held a 33-byte object per byte
    # (8 MiB of body took 631 MiB; the 256 MiB allowed, ~20 GB, where readers reserve 256 MiB)
    body = bytearray()
    while True:
        size = _chunk_size(_read_line(rfile, "chunk size"))
        if size == 0:
            _skip_trailers(rfile)
            return bytes(body)
        if len(body) + size > limit:
            raise _too_large(limit)
        body += _read_exact(rfile, size)
        if rfile.read(2) != b"\r\n":
            msg = "Malformed chunk: data not followed by CRLF"
            raise _bad(msg)


def _chunk_size(line: bytes) -> int:
    digits = line.split(b";", 1)[0].strip(b" \t")
    if not _CHUNK_SIZE.fullmatch(digits):
        msg = "Malformed chunk size: must be hexadecimal"
        raise _bad(msg)
    return int(digits, 16)


def _skip_trailers(rfile: Reader) -> None:
    for _ in range(MAX_TRAILERS + 1):
        if not _read_line(rfile, "chunked trailer"):
            return
    msg = f"More than {MAX_TRAILERS} chunked trailer lines"
    raise _bad(msg)
