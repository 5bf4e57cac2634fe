"""Which publishers are live: heartbeats, last receipt and staleness, per (node, boot).

Fed once per flush with the batch the flush took (accepted messages and
heartbeats) and checked on every flush tick, even when nothing arrived. A
publisher incarnation silent for STALE_FACTOR times the heartbeat interval it
promised turns stale (logged once) and live again when it is heard. An older
incarnation of a node that restarted is superseded: forgotten once it would
have gone stale, without a stale line, since its node is alive. An incarnation
whose last message was a goodbye (a heartbeat with `bye`) is stopped, never
stale: a planned stop is not an outage; a message heard after it (or a new
boot) makes the node live again.

Memory is bounded: incarnations silent for `retention_s` are forgotten, and
beyond `max_publishers` those heard least go first, the most recently first
heard among equals: a flood of envelopes under made-up names (each a new
incarnation) cannot push out the publishers that were there before it, whose
sequences would then restart and their losses go uncounted. `on_forget` lets
the sequence tracker forget them too. Past LOGGED_ARRIVALS incarnations tracked,
"first heard" and "stale" lines are throttled (the flood would otherwise write one each).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Final

import polars as pl

from pipelines.observe.throttle import LogThrottle
from pipelines.windows.batch import Batch
from sinks.clickhouse.contract import DEFAULT_INTERVAL_MS, STALE_FACTOR

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S: Final = 3600.0
DEFAULT_MAX_PUBLISHERS: Final = 10_000
LOGGED_ARRIVALS: Final = 256


@dataclasses.dataclass(slots=True)
class PublisherState:
    node: str
    boot: int
    first_seen_ns: int
    last_seen_ns: int
    interval_ms: int = DEFAULT_INTERVAL_MS
    messages: int = 0
    lost: int = 0
    stale: bool = False
    superseded: bool = False
    # receipt time of its goodbye (0: none); stopped while nothing newer was heard
    bye_ns: int = 0

    @property
    def stopped(self) -> bool:
        """Said goodbye and was silent since: a planned stop, not an outage."""
        return self.bye_ns > 0 and self.bye_ns >= self.last_seen_ns

    @property
    def state(self) -> str:
        return "stopped" if self.stopped else "stale" if self.stale else "live"

    def silent_ns(self, now_ns: int) -> int:
        return max(0, now_ns - self.last_seen_ns)

    def is_overdue(self, now_ns: int) -> bool:
        return self.silent_ns(now_ns) > STALE_FACTOR * self.interval_ms * 1_000_000


class PublisherLiveness:
    def __init__(
        self,
        *,
        retention_s: float = DEFAULT_RETENTION_S,
        max_publishers: int = DEFAULT_MAX_PUBLISHERS,
        clock: Callable[[], int] = time.time_ns,
        on_forget: Callable[[str, int], None] | None = None,
    ) -> None:
        self.retention_ns = int(retention_s * 1e9)
        self.max_publishers = max_publishers
        self.clock = clock
        self.on_forget = on_forget
        self._by_key: dict[tuple[str, int], PublisherState] = {}
        self._newest_boot: dict[str, int] = {}
        self._throttle = LogThrottle()

    def update(self, batch: Batch) -> None:
        """Fold in the accepted messages and heartbeats of one batch."""
        if batch.messages.height:
            seen = batch.messages.group_by("node_id", "boot").agg(
                first=pl.col("received_ns").min(),
                last=pl.col("received_ns").max(),
                messages=pl.len(),
                lost=pl.col("lost").sum(),
            )
            for node, boot, first, last, messages, lost in seen.iter_rows():
                self._heard(node, boot, first, last, messages, lost)
        if batch.heartbeats.height:
            # Each incarnation keeps the interval its own heartbeats promise: a heartbeat under
            # another boot of the same name (a forger's, or an old process still running) set the
            # newest incarnation's, 1 ms or an hour.
            intervals = batch.heartbeats.group_by("node_id", "boot").agg(pl.col("interval_ms").last())
            for node, boot, interval_ms in intervals.iter_rows():
                state = self._by_key.get((node, boot))
                if state is not None:
                    state.interval_ms = interval_ms
            self._goodbyes(batch.heartbeats.filter(pl.col("bye")))

    def _goodbyes(self, byes: pl.DataFrame) -> None:
        """Mark the incarnations that said goodbye (a message heard after it makes them live again)."""
        for node, boot, at in byes.group_by("node_id", "boot").agg(pl.col("received_ns").max()).iter_rows():
            state = self._by_key.get((node, boot))
            if state is None or at <= state.bye_ns:
                continue
            state.bye_ns = at
            if state.stopped:
                state.stale = False
                log.info("publisher stopped (said goodbye) node=%s boot=%d", node, boot)

    def _heard(self, node: str, boot: int, first: int, last: int, messages: int, lost: int) -> None:
        state = self._by_key.get((node, boot))
        if state is None:
            state = self._by_key[(node, boot)] = PublisherState(node, boot, first, last)
            self._log_arrival(node, boot, self._newest_boot.get(node))
        state.last_seen_ns = max(state.last_seen_ns, last)
        state.first_seen_ns = min(state.first_seen_ns, first)
        state.messages += messages
        state.lost += lost
        if boot >= self._newest_boot.get(node, -1):
            self._supersede(node, boot)
        if state.stale:
            state.stale = False
            log.warning("publisher live again node=%s boot=%d", node, boot)

    def _line_allowed(self, kind: str) -> int | None:
        """Lines of `kind` held back since the last one logged; None to hold this one back too.
        Every line is logged while LOGGED_ARRIVALS incarnations or fewer are tracked."""
        return 0 if len(self._by_key) <= LOGGED_ARRIVALS else self._throttle.allow(kind)

    def _log_arrival(self, node: str, boot: int, previous: int | None) -> None:
        held = self._line_allowed("arrival")
        if held is None:
            return
        if previous is not None and previous < boot:
            log.info(
                "publisher restarted node=%s boot=%d previous_boot=%d (not logged since the last: %d)",
                node,
                boot,
                previous,
                held,
            )
        elif previous is not None and previous > boot:  # not a restart: an older boot than the newest
            log.warning(
                "publisher heard under an older boot node=%s boot=%d newest_boot=%d "
                "(not logged since the last: %d)",
                node,
                boot,
                previous,
                held,
            )
        else:
            log.info(
                "publisher first heard node=%s boot=%d (not logged since the last: %d)", node, boot, held
            )

    def _log_stale(self, state: PublisherState, now: int) -> None:
        # Each made-up name goes stale once it is silent: a flood of them (or one checked late, by
        # a worker the flood slowed) wrote a warning per message, as "first heard" lines did.
        held = self._line_allowed("stale")
        if held is None:
            return
        log.warning(
            "publisher stale node=%s boot=%d silent_s=%.1f interval_ms=%d (not logged since the last: %d)",
            state.node,
            state.boot,
            state.silent_ns(now) / 1e9,
            state.interval_ms,
            held,
        )

    def _supersede(self, node: str, boot: int) -> None:
        old = self._newest_boot.get(node)
        self._newest_boot[node] = boot
        if old is not None and old != boot and (node, old) in self._by_key:
            self._by_key[(node, old)].superseded = True

    def check(self, now_ns: int | None = None) -> list[PublisherState]:
        """Mark overdue publishers stale (logging each once); forget what retention drops."""
        now = self.clock() if now_ns is None else now_ns
        turned = []
        forget = []
        for key, state in self._by_key.items():
            if not state.is_overdue(now):
                continue
            if state.superseded or state.silent_ns(now) > self.retention_ns:
                forget.append(key)
            elif not state.stale and not state.stopped:
                state.stale = True
                turned.append(state)
                self._log_stale(state, now)
        overflow = len(self._by_key) - len(forget) - self.max_publishers
        if overflow > 0:
            going = set(forget)
            kept = sorted(
                (s for k, s in self._by_key.items() if k not in going),
                key=lambda s: (s.messages, -s.first_seen_ns),
            )
            forget += [(s.node, s.boot) for s in kept[:overflow]]
        for key in forget:
            self._forget(key)
        return turned

    def _forget(self, key: tuple[str, int]) -> None:
        state = self._by_key.pop(key, None)
        if state is None:
            return
        if self._newest_boot.get(state.node) == state.boot:
            del self._newest_boot[state.node]
        if self.on_forget is not None:
            self.on_forget(state.node, state.boot)

    def publishers(self) -> list[PublisherState]:
        return sorted(self._by_key.values(), key=lambda s: (s.node, s.boot))

    def __len__(self) -> int:
        return len(self._by_key)
