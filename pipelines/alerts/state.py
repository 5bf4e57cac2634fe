"""Pending, firing, resolved: what each evaluation of a rule means for its alerts.

Pure: an evaluation gives the rows the rule's SQL returned and the time; the
result is the alerts to send now. As in Prometheus, a series is pending until
it has fired for `for` seconds; firing alerts are re-sent at every evaluation
with `endsAt` a few intervals ahead (so Alertmanager resolves them by itself if
the evaluator dies); a firing series that no longer comes back is sent once
more as resolved (`endsAt` = now) and forgotten. Pending series that go away
are forgotten silently.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import string
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pipelines.alerts.rules import Rule

RESEND_INTERVALS: Final = 4
MIN_VALIDITY: Final = dt.timedelta(minutes=3)

LabelSet = tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: dt.datetime
    ends_at: dt.datetime
    generator_url: str
    resolved: bool = False

    def to_alertmanager(self) -> dict[str, Any]:
        """One element of Alertmanager's API v2 `POST /api/v2/alerts` body."""
        return {
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": _iso(self.starts_at),
            "endsAt": _iso(self.ends_at),
            "generatorURL": self.generator_url,
        }


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(slots=True)
class _Series:
    active_since: dt.datetime
    values: dict[str, Any]
    firing_since: dt.datetime | None = None


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _display(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _iso(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def render(template: str, values: Mapping[str, Any]) -> str:
    """str.format over the row (format specs allowed); unknown fields stay as written."""
    try:
        return string.Formatter().vformat(template, (), _Blank({k: _display(v) for k, v in values.items()}))
    except (ValueError, TypeError, AttributeError, IndexError):
        return template


def split_row(columns: Sequence[str], row: Sequence[Any]) -> tuple[LabelSet, dict[str, Any]]:
    """String columns are the series' labels; every column is a value for the annotations."""
    values = dict(zip(columns, row, strict=True))
    labels = tuple(sorted((k, v) for k, v in values.items() if isinstance(v, str)))
    return labels, values


class RuleState:
    def __init__(self, rule: Rule, generator_url: str) -> None:
        self.rule = rule
        self.generator_url = generator_url
        self.series: dict[LabelSet, _Series] = {}

    def evaluate(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], now: dt.datetime
    ) -> list[Alert]:
        seen: set[LabelSet] = set()
        alerts: list[Alert] = []
        for row in rows:
            labels, values = split_row(columns, row)
            seen.add(labels)
            state = self.series.setdefault(labels, _Series(now, values))
            state.values = values
            if state.firing_since is None and (now - state.active_since).total_seconds() >= self.rule.for_s:
                state.firing_since = now
            if state.firing_since is not None:
                validity = max(MIN_VALIDITY, dt.timedelta(seconds=RESEND_INTERVALS * self.rule.interval_s))
                alerts.append(self._alert(labels, state, now + validity, resolved=False))
        for labels in [k for k in self.series if k not in seen]:
            state = self.series.pop(labels)
            if state.firing_since is not None:
                alerts.append(self._alert(labels, state, now, resolved=True))
        return alerts

    @property
    def firing(self) -> int:
        return sum(1 for s in self.series.values() if s.firing_since is not None)

    def _alert(self, labels: LabelSet, state: _Series, ends_at: dt.datetime, *, resolved: bool) -> Alert:
        rule = self.rule
        all_labels = {**rule.labels, **dict(labels), "alertname": rule.name, "severity": rule.severity}
        annotations = {k: render(v, state.values) for k, v in rule.annotations.items()}
        url = f"{self.generator_url}#{rule.name}"
        return Alert(all_labels, annotations, state.active_since, ends_at, url, resolved)
