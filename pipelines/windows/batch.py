"""A flush's worth of records, validated, windowed and in columns.

The receive side (pipelines.ingest) only appends decoded records; everything
that can be done for many records at once happens here, once per flush:
timestamp normalisation and validation, window assignment, key hashing,
and per-message accounting for ingest health.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines.firehose import analytics_columns
from pipelines.firehose.analytics_columns import FlushAnalytics, FlushColumns, MessageColumns
from pipelines.firehose.protocol import MAX_PAST_NS, RejectReason, TopicKind
from pipelines.firehose.timestamps import INVALID_NS, to_ns_array
from pipelines.keys import KeyHasher
from pipelines.windows.notice_origin import issuing_node
from pipelines.windows.tumbling import TumblingWindows

WINDOW = "window_start"

_EMPTY_SCHEMAS: dict[str, dict[str, Any]] = {
    "analytics": {
        WINDOW: pl.UInt32,
        "org_id": pl.Utf8,
        "api_id": pl.Utf8,
        "response_code": pl.Int64,
        "latency_ms": pl.Int64,
    },
    "events": {
        WINDOW: pl.UInt32,
        "event": pl.Utf8,
        "org_id": pl.Utf8,
        "api_id": pl.Utf8,
        "key_hash": pl.UInt64,
    },
    "notices": {WINDOW: pl.UInt32, "command": pl.Utf8, "node_id": pl.Utf8},
    "heartbeats": {
        "node_id": pl.Utf8,
        "timestamp_ns": pl.Int64,
        "interval_ms": pl.Int64,
        "received_ns": pl.Int64,
        # the envelope's boot and the goodbye flag: a goodbye stops one incarnation
        "boot": pl.Int64,
        "bye": pl.Boolean,
        WINDOW: pl.UInt32,  # of receipt, like the messages frame
    },
    "messages": {
        WINDOW: pl.UInt32,
        "node_id": pl.Utf8,
        "records": pl.UInt64,
        "lost": pl.UInt64,
        "boot": pl.Int64,
        "received_ns": pl.Int64,
        "sent_ns": pl.Int64,
        # 1 for a message received but refused as a whole (it advanced the sequence)
        "rejected": pl.UInt8,
    },
    "rejections": {WINDOW: pl.UInt32, "node_id": pl.Utf8, "reason": pl.Utf8, "rejected": pl.UInt64},
}


_KIND_CODES = {kind: code for code, kind in enumerate(TopicKind)}
_LATEST_RECEIVE_NS = 1 << 62


def empty_frame(name: str) -> pl.DataFrame:
    return pl.DataFrame(schema=_EMPTY_SCHEMAS[name])


@dataclasses.dataclass(frozen=True, slots=True)
class AnalyticsRecords:
    """A flush's accepted analytics records, windowed: numpy columns, the ids still as codes.

    The traffic rollup aggregates them natively as they are; frame() spells them out as a
    polars frame for anything that reads records one by one.
    """

    window_start: npt.NDArray[np.uint32]
    columns: FlushAnalytics

    @classmethod
    def empty(cls) -> AnalyticsRecords:
        return cls(np.empty(0, np.uint32), FlushAnalytics.of(FlushColumns()))

    @property
    def height(self) -> int:
        return len(self.window_start)

    def frame(self) -> pl.DataFrame:
        """The records with their ids as strings (columns as in _EMPTY_SCHEMAS["analytics"])."""
        columns = self.columns
        return pl.DataFrame(
            {
                WINDOW: self.window_start,
                "org_id": columns.org_id(),
                "api_id": columns.api_id(),
                "response_code": columns.response_code,
                "latency_ms": columns.latency_ms,
            },
            schema=_EMPTY_SCHEMAS["analytics"],
        )


@dataclasses.dataclass(slots=True)
class Batch:
    """Columns of one flush. Record frames hold accepted records only."""

    analytics: AnalyticsRecords
    events: pl.DataFrame
    notices: pl.DataFrame
    heartbeats: pl.DataFrame
    messages: pl.DataFrame
    rejections: pl.DataFrame

    @classmethod
    def empty(cls) -> Batch:
        return cls(AnalyticsRecords.empty(), *(empty_frame(n) for n in _EMPTY_SCHEMAS if n != "analytics"))

    @property
    def records(self) -> int:
        return self.analytics.height + self.events.height + self.notices.height


@dataclasses.dataclass(slots=True)
class PendingMessages:
    """What the receive side accumulated since the last flush (plain lists, cheap appends)."""

    node: list[str] = dataclasses.field(default_factory=list)
    received_ns: list[int] = dataclasses.field(default_factory=list)
    lost: list[int] = dataclasses.field(default_factory=list)
    boot: list[int] = dataclasses.field(default_factory=list)
    sent_ns: list[int] = dataclasses.field(default_factory=list)
    kind: list[TopicKind] = dataclasses.field(default_factory=list)
    record_count: list[int] = dataclasses.field(default_factory=list)
    rejected: list[bool] = dataclasses.field(default_factory=list)
    # record structs of every kind but analytics, whose records are columns
    records: dict[TopicKind, list[Any]] = dataclasses.field(
        default_factory=lambda: {k: [] for k in TopicKind}
    )
    analytics: FlushColumns = dataclasses.field(default_factory=FlushColumns)
    # (received_ns, node, reason, count) for rejections known at decode time
    rejections: list[tuple[int, str, str, int]] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.node) + len(self.rejections)

    def add(
        self,
        *,
        node: str,
        boot: int,
        sent_ns: int,
        received_ns: int,
        lost: int,
        kind: TopicKind,
        records: list[Any] | MessageColumns,
    ) -> None:
        """One accepted message (the receive path's only way in, so the columns stay aligned)."""
        self.node.append(node)
        self.received_ns.append(received_ns)
        self.lost.append(lost)
        self.boot.append(boot)
        self.sent_ns.append(sent_ns)
        self.kind.append(kind)
        self.record_count.append(len(records))
        self.rejected.append(False)
        if isinstance(records, MessageColumns):
            self.analytics.append(records)
        elif kind is TopicKind.ANALYTICS:
            self.analytics.append(analytics_columns.from_records(records))
        else:
            self.records[kind].extend(records)

    def add_analytics_payloads(
        self,
        payloads: list[bytes],
        counts: list[int],
        *,
        node: list[str],
        boot: list[int],
        sent_ns: list[int],
        received_ns: list[int],
        lost: list[int],
    ) -> int:
        """Accepted analytics messages whose payloads are still to decode, decoded natively straight
        into the flush's columns, in order, until one is declined (FlushColumns.append_payloads);
        how many were added. The one declined and those after it are not added: the caller decodes
        that one the reference way (and adds it with `add`) before the rest, so records stay in
        the order of their messages."""
        added = self.analytics.append_payloads(payloads, counts)
        self.node += node[:added]
        self.received_ns += received_ns[:added]
        self.lost += lost[:added]
        self.boot += boot[:added]
        self.sent_ns += sent_ns[:added]
        self.kind += [TopicKind.ANALYTICS] * added
        self.record_count += counts[:added]
        self.rejected += [False] * added
        return added

    def add_rejected(self, *, node: str, boot: int, received_ns: int, lost: int) -> None:
        """A message refused as a whole whose envelope was read: received, so not lost.

        It has no records (kind is irrelevant with a count of 0) and no trusted
        `sent` (0 keeps it out of delivery latency).
        """
        self.add(
            node=node,
            boot=boot,
            sent_ns=0,
            received_ns=received_ns,
            lost=lost,
            kind=TopicKind.HEARTBEAT,
            records=[],
        )
        self.rejected[-1] = True


def timestamp_verdicts(
    ts: npt.NDArray[np.int64], received: npt.NDArray[np.int64], max_future_ns: int, max_past_ns: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Which records (event times `ts`, their messages' receive times) are refused, and why: no
    valid time; stamped more than max_future_ns after their receipt; more than max_past_ns before.

    Far-past records are refused too: each month of event time is a ClickHouse partition, and an
    insert touching too many of them fails as a whole.
    """
    # bounded so that adding the limits cannot overflow (2**62 ns is the year 2116)
    now = np.clip(received, 0, _LATEST_RECEIVE_NS)
    bad = ts == INVALID_NS
    future = ~bad & (ts > now + max_future_ns)
    past = ~bad & (ts < now - max_past_ns)
    return bad, future, past


class BatchBuilder:
    """Turns PendingMessages into a Batch (pure, given its hasher).

    A record's timestamp is judged against its own message's receive time: the
    same verdict whenever and wherever the batch is built (a flush, a log read
    back after an outage, a Kafka partition, a rebuild whose chunk spans days).
    """

    def __init__(
        self,
        windows: TumblingWindows,
        hasher: KeyHasher,
        max_future_ns: int,
        max_past_ns: int = MAX_PAST_NS,
    ) -> None:
        self.windows = windows
        self.hasher = hasher
        self.max_future_ns = max_future_ns
        self.max_past_ns = max_past_ns

    def build(self, pending: PendingMessages) -> Batch:
        received = np.array(pending.received_ns, dtype=np.int64)
        recv_windows = self.windows.starts_s(received) if received.size else np.empty(0, np.uint32)
        kinds = np.array([_KIND_CODES[k] for k in pending.kind], dtype=np.int8)
        counts = np.array(pending.record_count, dtype=np.int64)
        accepted = np.zeros(len(pending.node), dtype=np.int64)
        rejections: list[tuple[int, str, str, int]] = list(pending.rejections)
        frames: dict[TopicKind, tuple[list[Any], npt.NDArray[np.int64], npt.NDArray[np.int64]]] = {}
        analytics = FlushAnalytics.of(pending.analytics)
        for kind in TopicKind:
            records = pending.records[kind]
            message_ids = np.flatnonzero(kinds == _KIND_CODES[kind])
            per_record_msg = (
                np.repeat(message_ids, counts[message_ids]) if message_ids.size else (np.empty(0, np.int64))
            )
            if kind is TopicKind.ANALYTICS:
                ts = analytics.timestamp_ns
            else:
                ts = to_ns_array([r.timestamp for r in records])
            bad, future, past = timestamp_verdicts(
                ts, received[per_record_msg], self.max_future_ns, self.max_past_ns
            )
            for mask, reason in (
                (bad, RejectReason.BAD_TIMESTAMP),
                (future, RejectReason.FUTURE_TIMESTAMP),
                (past, RejectReason.PAST_TIMESTAMP),
            ):
                if mask.any():
                    per_msg = np.bincount(per_record_msg[mask], minlength=len(pending.node))
                    for m in np.flatnonzero(per_msg):
                        rejections.append(
                            (pending.received_ns[m], pending.node[m], reason.value, int(per_msg[m]))
                        )
            ok = ~(bad | future | past)
            if kind is not TopicKind.HEARTBEAT:
                accepted += np.bincount(per_record_msg[ok], minlength=len(pending.node))
            if kind is TopicKind.ANALYTICS:
                analytics = analytics if ok.all() else analytics.keep(ok)
                continue
            kept = [r for r, keep in zip(records, ok, strict=True) if keep] if not ok.all() else records
            frames[kind] = (kept, ts[ok], per_record_msg[ok])
        node = pending.node
        return Batch(
            analytics=AnalyticsRecords(self.windows.starts_s(analytics.timestamp_ns), analytics),
            events=self._events(*frames[TopicKind.EVENT]),
            notices=self._notices(*frames[TopicKind.NOTICE], node),
            heartbeats=self._heartbeats(*frames[TopicKind.HEARTBEAT], pending, recv_windows),
            messages=pl.DataFrame(
                {
                    WINDOW: recv_windows,
                    "node_id": node,
                    "records": accepted.astype(np.uint64),
                    "lost": np.array(pending.lost, dtype=np.uint64),
                    "boot": np.array(pending.boot, dtype=np.int64),
                    "received_ns": received,
                    "sent_ns": np.array(pending.sent_ns, dtype=np.int64),
                    "rejected": np.array(pending.rejected, dtype=np.uint8),
                },
                schema=_EMPTY_SCHEMAS["messages"],
            ),
            rejections=self._rejections(rejections),
        )

    def _events(self, records: list[Any], ts: npt.NDArray[np.int64], _: Any) -> pl.DataFrame:
        if not records:
            return empty_frame("events")
        return pl.DataFrame(
            {
                WINDOW: self.windows.starts_s(ts),
                "event": [r.event for r in records],
                "org_id": [r.org_id for r in records],
                "api_id": [r.api_id for r in records],
                "key_hash": self.hasher.hash_many([r.key for r in records]),
            },
            schema=_EMPTY_SCHEMAS["events"],
        )

    def _notices(
        self, records: list[Any], ts: npt.NDArray[np.int64], msg: npt.NDArray[np.int64], node: list[str]
    ) -> pl.DataFrame:
        if not records:
            return empty_frame("notices")
        return pl.DataFrame(
            {
                WINDOW: self.windows.starts_s(ts),
                "command": [r.command for r in records],
                # the gateway when the payload names it, not the bridge that relayed it
                "node_id": [
                    issuing_node(r.command, r.payload, node[m]) for r, m in zip(records, msg, strict=True)
                ],
            },
            schema=_EMPTY_SCHEMAS["notices"],
        )

    def _heartbeats(
        self,
        records: list[Any],
        ts: npt.NDArray[np.int64],
        msg: npt.NDArray[np.int64],
        pending: PendingMessages,
        recv_windows: npt.NDArray[np.uint32],
    ) -> pl.DataFrame:
        if not records:
            return empty_frame("heartbeats")
        return pl.DataFrame(
            {
                "node_id": [r.node for r in records],
                "timestamp_ns": ts,
                "interval_ms": [r.interval_ms for r in records],
                "received_ns": [pending.received_ns[m] for m in msg],
                "boot": [pending.boot[m] for m in msg],
                "bye": [r.bye for r in records],
                WINDOW: recv_windows[msg],
            },
            schema=_EMPTY_SCHEMAS["heartbeats"],
        )

    def _rejections(self, rows: list[tuple[int, str, str, int]]) -> pl.DataFrame:
        if not rows:
            return empty_frame("rejections")
        received = np.array([r[0] for r in rows], dtype=np.int64)
        return pl.DataFrame(
            {
                WINDOW: self.windows.starts_s(received),
                "node_id": [r[1] for r in rows],
                "reason": [r[2] for r in rows],
                "rejected": np.array([r[3] for r in rows], dtype=np.uint64),
            },
            schema=_EMPTY_SCHEMAS["rejections"],
        )
