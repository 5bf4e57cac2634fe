"""tykpulse's native core (Rust, native/): built by the install as pipelines._native."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

def crc32c(data: Buffer, crc: int = 0) -> int:
    """The CRC-32C of `data`, continuing from `crc`; the GIL is released for 1 MiB and more."""

def record_crc(head: bytes, frames: Sequence[Buffer]) -> int:
    """The checksum of a WAL record body: `head`, then each frame as u32 length + bytes.

    OverflowError for a frame of 4 GiB or more.
    """

def encode_small_record(
    position: int, received_ns: int, frames: Sequence[Buffer], limit: int
) -> tuple[bytes, int] | None:
    """One whole WAL record (header and body) and its checksum, built in one pass; None when the
    record would be larger than `limit` bytes or cannot be logged (more than 65,535 frames, a frame
    of 4 GiB or more). OverflowError when position or received_ns do not fit u64 / i64.
    """

def encode_small_records(
    position: int, messages: list[list[bytes]], received_ns: list[int], start: int, limit: int
) -> tuple[bytes, list[int]]:
    """The messages from `start` on as whole WAL records numbered from `position`, end to end, and
    their checksums, built in one call; it stops before the first message whose record would be
    larger than `limit` bytes or cannot be logged (encode_small_record's None), so the checksums say
    how many it took. OverflowError when a position or receive time does not fit u64 / i64.
    """

def containers_within(payload: Buffer, limit: int) -> int | None:
    """The maps and arrays a msgpack value holds at every depth, counted without building anything;
    None when it holds more than `limit` or is no single well-formed value (the GIL is released for
    1 MiB and more)."""

def json_array_exceeds(payload: Buffer, limit: int) -> bool:
    """Whether a JSON array surely has more than `limit` top-level elements (at least `limit` commas
    at depth 1, strings stepped over whole); one pass, nothing built (the GIL is released for 1 MiB
    and more). Malformed JSON is not judged."""

def find_record(data: bytes, start: int, first: int, bound: int, budget: int) -> int | None:
    """The offset of the first intact record at or after `start` whose position is in [first, bound),
    after a damaged record at offset 0 whose position was `first`; None if there is none, or once
    `budget` bytes were checksummed (every offset is tried; the GIL is released for 1 MiB and more)."""

# a dictionary-encoded string column: (distinct values, little-endian uint32 codes into them)
Dictionary = tuple[list[str], bytes]
# (timestamp_ns, org_id, api_id, response_code, latency_ms): the int columns as little-endian int64
# bytes (numpy.frombuffer), invalid timestamps INVALID_NS; the ids dictionary-encoded
Columns = tuple[bytes, Dictionary, Dictionary, bytes, bytes]

class MessageColumns:
    """One message's analytics records as columns, held by Rust until a FlushColumns takes them."""

    @staticmethod
    def decode(payload: Buffer, count: int) -> MessageColumns | None:
        """The columns of a msgpack tyk.analytics payload of exactly `count` records, or None.

        None whenever the payload is not one whose every record the reference decoder
        (pipelines.firehose.codec) accepts with the same values: the caller then decodes it that way.
        """

    @staticmethod
    def from_columns(
        timestamp_ns: list[int],
        org_id: list[str],
        api_id: list[str],
        response_code: list[int],
        latency_ms: list[int],
    ) -> MessageColumns:
        """Columns of records decoded elsewhere; ValueError when their lengths differ."""

    def __len__(self) -> int: ...
    def columns(self) -> Columns: ...

def analytics_envelopes(
    messages: Sequence[Sequence[Buffer]],
    topic: bytes,
    max_message_bytes: int,
    max_records: int,
    max_node_bytes: int,
) -> list[tuple[str, int, int, int, int] | None]:
    """Per message (its frames), (node, boot, seq, sent, count) when it is a `topic` message of three
    frames and at most `max_message_bytes` whose msgpack envelope the reference decoder
    (pipelines.firehose.codec) accepts as it is, else None: the caller decodes that one the
    reference way."""

class FlushColumns:
    """The analytics records of one flush, appended message by message under one dictionary per id."""

    def __init__(self) -> None: ...
    def append(self, message: MessageColumns) -> None: ...
    def append_payloads(self, payloads: Sequence[Buffer], counts: Sequence[int]) -> int:
        """Msgpack tyk.analytics payloads, the n-th of counts[n] records, decoded and appended in
        order until one is not what MessageColumns.decode accepts; how many were appended (the GIL
        is released when they add up to 1 MiB). ValueError when the two lengths differ."""

    def __len__(self) -> int: ...
    def columns(self) -> Columns: ...

# (offsets, buckets, counts): key i's histogram is buckets[offsets[i]:offsets[i + 1]] (little-endian
# int64 offsets, one more than there are keys; uint16 buckets; uint64 counts)
Histograms = tuple[bytes, bytes, bytes]
# (window_start, org codes, api codes) as little-endian uint32, one per key, sorted by key;
# (requests, status_4xx, status_429, status_5xx) as little-endian uint64; the latency histograms
TrafficRows = tuple[bytes, bytes, bytes, tuple[bytes, bytes, bytes, bytes], Histograms]

def traffic_rows(
    window_start: npt.NDArray[np.uint32],
    org_codes: npt.NDArray[np.uint32],
    api_codes: npt.NDArray[np.uint32],
    response_code: npt.NDArray[np.int64],
    latency_ms: npt.NDArray[np.int64],
    thresholds: npt.NDArray[np.int64],
) -> TrafficRows:
    """The traffic rollup's rows of a flush's analytics records, aggregated with the GIL released.

    The histogram's thresholds are LogHistogram.thresholds(). Records with a negative response
    code are left out. ValueError when the columns differ in length or the thresholds are out of
    order; BufferError when an array's type is not the one named here.
    """
