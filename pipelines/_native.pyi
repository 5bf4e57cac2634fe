"""tykpulse's native core (Rust, native/): built by the install as pipelines._native."""

from collections.abc import Sequence

from typing_extensions import Buffer

def crc32c(data: Buffer, crc: int = 0) -> int:
    """The CRC-32C of `data`, continuing from `crc`; the GIL is released for 1 MiB and more."""

def record_crc(head: bytes, frames: Sequence[Buffer]) -> int:
    """The checksum of a WAL record body: `head`, then each frame as u32 length + bytes.

    OverflowError for a frame of 4 GiB or more.
    """

# a dictionary-encoded string column: (distinct values, little-endian uint32 codes into them)
Dictionary = tuple[list[str], bytes]

def decode_analytics(payload: bytes, count: int) -> tuple[bytes, Dictionary, Dictionary, bytes, bytes] | None:
    """Columns of a msgpack tyk.analytics payload of exactly `count` records, or None.

    (timestamp_ns, org_id, api_id, response_code, latency_ms); the int columns are
    little-endian int64 bytes (numpy.frombuffer), invalid timestamps INVALID_NS; the ids
    are dictionary-encoded (each distinct value built once). None
    whenever the payload is not one whose every record the reference decoder accepts
    (pipelines.firehose.codec): the caller then decodes it that way.
    """
