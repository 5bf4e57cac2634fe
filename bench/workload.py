"""The benchmark's traffic: a pool of pre-encoded firehose payloads, patched in place.

Encoding Tyk records costs a publisher more than decoding them costs a worker,
so a publisher that encodes as it goes measures itself, not the worker. The
pool is encoded once (records drawn by the simulator's World, widened to the
~29 fields of Tyk's AnalyticsRecord, ~670 bytes each in msgpack) and resent
with fresh envelopes. Two things are patched in the encoded bytes, with numpy,
without re-encoding:

- API keys (the analytics `api_key` and the events' `key`): their last 7
  characters become the decimal digits of a random index below `keys`, redrawn
  on every pass over the pool, so `keys` sets the number of distinct API keys
  the worker sees (the cardinality its key hashing and distinct counts face);
- timestamps: every record's `timestamp` is an 8-byte int of nanoseconds, set
  to "now" per pass or, for latency runs, per message.

Every message of a pool has the same number of records, so records lost with
a message are `records_per_message` times the messages lost.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from pipelines.firehose.protocol import TOPIC_ANALYTICS, event_topic
from pipelines.simulate.traffic import TrafficDrawer
from pipelines.simulate.world import World, WorldShape

# Placeholders located in the encoded bytes, then overwritten. The timestamp
# sentinel is a positive int above 2**32, which msgpack encodes as 0xcf + 8 bytes.
_TS_SENTINEL: Final = 0x17E5_A7E5_7A3B_1234
_KEY_DIGITS: Final = 7
_KEY_SENTINEL: Final = "#" * _KEY_DIGITS
_POWERS: Final = 10 ** np.arange(_KEY_DIGITS - 1, -1, -1, dtype=np.int64)
_KEY_OFFSETS: Final = np.arange(_KEY_DIGITS, dtype=np.int64)
MAX_KEYS: Final = 10**_KEY_DIGITS


@dataclasses.dataclass(frozen=True, slots=True)
class WorkloadShape:
    records_per_message: int = 100
    keys: int = 30_000
    encoding: str = "msgpack"
    pool_records: int = 40_000
    seed: int = 7


def _widen(record: dict[str, Any], key_index: int) -> dict[str, Any]:
    """The simulator's record plus the rest of Tyk's AnalyticsRecord fields, with patchable slots."""
    out = dict(record)
    out["timestamp"] = _TS_SENTINEL
    if record["api_key"]:
        out["api_key"] = record["api_key"][:-_KEY_DIGITS] + _KEY_SENTINEL
    out.update(
        day=27,
        month=11,
        year=2026,
        hour=10,
        oauth_id="",
        geo={"country": {"iso_code": ""}, "city": {"names": {}}, "location": {}},
        network={"open_connections": 0, "closed_connections": 0, "bytes_in": 0, "bytes_out": 0},
        alias="",
        expireAt=1_800_000_000 + key_index,
        original_path=record["path"],
    )
    return out


def _event(record: dict[str, Any]) -> dict[str, Any]:
    out = dict(record)
    out["timestamp"] = _TS_SENTINEL
    if record["key"]:
        out["key"] = record["key"][:-_KEY_DIGITS] + _KEY_SENTINEL
    return out


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items) - size + 1, size):
        yield items[start : start + size]


def draw_records(shape: WorkloadShape) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Analytics records and the events they fired, with placeholders for keys and timestamps."""
    rng = np.random.default_rng(shape.seed)
    world = World.build(WorldShape(keys=2_000), rng)
    drawn = TrafficDrawer(world, rng).analytics(shape.pool_records, 0, 1)
    analytics = [_widen(r, i) for i, r in enumerate(drawn.analytics)]
    events = {name: [_event(r) for r in recs] for name, recs in drawn.events.items()}
    return analytics, events


class MessagePool:
    """Encoded payloads in one buffer, resent in order; keys and timestamps patched in place."""

    def __init__(self, shape: WorkloadShape) -> None:
        self.shape = shape
        encoder: Any = msgspec.msgpack.Encoder() if shape.encoding == "msgpack" else msgspec.json.Encoder()
        analytics, events = draw_records(shape)
        size = shape.records_per_message
        messages = [(TOPIC_ANALYTICS, chunk) for chunk in _chunks(analytics, size)]
        for name, records in events.items():
            messages += [(event_topic(name), chunk) for chunk in _chunks(records, size)]
        # interleave event messages among analytics ones, as gateways send them
        order = np.random.default_rng(shape.seed).permutation(len(messages))
        payloads = [encoder.encode(messages[i][1]) for i in order]
        self.topics = [messages[i][0].encode() for i in order]
        self.buffer = bytearray(b"".join(payloads))
        self.bytes = np.frombuffer(self.buffer, dtype=np.uint8)
        ends = np.cumsum([len(p) for p in payloads])
        self.bounds = list(zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True))
        self.views = [memoryview(self.buffer)[a:b] for a, b in self.bounds]
        self.records = size * len(payloads)
        self._ts_offsets = np.arange(8 if shape.encoding == "msgpack" else 19, dtype=np.int64)
        ts_at = self._find(_ts_pattern(shape.encoding))
        self._ts_all = ts_at[:, None] + self._ts_offsets
        cuts = np.searchsorted(ts_at, np.array(self.bounds, dtype=np.int64))
        self._ts_per_message = [self._ts_all[a:b] for a, b in cuts]
        self._key_at = self._find(re.escape(_KEY_SENTINEL.encode()))
        self._rng = np.random.default_rng(shape.seed + 1)

    def __len__(self) -> int:
        return len(self.views)

    def _find(self, pattern: bytes) -> npt.NDArray[np.int64]:
        starts = [m.start() for m in re.finditer(pattern, self.buffer)]
        return np.array(starts, dtype=np.int64)

    def redraw_keys(self) -> None:
        """Give every key slot a fresh random index below shape.keys."""
        if not self._key_at.size:
            return
        values = self._rng.integers(0, self.shape.keys, self._key_at.size)
        digits = (values[:, None] // _POWERS) % 10 + ord("0")
        self.bytes[self._key_at[:, None] + _KEY_OFFSETS] = digits.astype(np.uint8)

    def stamp_all(self, now_ns: int) -> None:
        """Set every record's timestamp."""
        self._stamp(self._ts_all, now_ns)

    def stamp_message(self, index: int, now_ns: int) -> None:
        """Set the timestamps of one message's records."""
        self._stamp(self._ts_per_message[index], now_ns)

    def _stamp(self, positions: npt.NDArray[np.int64], now_ns: int) -> None:
        if self.shape.encoding == "msgpack":
            self.bytes[positions] = np.frombuffer(now_ns.to_bytes(8, "big"), dtype=np.uint8)
        else:
            self.bytes[positions] = np.frombuffer(str(now_ns).encode(), dtype=np.uint8)


def _ts_pattern(encoding: str) -> bytes:
    """Where the sentinel's value bytes start (after msgpack's 0xcf marker)."""
    if encoding == "msgpack":
        return b"(?<=\xcf)" + re.escape(_TS_SENTINEL.to_bytes(8, "big"))
    return re.escape(str(_TS_SENTINEL).encode())
