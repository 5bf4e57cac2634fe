"""Findings computed from the frames of pipelines.analyst.queries: storms, spikes, change impact.

Pure pandas over frames already fetched, so each is testable on a
hand-made frame; the SQL stays in queries.py.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipelines.analyst.queries import config_changes, rate_limit_hits, traffic_around
from pipelines.analyst.scope import Scope


def _episodes(flags: pd.Series, step: pd.Timedelta) -> pd.Series:
    """Number consecutive flagged windows (index: window_start) as one episode each."""
    starts = flags & ~(flags.shift(1, fill_value=False) & (flags.index.to_series().diff() == step))
    return starts.cumsum().where(flags)


def find_storms(hits: pd.DataFrame, *, factor: float = 5.0, min_hits: int = 50) -> pd.DataFrame:
    """Rate-limit storms per API from `rate_limit_hits(..., by='api_id')`.

    A window is stormy when its rate-limited events are at least `min_hits`
    and `factor` times the API's median per window (windows without events
    count as 0, so a normally quiet API storms at `min_hits`). Consecutive
    stormy windows form one storm: api_id, onset, end (exclusive), windows,
    peak and total rate-limited events.
    """
    columns = ["api_id", "onset", "end", "windows", "peak_hits", "total_hits"]
    if hits.empty:
        return pd.DataFrame(columns=columns)
    table = hits.pivot_table(index="window_start", columns="api_id", values="rate_limited", aggfunc="sum")
    windows = table.index.sort_values()
    step = pd.Series(windows).diff().min() if len(windows) > 1 else pd.Timedelta(minutes=1)
    full = pd.date_range(windows.min(), windows.max(), freq=step)
    table = table.reindex(full, fill_value=0).fillna(0)
    out: list[dict[str, Any]] = []
    for api_id in table.columns:
        series = table[api_id]
        threshold = max(factor * float(series.median()), float(min_hits))
        episode = _episodes(series >= threshold, step)
        for _, windows_of in series[episode.notna()].groupby(episode.dropna()):
            out.append(
                {
                    "api_id": api_id,
                    "onset": windows_of.index.min(),
                    "end": windows_of.index.max() + step,
                    "windows": len(windows_of),
                    "peak_hits": int(windows_of.max()),
                    "total_hits": int(windows_of.sum()),
                }
            )
    return pd.DataFrame(out, columns=columns).sort_values(["onset", "api_id"], ignore_index=True)


def storms(client: Any, scope: Scope, *, factor: float = 5.0, min_hits: int = 50) -> pd.DataFrame:
    return find_storms(rate_limit_hits(client, scope, by="api_id"), factor=factor, min_hits=min_hits)


def find_spikes(frame: pd.DataFrame, column: str, *, factor: float = 3.0) -> pd.DataFrame:
    """Rows whose `column` is more than `factor` robust deviations above its median.

    Robust deviation: 1.4826 x the median absolute deviation; when that is 0
    (a flat series), rows above `factor` x the median are spikes.
    """
    values = frame[column].astype(float)
    median = values.median()
    spread = 1.4826 * (values - median).abs().median()
    threshold = median + factor * spread if spread > 0 else factor * max(median, 1.0)
    spikes = frame[values > threshold].copy()
    spikes["threshold"] = threshold
    return spikes


def change_impact(
    client: Any,
    scope: Scope,
    *,
    before: pd.Timedelta = pd.Timedelta(minutes=5),  # noqa: B008 - an immutable value
    after: pd.Timedelta = pd.Timedelta(minutes=5),  # noqa: B008
) -> pd.DataFrame:
    """Traffic before vs after each minute with configuration changes.

    One row per change minute: the commands, then requests, 5xx and 4xx rates
    and p95 latency over `before` (ending at the change minute) and `after`
    (starting after it), and the differences. Each side's p95 is the p95 of all
    its requests (the latency histograms of its minutes and APIs merged), NaN
    when the side has no requests (its rates are then 0). The change minute
    itself is on neither side: it mixes both. Traffic honours the scope's
    org/API filters; changes are fleet-wide (notices carry no API column).
    """
    minute = scope.with_grain("1m")
    changes = config_changes(client, minute)
    if changes.empty:
        return pd.DataFrame()
    commands = changes.groupby("window_start").agg(
        changes=("changes", "sum"), commands=("command", lambda c: ",".join(sorted(set(c))))
    )
    around = traffic_around(client, minute, list(commands.index), before=before, after=after)
    if around.empty:
        return pd.DataFrame()
    sides = around.set_index(["at", "side"])
    rows = [
        {"change_at": at, "changes": int(info.changes), "commands": info.commands}
        | _side(sides, at, "before")
        | _side(sides, at, "after")
        for at, info in commands.iterrows()
    ]
    out = pd.DataFrame(rows)
    for metric in ("rate_5xx", "rate_4xx", "latency_p95_ms"):
        out[f"delta_{metric}"] = out[f"after_{metric}"] - out[f"before_{metric}"]
    return out


def _side(sides: pd.DataFrame, at: Any, label: str) -> dict[str, Any]:
    if (at, label) not in sides.index:
        return {
            f"{label}_requests": 0,
            f"{label}_rate_5xx": 0.0,
            f"{label}_rate_4xx": 0.0,
            f"{label}_latency_p95_ms": float("nan"),
        }
    row = sides.loc[(at, label)]
    requests = int(row["requests"])
    weight = max(requests, 1)
    return {
        f"{label}_requests": requests,
        f"{label}_rate_5xx": float(row["status_5xx"]) / weight,
        f"{label}_rate_4xx": float(row["status_4xx"]) / weight,
        f"{label}_latency_p95_ms": float(row["latency_p95_ms"]),
    }
