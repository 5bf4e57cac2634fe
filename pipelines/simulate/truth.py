"""Ground truth: the exact rollups of everything the simulator sent.

Computed record by record in plain Python, deliberately sharing no code with
the rollup path it checks (only the definition of a nearest-rank quantile).
Raw keys are only held in memory to count distinct values; the file written
holds counts, never keys.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from pipelines.firehose.protocol import RATE_LIMIT_EVENTS, TOKEN_EVENTS
from pipelines.windows.histogram import nearest_rank

GRAINS: Final = {"1m": 60, "1h": 3600}
QUANTILES: Final = {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}


def _window(ts_ns: int, width: int) -> int:
    seconds = ts_ns // 1_000_000_000
    return seconds - seconds % width


class _Traffic:
    __slots__ = ("latencies", "requests", "s4xx", "s5xx", "s429")

    def __init__(self) -> None:
        self.requests = self.s4xx = self.s429 = self.s5xx = 0
        self.latencies: list[int] = []


class GroundTruth:
    def __init__(self) -> None:
        self.traffic: dict[str, dict[tuple[Any, ...], _Traffic]] = {g: {} for g in GRAINS}
        self.limits: dict[str, dict[tuple[Any, ...], list[Any]]] = {g: {} for g in GRAINS}
        self.tokens: dict[str, dict[tuple[Any, ...], list[Any]]] = {g: {} for g in GRAINS}
        self.config: dict[str, collections.Counter[tuple[Any, ...]]] = {
            g: collections.Counter() for g in GRAINS
        }
        self.publishers: dict[str, dict[str, int]] = {}

    def add_analytics(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            code = r["response_code"]
            if code < 0:
                continue
            for grain, width in GRAINS.items():
                key = (_window(r["timestamp"], width), r["org_id"], r["api_id"])
                t = self.traffic[grain].get(key)
                if t is None:
                    t = self.traffic[grain][key] = _Traffic()
                t.requests += 1
                t.s4xx += 400 <= code <= 499
                t.s429 += code == 429
                t.s5xx += 500 <= code <= 599
                t.latencies.append(r["latency"]["total"])

    def add_events(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            for grain, width in GRAINS.items():
                window = _window(r["timestamp"], width)
                if name in RATE_LIMIT_EVENTS:
                    entry = self.limits[grain].setdefault(
                        (window, r["org_id"], r["api_id"], name), [0, set()]
                    )
                    entry[0] += 1
                elif name in TOKEN_EVENTS:
                    entry = self.tokens[grain].setdefault((window, r["org_id"]), [0, 0, 0, set()])
                    entry[TOKEN_EVENTS.index(name)] += 1
                else:
                    continue
                if r.get("key"):
                    entry[-1].add(r["key"])

    def add_notices(self, node: str, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            for grain, width in GRAINS.items():
                self.config[grain][(_window(r["timestamp"], width), r["command"], node)] += 1

    def add_message(self, node: str, boot: int, records: int, *, heartbeat: bool) -> None:
        p = self.publishers.setdefault(node, {"boot": boot, "messages": 0, "records": 0})
        p["messages"] += 1
        if not heartbeat:
            p["records"] += records

    def views(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for grain in GRAINS:
            out[f"traffic_{grain}"] = [
                {
                    "window_start": k[0],
                    "org_id": k[1],
                    "api_id": k[2],
                    "requests": t.requests,
                    "status_4xx": t.s4xx,
                    "status_429": t.s429,
                    "status_5xx": t.s5xx,
                    **_quantiles(t.latencies),
                }
                for k, t in sorted(self.traffic[grain].items())
            ]
            out[f"rate_limit_hits_{grain}"] = [
                {
                    "window_start": k[0],
                    "org_id": k[1],
                    "api_id": k[2],
                    "event_type": k[3],
                    "hits": v[0],
                    "distinct_keys": len(v[1]),
                }
                for k, v in sorted(self.limits[grain].items())
            ]
            out[f"token_churn_{grain}"] = [
                {
                    "window_start": k[0],
                    "org_id": k[1],
                    "created": v[0],
                    "updated": v[1],
                    "deleted": v[2],
                    "distinct_keys": len(v[3]),
                }
                for k, v in sorted(self.tokens[grain].items())
            ]
            out[f"config_changes_{grain}"] = [
                {"window_start": k[0], "command": k[1], "node_id": k[2], "changes": n}
                for k, n in sorted(self.config[grain].items())
            ]
        return out

    def to_json(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"meta": meta, "publishers": self.publishers, "views": self.views()}

    def write(self, path: Path, meta: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(meta), indent=1, sort_keys=True))
        tmp.replace(path)


def _quantiles(latencies: list[int]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {name: nearest_rank(ordered, q) for name, q in QUANTILES.items()}
