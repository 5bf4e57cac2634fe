"""The one-page HTML report: headline numbers, charts as inline PNGs, short tables."""

from __future__ import annotations

import datetime as dt
import html
from typing import Final

import pandas as pd

from pipelines.report.charts import CHARTS, render_png
from pipelines.report.data import ReportData

_STYLE: Final = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: .2em; }
.tiles { display: grid; grid-template-columns: repeat(4, 1fr); gap: .6em; margin: 1.2em 0; }
.tile { border: 1px solid #ddd; border-radius: 6px; padding: .6em; }
.tile .v { font-size: 1.4em; font-weight: 600; } .tile .k { color: #666; font-size: .85em; }
img { width: 100%; } table { border-collapse: collapse; font-size: .85em; margin-bottom: 1.5em; }
td, th { border-bottom: 1px solid #eee; padding: .25em .6em; text-align: left; }
"""


_LIMITED: Final = ("api_id", "org_id", "rate_limited", "quota_exceeded", "limited_share")


def _table(frame: pd.DataFrame, columns: list[str], empty: str) -> str:
    if frame.empty:
        return f"<p>{html.escape(empty)}</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in columns) + "</tr>"
        for _, row in frame[columns].iterrows()
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, pd.Timestamp):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def _range(data: ReportData) -> str:
    if data.traffic.empty:
        return "no traffic in range"
    first, last = data.traffic["window_start"].min(), data.traffic["window_start"].max()
    return f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC"


_NO_INCREASE: Final = "No configuration change was followed by more 5xx."


def largest_5xx_increases(impact: pd.DataFrame, limit: int = 5) -> pd.DataFrame:
    """The changes after which the 5xx rate rose, largest rise first; a fall or no change is not listed."""
    if impact.empty:
        return impact
    rose = impact[impact["delta_rate_5xx"] > 0]
    return rose.sort_values("delta_rate_5xx", ascending=False).head(limit)


def render(data: ReportData, *, title: str = "tykpulse report") -> str:
    tiles = "".join(
        f'<div class="tile"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>'
        for k, v in data.headline().items()
    )
    charts = []
    for name, (caption, chart) in CHARTS.items():
        png = render_png(chart, data)
        if png is not None:
            charts.append(
                f'<h2>{html.escape(caption)}</h2><img alt="{name}" src="data:image/png;base64,{png}">'
            )
    limited = _table(data.top_limited, [*_LIMITED], "No limits hit.")
    worst = largest_5xx_increases(data.impact)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="sub">{html.escape(_range(data))} &middot; generated {generated}</p>
<div class="tiles">{tiles}</div>
{"".join(charts)}
<h2>APIs hitting limits</h2>
{limited}
<h2>Rate-limit storms</h2>
{_table(data.storms, ["api_id", "onset", "end", "windows", "peak_hits"], "No storms.")}
<h2>Changes followed by the largest 5xx increase</h2>
{_table(worst, ["change_at", "commands", "before_rate_5xx", "after_rate_5xx"], _NO_INCREASE)}
</body></html>
"""
