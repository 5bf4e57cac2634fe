"""tykpulse's native core (Rust, native/): built by the install as pipelines._native."""

from collections.abc import Sequence

from typing_extensions import Buffer

def crc32c(data: Buffer, crc: int = 0) -> int:
    """The CRC-32C of `data`, continuing from `crc`; the GIL is released for 1 MiB and more."""

def record_crc(head: bytes, frames: Sequence[Buffer]) -> int:
    """The checksum of a WAL record body: `head`, then each frame as u32 length + bytes.

    OverflowError for a frame of 4 GiB or more.
    """
