"""A fleet of simulated Tyk gateways and a dashboard, publishing on the firehose.

Gateways send analytics and the gateway events their requests fire; the
dashboard node sends configuration notices in bursts; every node sends
heartbeats. Sending is paced to the requested record rate. With a truth file
configured, every record sent is also added to the ground truth.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.firehose.protocol import TOPIC_ANALYTICS, event_topic, notice_topic
from pipelines.firehose.publisher import FirehosePublisher
from pipelines.security.notices import sign_sha256
from pipelines.settings import SimulatorSettings
from pipelines.simulate.traffic import Record, TrafficDrawer
from pipelines.simulate.truth import GroundTruth
from pipelines.simulate.world import World, WorldShape

log = logging.getLogger(__name__)

DASHBOARD_NODE = "dashboard"
_TICK_S = 0.01
_PROGRESS_EVERY_S = 5.0


class ScaledClock:
    """Event time running `scale` times faster than the wall clock from its first reading (the
    start of the run), reaching the wall clock's now when `duration_s` have passed."""

    def __init__(self, scale: float, duration_s: float, now: Callable[[], int] = time.time_ns) -> None:
        self.scale = scale
        self.span_ns = int(duration_s * (scale - 1) * 1e9)
        self.now = now
        self.wall_start: int | None = None

    def __call__(self) -> int:
        wall = self.now()
        if self.wall_start is None:
            self.wall_start = wall
        return self.wall_start - self.span_ns + int((wall - self.wall_start) * self.scale)


def scaled_clock(scale: float, duration_s: float, now: Callable[[], int] = time.time_ns) -> Callable[[], int]:
    """The wall clock itself at scale 1, else a ScaledClock."""
    return now if scale == 1 else ScaledClock(scale, duration_s, now)


def sign_notice(command: str, payload: str, secret: str) -> str:
    """Tyk's algorithm-5 signature: hex SHA-256 of command + payload + node_secret."""
    return sign_sha256(command, payload, secret)


@dataclasses.dataclass(slots=True)
class FleetSummary:
    analytics: int = 0
    events: int = 0
    notices: int = 0
    messages: int = 0
    elapsed_s: float = 0.0

    @property
    def records_per_s(self) -> float:
        return self.analytics / self.elapsed_s if self.elapsed_s else 0.0


class Fleet:
    def __init__(
        self,
        settings: SimulatorSettings,
        publisher: FirehosePublisher,
        *,
        node_prefix: str,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.clock = clock
        self.rng = np.random.default_rng(settings.seed)
        world = World.build(WorldShape(settings.orgs, settings.apis, settings.keys), self.rng)
        self.drawer = TrafficDrawer(world, self.rng, late_fraction=settings.late_fraction)
        self.drawer.storm_api = self.drawer.storm_target()
        self.storm: dict[str, Any] = {}
        self.incident: dict[str, Any] = {}
        self.token_burst_ns = 0
        self.gateways = [f"{node_prefix}-gw{i + 1:02d}" for i in range(settings.gateways)]
        self.dashboard = f"{node_prefix}-{DASHBOARD_NODE}"
        for node in (*self.gateways, self.dashboard):
            publisher.add_node(node)
        self.truth = GroundTruth() if settings.truth else None
        self.summary = FleetSummary()
        self._next_gateway = 0
        self._secret = settings.node_secret.get_secret_value()

    def readings(self) -> dict[str, float | dict[str, float]]:
        """What `simulate` exports on /metrics and /status while it publishes (read from another thread)."""
        summary = self.summary
        sent = {"analytics": summary.analytics, "events": summary.events, "notices": summary.notices}
        return {
            "sent": {kind: float(count) for kind, count in sent.items()},
            "messages": float(self.publisher.sent_messages),
        }

    def run(self, stop: threading.Event) -> FleetSummary:
        s = self.settings
        started = time.monotonic()
        last_ns = self.clock()
        next_wave = started + s.token_wave_every_s
        next_burst = started + s.config_burst_every_s / 2
        next_progress = started + _PROGRESS_EVERY_S
        self._heartbeats()
        while not stop.is_set():
            now = time.monotonic()
            elapsed = now - started
            if s.duration_s and elapsed >= s.duration_s:
                break
            due = int(s.record_rate * elapsed) - self.summary.analytics
            if due >= s.message_records:
                now_ns = self.clock()
                self._send_analytics(due - due % s.message_records, last_ns, now_ns)
                last_ns = now_ns
            else:
                time.sleep(_TICK_S)
            self._storm(elapsed)
            self._incident(elapsed)
            if s.token_burst_at_s and not self.token_burst_ns and elapsed >= s.token_burst_at_s:
                self.token_burst_ns = self.clock()
                self._token_wave(s.token_burst_size)
            if now >= next_wave:
                self._token_wave()
                next_wave += s.token_wave_every_s
            if now >= next_burst:
                self._config_burst()
                next_burst += s.config_burst_every_s
            if now >= next_progress:
                log.info(
                    "simulator sent records=%d rate=%.0f/s",
                    self.summary.analytics,
                    self.summary.analytics / elapsed,
                )
                next_progress += _PROGRESS_EVERY_S
            self._heartbeats()
        self._heartbeats(force=True, bye=True)  # the run is over: a planned stop
        self.summary.elapsed_s = time.monotonic() - started
        self.summary.messages = self.publisher.sent_messages
        return self.summary

    def _storm(self, elapsed: float) -> None:
        s = self.settings
        on = (
            bool(s.storm_for_s and s.storm_api_share)
            and s.storm_at_s <= elapsed < s.storm_at_s + s.storm_for_s
        )
        if on == bool(self.drawer.storm_share):
            return
        self.drawer.storm_share = s.storm_api_share if on else 0.0
        api = self.drawer.storm_api
        if on:
            self.storm = {
                "api_id": self.drawer.world.api_ids[api],
                "org_id": self.drawer.world.org_ids[int(self.drawer.world.api_org[api])],
                "started_ns": self.clock(),
            }
        else:
            self.storm["ended_ns"] = self.clock()
        log.info("simulator storm %s api=%s", "on" if on else "off", self.storm["api_id"])

    def _incident(self, elapsed: float) -> None:
        s = self.settings
        on = bool(s.incident_at_s) and s.incident_at_s <= elapsed < s.incident_at_s + s.incident_for_s
        if on == bool(self.drawer.error_share):
            return
        self.drawer.error_share = s.incident_5xx_share if on else 0.0
        if on:
            api = self.drawer.world.api_ids[self.drawer.storm_api]
            self.incident = {"started_ns": self.clock(), "command": "ApiUpdated", "api_id": api}
            self._notices([("ApiUpdated", api)], self.dashboard)
        else:
            self.incident["ended_ns"] = self.clock()
        log.info("simulator incident %s", "on" if on else "off")

    def meta(self) -> dict[str, Any]:
        s = self.settings
        return {
            "storm": self.storm,
            "incident": self.incident,
            "token_burst_ns": self.token_burst_ns,
            "seed": s.seed,
            "rate": s.record_rate,
            "batch": s.message_records,
            "gateways": self.gateways,
            "dashboard": self.dashboard,
            "sent_analytics": self.summary.analytics,
            "sent_events": self.summary.events,
            "sent_notices": self.summary.notices,
            "elapsed_s": self.summary.elapsed_s,
        }

    def _send_analytics(self, count: int, start_ns: int, end_ns: int) -> None:
        batch = self.settings.message_records
        messages = count // batch
        slots = (self._next_gateway + np.arange(messages)) % len(self.gateways)
        self._next_gateway = (self._next_gateway + messages) % len(self.gateways)
        per_node = np.bincount(slots, minlength=len(self.gateways))
        for node, node_messages in zip(self.gateways, per_node, strict=True):
            if not node_messages:
                continue
            drawn = self.drawer.analytics(int(node_messages) * batch, start_ns, max(end_ns - start_ns, 1))
            for i in range(0, len(drawn.analytics), batch):
                self._publish(TOPIC_ANALYTICS, drawn.analytics[i : i + batch], node)
            if self.truth is not None:
                self.truth.add_analytics(drawn.analytics)
            self.summary.analytics += len(drawn.analytics)
            self._send_events(drawn.events, node)

    def _send_events(self, events: dict[str, list[Record]], node: str) -> None:
        for name, records in events.items():
            for i in range(0, len(records), self.settings.message_records):
                self._publish(event_topic(name), records[i : i + self.settings.message_records], node)
            if self.truth is not None:
                self.truth.add_events(name, records)
            self.summary.events += len(records)

    def _token_wave(self, size: int = 0) -> None:
        size = size or int(self.rng.integers(5, 40))
        now = self.clock()
        events = self.drawer.token_wave(size, size // 2, size // 3, now)
        node = self.gateways[int(self.rng.integers(len(self.gateways)))]
        self._send_events(events, node)
        changed = [r["key"] for name in ("TokenUpdated", "TokenDeleted") for r in events.get(name, [])]
        if changed:
            self._notices([("KeySpaceUpdateNotification", ",".join(changed))], node)

    def _config_burst(self) -> None:
        self._notices(self.drawer.config_commands(int(self.rng.integers(1, 6))), self.dashboard)

    def _notices(self, commands: list[tuple[str, str]], node: str) -> None:
        now = self.clock()
        for command, payload in commands:
            record = {
                "command": command,
                "payload": payload,
                "algorithm": 5,
                "signature": sign_notice(command, payload, self._secret),
                "timestamp": now,
            }
            self._publish(notice_topic(command), [record], node)
            if self.truth is not None:
                self.truth.add_notices(node, [record])
            self.summary.notices += 1

    def _heartbeats(self, *, force: bool = False, bye: bool = False) -> None:
        nodes = list(self.publisher.nodes) if force else None
        if nodes is not None:
            for node in nodes:
                self.publisher.heartbeat(node, bye=bye)
        else:
            nodes = self.publisher.maybe_heartbeat()
        if self.truth is not None:
            for node in nodes:
                state = self.publisher.nodes[node]
                self.truth.add_message(node, state.boot, 1, heartbeat=True)

    def _publish(self, topic: str, records: list[Record], node: str) -> None:
        state = self.publisher.publish(topic, records, node=node)
        if self.truth is not None:
            self.truth.add_message(node, state.boot, len(records), heartbeat=False)
