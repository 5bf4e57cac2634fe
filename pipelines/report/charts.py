"""The report's charts, drawn with matplotlib's object API (no pyplot state, no display)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pipelines.report.data import ReportData

Chart = Callable[[Axes, ReportData], bool]


def _outcomes(ax: Axes, data: ReportData) -> bool:
    t = data.traffic
    if t.empty:
        return False
    ok = t["requests"].astype("int64") - t["status_4xx"].astype("int64") - t["status_5xx"].astype("int64")
    other_4xx = t["status_4xx"].astype("int64") - t["status_429"].astype("int64")
    ax.stackplot(
        t["window_start"], ok, other_4xx, t["status_429"], t["status_5xx"],
        labels=["2xx/3xx", "other 4xx", "429", "5xx"],
    )  # fmt: skip
    ax.set_ylabel("requests / window")
    ax.legend(loc="upper left", fontsize="small")
    return True


def _refusals(ax: Axes, data: ReportData) -> bool:
    r = data.rates
    if r.empty:
        return False
    ax.plot(r["window_start"], 100 * r["rate_429"], label="429 rate limited")
    ax.plot(r["window_start"], 100 * r["rate_403_quota"], label="403 quota")
    for storm in data.storms.itertuples():
        ax.axvspan(storm.onset, storm.end, color="tab:red", alpha=0.15)
    ax.set_ylabel("% of requests")
    ax.legend(loc="upper left", fontsize="small")
    return True


def _tokens(ax: Axes, data: ReportData) -> bool:
    t = data.tokens
    if t.empty:
        return False
    ax.plot(t["window_start"], t["created"], label="created")
    ax.plot(t["window_start"], t["deleted"], label="deleted")
    ax.set_ylabel("tokens / window")
    ax.legend(loc="upper left", fontsize="small")
    return True


def _errors_and_changes(ax: Axes, data: ReportData) -> bool:
    t = data.traffic
    if t.empty:
        return False
    ax.plot(t["window_start"], 100 * t["rate_5xx"], label="5xx %")
    for at in pd.unique(data.changes["window_start"]) if not data.changes.empty else []:
        ax.axvline(at, color="grey", alpha=0.2)
    ax.set_ylabel("% of requests")
    ax.legend(loc="upper left", fontsize="small")
    return True


CHARTS: dict[str, tuple[str, Chart]] = {
    "outcomes": ("Requests by outcome", _outcomes),
    "refusals": ("429 and 403 rates (storms shaded)", _refusals),
    "tokens": ("Token creates and deletes", _tokens),
    "errors": ("5xx rate and configuration changes (grey lines)", _errors_and_changes),
}


def render_png(chart: Chart, data: ReportData) -> str | None:
    """The chart as a base64 PNG, or None when there is nothing to draw."""
    figure = Figure(figsize=(10, 2.8), dpi=96, layout="tight")
    ax = figure.add_subplot()
    if not chart(ax, data):
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()
