"""Request bodies decoded by their Content-Encoding: what real clients send decodes, and a body made of
many tiny members or frames costs neither quadratic copying nor a decompressor per 9 bytes.

Found by attack: each member's end copied the rest of the body (`unused_data`), and each frame built a
decompressor whatever it held, so 1 MiB of empty zstd frames (9 bytes each) took 4.7 s of CPU with the
GIL and 2 MiB sent by an anonymous reader held the server 18 s (256 MiB would have taken days).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import lz4.frame
import pytest
from backports import zstd

from sinks.clickhouse.serve.codecs import _FIRST_PIECE, _FrameDecompressor, _unframe, decode_body
from sinks.clickhouse.serve.errors import BAD_ARGUMENTS, CANNOT_DECOMPRESS, ServeError

pytestmark = pytest.mark.unit

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zstd": lambda data: bytes(zstd.compress(data)),
    "lz4": lambda data: bytes(lz4.frame.compress(data)),
}
ROWS = b"".join(b"%d\tapi-%d\n" % (i, i % 7) for i in range(200_000))


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_one_member_and_several_decode_whole(encoding: str) -> None:
    compress = COMPRESSORS[encoding]
    assert decode_body(compress(ROWS), encoding) == ROWS
    parts = [ROWS[i : i + 300_001] for i in range(0, len(ROWS), 300_001)]
    assert decode_body(b"".join(compress(part) for part in parts), encoding) == ROWS
    # a client that compresses each block of rows: as many frames as blocks, each holding 2 KiB
    blocks = [ROWS[i : i + 2048] for i in range(0, len(ROWS), 2048)]
    assert len(blocks) > 1024
    assert decode_body(b"".join(compress(block) for block in blocks), encoding) == ROWS


def test_deflate_is_one_stream() -> None:
    assert decode_body(zlib.compress(ROWS), "deflate") == ROWS


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_truncated_and_oversized_bodies_are_refused(encoding: str) -> None:
    body = COMPRESSORS[encoding](ROWS)
    with pytest.raises(ServeError) as info:
        decode_body(body[:-7], encoding)
    assert info.value.code == CANNOT_DECOMPRESS
    with pytest.raises(ServeError) as info:
        decode_body(body, encoding, max_size=len(ROWS) - 1)
    assert (info.value.code, info.value.status) == (BAD_ARGUMENTS, 413)


@pytest.mark.parametrize("encoding", sorted(COMPRESSORS))
def test_a_body_of_empty_members_is_refused_at_once(encoding: str) -> None:
    empty = COMPRESSORS[encoding](b"")
    body = empty * ((1 << 20) // len(empty))  # 1 MiB: 52,000 to 116,000 members holding nothing
    with pytest.raises(ServeError) as info:  # the old code accepted it, after 1-5 s of CPU
        decode_body(body, encoding)
    assert info.value.code == CANNOT_DECOMPRESS
    assert "too many" in info.value.message


class CountingDecompressor:
    """A frame decompressor that adds up the bytes it is fed (all instances together)."""

    fed = 0

    def __init__(self, new: Callable[[], _FrameDecompressor]) -> None:
        self.inner = new()

    def decompress(self, data: bytes | memoryview, max_length: int = -1, /) -> bytes:
        CountingDecompressor.fed += len(data)
        return self.inner.decompress(data, max_length)

    @property
    def eof(self) -> bool:
        return self.inner.eof

    @property
    def needs_input(self) -> bool:
        return self.inner.needs_input

    @property
    def unused_data(self) -> bytes:
        return self.inner.unused_data


@pytest.mark.parametrize("new", [lz4.frame.LZ4FrameDecompressor, zstd.ZstdDecompressor], ids=["lz4", "zstd"])
def test_frames_are_fed_to_their_decompressors_about_once(new: Callable[[], _FrameDecompressor]) -> None:
    # 1,000 small frames (within the free allowance) before one large one. Fed whole, every frame's
    # decompressor was handed the rest of the body (and its end copied it): ~500 bodies' worth here.
    compress = lz4.frame.compress if new is lz4.frame.LZ4FrameDecompressor else zstd.compress
    body = bytes(compress(b"x")) * 1000 + bytes(compress(ROWS))
    CountingDecompressor.fed = 0
    assert _unframe(body, lambda: CountingDecompressor(new), 1 << 30) == b"x" * 1000 + ROWS
    # a frame's first piece is fed whole, whatever of it is the frame's: at most one such piece each
    assert CountingDecompressor.fed <= 2 * len(body) + 1001 * _FIRST_PIECE
