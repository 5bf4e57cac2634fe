"""Expand a Grafana panel query the way Grafana and the ClickHouse datasource plugin do.

The plugin's frontend first replaces `$__conditionalAll(condition, $var)` by
`1=1` when `var` is at All and by the condition otherwise (its arguments split
at top-level commas, parentheses nested). Grafana then interpolates dashboard
variables (`$org`, `${org}`, `${org:singlequote}`; a multi-value variable with
All selected expands to every value; `singlequote` escapes `'` as `\'` and
nothing else, as Grafana's formatter does), then the plugin's backend
(grafana-clickhouse-datasource, pkg/macros) replaces its macros:

    $__timeFilter(c)      c >= toDateTime(FROM) AND c <= toDateTime(TO)
    $__timeFilter_ms(c)   c >= fromUnixTimestamp64Milli(FROM_MS) AND c <= fromUnixTimestamp64Milli(TO_MS)
    $__fromTime/$__toTime toDateTime(FROM) / toDateTime(TO)
    $__fromTime_ms/_ms    fromUnixTimestamp64Milli(...)
    $__dateFilter(c)      c >= toDate('YYYY-MM-DD') AND c <= toDate('YYYY-MM-DD')
    $__timeInterval(c)    toStartOfInterval(toDateTime(c), INTERVAL N second)
    $__interval_s         N (the panel interval in seconds, at least 1)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Collection, Mapping, Sequence

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(?!__)(\w+)")
_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")


@dataclasses.dataclass(frozen=True)
class TimeRange:
    start: dt.datetime
    end: dt.datetime
    interval_s: int = 60

    @property
    def from_s(self) -> int:
        return int(self.start.timestamp())

    @property
    def to_s(self) -> int:
        return int(self.end.timestamp())


def _format(values: Sequence[str], fmt: str | None) -> str:
    if fmt in ("singlequote", "sqlstring"):
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "csv" or fmt is None:
        return ",".join(values)
    msg = f"variable format {fmt!r} not handled by this expander"
    raise ValueError(msg)


_CONDITIONAL_ALL = "$__conditionalAll("


def _macro_arguments(sql: str, open_paren: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments of the call opening at `open_paren`, and its end."""
    depth, start, arguments = 0, open_paren + 1, []
    for index in range(open_paren, len(sql)):
        char = sql[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                arguments.append(sql[start:index])
                return arguments, index + 1
        elif char == "," and depth == 1:
            arguments.append(sql[start:index])
            start = index + 1
    msg = f"unbalanced $__conditionalAll in {sql!r}"
    raise ValueError(msg)


def apply_conditional_all(sql: str, all_selected: Collection[str]) -> str:
    """`$__conditionalAll(condition, $var)`: `1=1` when `var` is at All, else the condition."""
    while (at := sql.rfind(_CONDITIONAL_ALL)) != -1:
        arguments, end = _macro_arguments(sql, at + len(_CONDITIONAL_ALL) - 1)
        if len(arguments) != 2:
            msg = f"$__conditionalAll takes 2 arguments: {sql[at:end]!r}"
            raise ValueError(msg)
        condition, variable = arguments
        name = variable.strip().removeprefix("$").strip("{}")
        sql = sql[:at] + ("1=1" if name in all_selected else condition) + sql[end:]
    return sql


def interpolate_variables(sql: str, variables: Mapping[str, Sequence[str]]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        if name not in variables:
            return match.group(0)
        return _format(variables[name], match.group(2))

    return _VARIABLE.sub(replace, sql)


def _macros(time: TimeRange) -> dict[str, Callable[[list[str]], str]]:
    def dt_(seconds: int) -> str:
        return f"toDateTime({seconds})"

    def ms(seconds: int) -> str:
        return f"fromUnixTimestamp64Milli({seconds * 1000})"

    def date(value: dt.datetime) -> str:
        return f"toDate('{value:%Y-%m-%d}')"

    return {
        "fromTime": lambda a: dt_(time.from_s),
        "toTime": lambda a: dt_(time.to_s),
        "fromTime_ms": lambda a: ms(time.from_s),
        "toTime_ms": lambda a: ms(time.to_s),
        "timeFilter": lambda a: f"{a[0]} >= {dt_(time.from_s)} AND {a[0]} <= {dt_(time.to_s)}",
        "timeFilter_ms": lambda a: f"{a[0]} >= {ms(time.from_s)} AND {a[0]} <= {ms(time.to_s)}",
        "dateFilter": lambda a: f"{a[0]} >= {date(time.start)} AND {a[0]} <= {date(time.end)}",
        "timeInterval": lambda a: (
            f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {max(time.interval_s, 1)} second)"
        ),
        "interval_s": lambda a: str(max(time.interval_s, 1)),
    }


def expand_macros(sql: str, time: TimeRange) -> str:
    macros = _macros(time)

    def replace(match: re.Match[str]) -> str:
        name, args = match.group(1), match.group(2)
        if name not in macros:
            msg = f"unknown macro $__{name}"
            raise ValueError(msg)
        return macros[name]([a.strip() for a in args.split(",")] if args else [])

    return _MACRO.sub(replace, sql)


def expand(
    sql: str,
    variables: Mapping[str, Sequence[str]],
    time: TimeRange,
    all_selected: Collection[str] = (),
) -> str:
    """The query the engine receives; `all_selected` names the variables at All."""
    return expand_macros(interpolate_variables(apply_conditional_all(sql, all_selected), variables), time)
