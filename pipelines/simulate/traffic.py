"""Draws Tyk traffic from a World: analytics records and the events they fire.

A 429 record comes with the RatelimitExceeded event Tyk fires for it (or an
OrgRateLimitExceeded for an org-level limit); a quota 403 with QuotaExceeded.
Token lifecycle waves (TokenCreated/Updated/Deleted) and configuration bursts
(ApiUpdated, PolicyChanged, ...) are drawn on their own schedules.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from pipelines.simulate.world import World

STATUS_OK = (200, 200, 200, 201, 204)
STATUS_5XX = (500, 502, 503, 504)
CONFIG_COMMANDS = ("ApiUpdated", "ApiUpdated", "PolicyChanged", "ApiAdded", "ApiRemoved", "GroupReload")

Record = dict[str, Any]


@dataclasses.dataclass(slots=True)
class Drawn:
    analytics: list[Record]
    events: dict[str, list[Record]]


@dataclasses.dataclass(slots=True)
class TrafficDrawer:
    world: World
    rng: np.random.Generator
    late_fraction: float = 0.0
    org_limit_share: float = 0.1
    live_tokens: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # while a storm is on, this share of all requests goes to storm_api and is rate-limited
    storm_api: int = 0
    storm_share: float = 0.0
    # while an incident is on, this share of the remaining requests is answered 5xx
    error_share: float = 0.0
    _token_serial: int = 0

    def analytics(self, count: int, start_ns: int, span_ns: int) -> Drawn:
        w, rng = self.world, self.rng
        api = rng.choice(len(w.api_ids), size=count, p=w.api_weights)
        # draws only while a storm is on, so runs without one keep their seeded sequence
        storm = rng.random(count) < self.storm_share if self.storm_share else np.zeros(count, dtype=bool)
        api = np.where(storm, self.storm_api, api)
        org = w.api_org[api]
        key_index = w.org_key_start[org] + (rng.random(count) * w.org_key_count[org]).astype(np.int64)
        u = rng.random(count)
        p429, p403 = w.api_p429[api], w.api_p403[api]
        is429 = (u < p429) | storm
        is403 = ~is429 & (u < p429 + p403)
        rest = rng.random(count)
        code = np.where(
            rest < 0.005,
            rng.choice(STATUS_5XX, count),
            np.where(rest < 0.02, 404, np.where(rest < 0.025, 401, rng.choice(STATUS_OK, count))),
        )
        if self.error_share:
            code = np.where(rng.random(count) < self.error_share, rng.choice(STATUS_5XX, count), code)
        code = np.where(is429, 429, np.where(is403, 403, code))
        latency = np.where(
            is429 | is403,
            rng.integers(0, 3, count),
            rng.lognormal(np.log(w.api_latency_ms[api]), 0.6).astype(np.int64),
        )
        ts = start_ns + (rng.random(count) * span_ns).astype(np.int64)
        late = rng.random(count) < self.late_fraction
        ts = np.where(late, ts - rng.integers(60, 240, count) * 1_000_000_000, ts)
        org_limit = rng.random(count) < self.org_limit_share
        records: list[Record] = []
        events: dict[str, list[Record]] = {}
        for i in range(count):
            a, o = int(api[i]), int(org[i])
            key = "" if w.api_keyless[a] else w.keys[key_index[i]]
            status, lat, t = int(code[i]), int(latency[i]), int(ts[i])
            org_limited = status == 429 and bool(key) and bool(org_limit[i])
            if org_limited:
                status = 403  # Tyk answers an organisation's rate limit with 403, not 429 (fact sheet 1.6)
            records.append(_analytics_record(w, a, o, key, status, lat, t))
            if org_limited:
                name = "OrgRateLimitExceeded"
                events.setdefault(name, []).append(_limit_event(name, w, a, o, w.org_ids[o], t))
            elif status == 429 and key:
                name = "RatelimitExceeded"
                events.setdefault(name, []).append(_limit_event(name, w, a, o, key, t))
            elif status == 403 and key:
                events.setdefault("QuotaExceeded", []).append(_limit_event("QuotaExceeded", w, a, o, key, t))
        return Drawn(records, events)

    def storm_target(self) -> int:
        """The API a storm hits: the keyed API of median popularity (so the storm stands out)."""
        keyed = np.flatnonzero(~self.world.api_keyless)
        by_weight = keyed[np.argsort(self.world.api_weights[keyed], kind="stable")]
        return int(by_weight[len(by_weight) // 2])

    def token_wave(self, created: int, updated: int, deleted: int, ts_ns: int) -> dict[str, list[Record]]:
        w, rng = self.world, self.rng
        events: dict[str, list[Record]] = {"TokenCreated": [], "TokenUpdated": [], "TokenDeleted": []}
        for _ in range(created):
            org = w.org_ids[int(rng.integers(len(w.org_ids)))]
            self._token_serial += 1
            key = f"{org}{self._token_serial:032x}"
            self.live_tokens.append((org, key))
            events["TokenCreated"].append(_token_event("TokenCreated", org, key, ts_ns, "Key generated."))
        for _ in range(min(updated, len(self.live_tokens))):
            org, key = self.live_tokens[int(rng.integers(len(self.live_tokens)))]
            events["TokenUpdated"].append(_token_event("TokenUpdated", org, key, ts_ns, "Key modified."))
        for _ in range(min(deleted, len(self.live_tokens))):
            org, key = self.live_tokens.pop(int(rng.integers(len(self.live_tokens))))
            events["TokenDeleted"].append(_token_event("TokenDeleted", org, key, ts_ns, "Key deleted."))
        return {name: recs for name, recs in events.items() if recs}

    def config_commands(self, count: int) -> list[tuple[str, str]]:
        """(command, payload) pairs; payloads as Tyk sends them (mostly ignored by gateways)."""
        out = []
        for _ in range(count):
            command = CONFIG_COMMANDS[int(self.rng.integers(len(CONFIG_COMMANDS)))]
            payload = (
                ""
                if command == "GroupReload"
                else self.world.api_ids[int(self.rng.integers(len(self.world.api_ids)))]
            )
            out.append((command, payload))
        return out


def _analytics_record(w: World, api: int, org: int, key: str, status: int, latency: int, ts: int) -> Record:
    path = f"/{w.api_names[api]}/resource"
    return {
        "method": "GET",
        "host": "upstream.internal",
        "path": path,
        "raw_path": path,
        "content_length": 0,
        "user_agent": "tykpulse-simulator",
        "response_code": status,
        "api_key": key,
        "timestamp": ts,
        "api_version": "Non Versioned",
        "api_name": w.api_names[api],
        "api_id": w.api_ids[api],
        "org_id": w.org_ids[org],
        "request_time": latency,
        "ip_address": "10.0.0.1",
        "latency": {"total": latency, "upstream": max(latency - 1, 0), "gateway": min(latency, 1)},
        "tags": ["key-" + key[-8:]] if key else [],
        "track_path": False,
        "listen_path": f"/{w.api_names[api]}/",
    }


def _limit_event(name: str, w: World, api: int, org: int, key: str, ts: int) -> Record:
    messages = {
        "RatelimitExceeded": "Rate Limit Exceeded",
        "OrgRateLimitExceeded": "Organisation rate limit has been exceeded",
        "QuotaExceeded": "Key Quota Limit Exceeded",
    }
    return {
        "event": name,
        "timestamp": ts,
        "org_id": w.org_ids[org],
        "api_id": w.api_ids[api],
        "key": key,
        "origin": "10.0.0.1",
        "path": f"/{w.api_names[api]}/resource",
        "message": messages[name],
    }


def _token_event(name: str, org: str, key: str, ts: int, message: str) -> Record:
    return {"event": name, "timestamp": ts, "org_id": org, "api_id": "", "key": key, "message": message}
