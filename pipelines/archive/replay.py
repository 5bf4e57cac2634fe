"""Re-publish archived messages on a firehose, for debugging or to feed another environment.

Messages are sent in the order they were received, under the replay's own
identity: each original node `n` becomes node `<prefix>n` with a fresh boot,
numbered from seq 0, so a worker receiving a replay accounts for it (loss,
duplicates) like any publisher, and never mistakes it for the original
node's messages. Records are the archived ones: API keys arrive hashed
(`h:<hex>`), which the receiving worker hashes again, so distinct counts stay
exact. The replay sends heartbeats for its nodes while it runs.

Delivery: as a bridge publishes (pipelines.bridges.publishing): at a full
subscriber the replay waits rather than drops, and a message is split under
the receivers' message limit (`max_message_bytes`). Hashing keys makes an
archived message larger than the one received (a key becomes `h:<16 hex>`),
so a message that was just under the limit would otherwise be refused whole,
its connection dropped. A record over the limit on its own is counted, not
sent. Pace with `rate` (messages per second) when the receiver is slower than
the archive.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Final

import msgspec
import numpy as np

from pipelines.archive.progress import NoProgress, Progress
from pipelines.archive.timerange import TimeRange
from pipelines.bridges.publishing import BridgePublisher
from pipelines.firehose.protocol import MAX_FUTURE_NS, MAX_NODE_BYTES, MAX_PAST_NS
from pipelines.firehose.timestamps import keep_extensions, to_ns_array
from pipelines.observe.throttle import LogThrottle
from pipelines.windows.batch import timestamp_verdicts
from sinks.clickhouse.archive import ArchivedMessage, EventsArchive

log = logging.getLogger(__name__)

DEFAULT_NODE_PREFIX: Final = "replay-"


@dataclasses.dataclass(slots=True)
class ReplaySummary:
    messages: int = 0
    records: int = 0
    nodes: int = 0
    seconds: float = 0.0
    too_large: int = 0  # records not sent: alone over the message limit
    refused: int = 0  # records not sent: the worker that archived them refused their timestamps
    unreadable: int = 0  # archived messages not sent: their payload is no msgpack array (damage)


def received_between(span: TimeRange) -> str:
    return (
        f"received >= fromUnixTimestamp64Nano({int(span.start_ns)}, 'UTC') "
        f"AND received < fromUnixTimestamp64Nano({int(span.end_ns)}, 'UTC')"
    )


def replay_node(prefix: str, node: str) -> str:
    """The replay's node for an original node, within the protocol's 128-byte limit."""
    name = (prefix + node).encode()[:MAX_NODE_BYTES]
    return name.decode(errors="ignore")


class Replayer:
    def __init__(
        self,
        archive: EventsArchive,
        publisher: BridgePublisher,
        *,
        node_prefix: str = DEFAULT_NODE_PREFIX,
        rate: float = 0.0,
        progress: Progress | None = None,
        max_future_ns: int = MAX_FUTURE_NS,
        max_past_ns: int = MAX_PAST_NS,
    ) -> None:
        self.archive = archive
        self.publisher = publisher
        self.node_prefix = node_prefix
        self.rate = rate
        self.progress = progress or NoProgress()
        self.summary = ReplaySummary()
        self._decoder = msgspec.msgpack.Decoder()
        self._log_throttle = LogThrottle()
        self.max_future_ns = max_future_ns
        self.max_past_ns = max_past_ns

    def run(self, span: TimeRange, stop: threading.Event | None = None) -> ReplaySummary:
        where = received_between(span)
        self.progress.phase("replaying (messages)", total=self.archive.count(where))
        started = time.monotonic()
        stop = stop or threading.Event()
        for chunk in self.archive.messages(where):
            for message in chunk:
                if stop.is_set() or not self._publish(message, stop):
                    return self._done(started)
                self.progress.advance()
                self._pace(started)
        self.publisher.maybe_heartbeat()
        return self._done(started)

    def _publish(self, message: ArchivedMessage, stop: threading.Event) -> bool:
        """One archived message (in several where it is over the limit); False if stopped first."""
        decoded = self._decoded(message)
        if decoded is None:
            return True
        node = replay_node(self.node_prefix, message.node)
        if node not in self.publisher.publisher.nodes:
            self.publisher.publisher.add_node(node)
            self.summary.nodes += 1
        keep_extensions(message.payload, decoded)
        records = self._accepted(decoded, message.received_ns)
        if not records:
            return True
        sent = self.publisher.publish(message.topic, records, stop, node=node)
        self.summary.messages += 1
        self.summary.records += sent.records
        self.summary.too_large += sent.too_large
        return not sent.stopped

    def _decoded(self, message: ArchivedMessage) -> list[Any] | None:
        """The message's records; None (counted, logged) when its payload is damaged: one such row
        ended the replay with a traceback, and the good messages after it were never sent."""
        try:
            decoded = self._decoder.decode(message.payload)
        except msgspec.DecodeError as exc:
            problem = str(exc)
        else:
            if isinstance(decoded, list):
                return decoded
            problem = f"a msgpack {type(decoded).__name__}, not an array of records"
        self.summary.unreadable += 1
        held = self._log_throttle.allow("unreadable")
        if held is not None:
            log.error(
                "archived message unreadable, not replayed node=%s boot=%d seq=%d error=%s "
                "(not logged since the last: %d)",
                message.node,
                message.boot,
                message.seq,
                problem[:200],
                held,
            )
        return None

    def _accepted(self, records: list[Any], received_ns: int) -> list[Any]:
        """The records the archiving worker counted: the archive keeps a message's records whole,
        and a record it refused for its time (judged against the message's receipt then) would be
        judged again by the receiving worker against its own receipt, now, and might pass."""
        stamps = to_ns_array([r.get("timestamp") if isinstance(r, dict) else None for r in records])
        received = np.full(len(records), received_ns, dtype=np.int64)
        bad, future, past = timestamp_verdicts(stamps, received, self.max_future_ns, self.max_past_ns)
        refused = bad | future | past
        if not refused.any():
            return records
        self.summary.refused += int(refused.sum())
        return [record for record, out in zip(records, refused, strict=True) if not out]

    def _pace(self, started: float) -> None:
        self.publisher.maybe_heartbeat()
        if self.rate <= 0:
            return
        ahead = self.summary.messages / self.rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)

    def _done(self, started: float) -> ReplaySummary:
        self.summary.seconds = time.monotonic() - started
        return self.summary
