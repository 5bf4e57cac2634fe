"""Pending, firing, resolved: what each evaluation of a rule means for its alerts.

Pure: an evaluation gives the rows the rule's SQL returned and the time; the
result is the alerts to send now. As in Prometheus, a series is pending until
it has fired for `for` seconds; firing alerts are re-sent at every evaluation
with `endsAt` a few intervals ahead (so Alertmanager resolves them by itself if
the evaluator dies); a firing series that no longer comes back is sent once
more as resolved (`endsAt` = now) and forgotten. Pending series that go away
are forgotten silently.

Label values come from the data, and any firehose publisher can choose its node
name: a value is made safe (control, format and separator characters replaced
by U+FFFD, at most MAX_LABEL_CHARS characters) and a rule keeps at most
MAX_SERIES_PER_RULE series per evaluation (those it already tracks first, then in
the SQL's order). The rest are summarised in one series of their own, labelled
`overflow="true"`, saying how many were left out; `omitted` counts them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import string
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Final

from pipelines.alerts.rules import Rule

RESEND_INTERVALS: Final = 4
MIN_VALIDITY: Final = dt.timedelta(minutes=3)
MAX_SERIES_PER_RULE: Final = 100
MAX_LABEL_CHARS: Final = 128
MAX_ANNOTATION_CHARS: Final = 1024
OVERFLOW_LABEL: Final = "overflow"
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})

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


def safe_text(value: str, limit: int = MAX_LABEL_CHARS) -> str:
    """`value` without control, format or separator characters (each becomes U+FFFD), at most `limit` long.

    What a receiver shows (a chat message, an e-mail subject, a terminal) cannot then be given
    new lines, escape sequences or reordered text by whoever chose the value.
    """
    text = "".join("\ufffd" if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def split_row(columns: Sequence[str], row: Sequence[Any]) -> tuple[LabelSet, dict[str, Any]]:
    """String columns are the series' labels (made safe); every column is a value for the annotations."""
    values = {k: safe_text(v) if isinstance(v, str) else v for k, v in zip(columns, row, strict=True)}
    labels = tuple(sorted((k, v) for k, v in values.items() if isinstance(v, str)))
    return labels, values


class RuleState:
    def __init__(self, rule: Rule, generator_url: str, max_series: int = MAX_SERIES_PER_RULE) -> None:
        self.rule = rule
        self.generator_url = generator_url
        self.max_series = max_series
        self.series: dict[LabelSet, _Series] = {}
        self.omitted = 0  # series left out over the cap, summed over evaluations
        self.last_omitted = 0  # ... in the latest evaluation

    def evaluate(
        self, columns: Sequence[str], rows: Sequence[Sequence[Any]], now: dt.datetime
    ) -> list[Alert]:
        kept = self._capped([split_row(columns, row) for row in rows])
        seen: set[LabelSet] = set()
        alerts: list[Alert] = []
        for labels, values in kept:
            seen.add(labels)
            state = self.series.setdefault(labels, _Series(now, values))
            state.values = values
            if state.firing_since is None and (now - state.active_since).total_seconds() >= self.rule.for_s:
                state.firing_since = now
            if state.firing_since is not None:
                validity = max(MIN_VALIDITY, dt.timedelta(seconds=RESEND_INTERVALS * self.rule.interval_s))
                alerts.append(self._alert(labels, state, now, now + validity, resolved=False))
        for labels in [k for k in self.series if k not in seen]:
            state = self.series.pop(labels)
            if state.firing_since is not None:
                alerts.append(self._alert(labels, state, now, now, resolved=True))
        return alerts

    def _capped(self, series: list[tuple[LabelSet, dict[str, Any]]]) -> list[tuple[LabelSet, dict[str, Any]]]:
        """At most max_series distinct series (tracked ones first), then the overflow series if any."""
        unique = dict(series)  # rows whose labels became equal once made safe are one series
        order = sorted(unique, key=lambda labels: labels not in self.series)  # stable: SQL order kept
        kept = order[: self.max_series]
        self.last_omitted = len(order) - len(kept)
        self.omitted += self.last_omitted
        out = [(labels, unique[labels]) for labels in kept]
        if self.last_omitted:
            out.append((((OVERFLOW_LABEL, "true"),), {"omitted": self.last_omitted, "cap": self.max_series}))
        return out

    @property
    def firing(self) -> int:
        return sum(1 for s in self.series.values() if s.firing_since is not None)

    def _alert(
        self, labels: LabelSet, state: _Series, now: dt.datetime, ends_at: dt.datetime, *, resolved: bool
    ) -> Alert:
        rule = self.rule
        all_labels = {**rule.labels, **dict(labels), "alertname": rule.name, "severity": rule.severity}
        if dict(labels).get(OVERFLOW_LABEL) == "true" and len(labels) == 1:
            annotations = _overflow_annotations(rule, state.values)
        else:
            annotations = {
                k: safe_text(render(v, state.values), MAX_ANNOTATION_CHARS)
                for k, v in rule.annotations.items()
            }
        url = f"{self.generator_url}#{rule.name}"
        # a clock stepped back since the series began would make it end before it starts, and
        # Alertmanager answers 400 to a POST holding such an alert (then resent at every evaluation)
        starts_at = min(state.active_since, now)
        return Alert(all_labels, annotations, starts_at, ends_at, url, resolved)


def _overflow_annotations(rule: Rule, values: Mapping[str, Any]) -> dict[str, str]:
    omitted, cap = values["omitted"], values["cap"]
    return {
        "summary": f"{omitted} more {rule.name} series not sent",
        "description": f"Rule {rule.name} returned more than {cap} series in one evaluation; the first {cap} "
        f"were sent and {omitted} more were left out (counted in tykpulse_alert_series_omitted). Many series "
        "at once can also mean a publisher is inventing names: check the rule's query by hand.",
        **({"dashboard": rule.annotations["dashboard"]} if "dashboard" in rule.annotations else {}),
    }
