"""What part of the rollups a question is about: time range, orgs, APIs, grain.

A Scope renders to a WHERE clause with server-side query parameters, so
values never become SQL text. Times are UTC; `start` is inclusive, `end`
exclusive, both compared with window starts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Final, Literal

from sinks.clickhouse.contract import DATABASE

Grain = Literal["1m", "1h"]
_IDENTIFIER: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp())


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    org_id: str | Sequence[str] | None = None
    api_id: str | Sequence[str] | None = None
    grain: Grain = "1m"
    database: str = DATABASE

    def __post_init__(self) -> None:
        if self.grain not in ("1m", "1h"):
            msg = f"grain must be '1m' or '1h', got {self.grain!r}"
            raise ValueError(msg)
        if not _IDENTIFIER.match(self.database):
            msg = f"not a database name: {self.database!r}"
            raise ValueError(msg)

    @classmethod
    def last(
        cls, *, minutes: float = 0, hours: float = 0, now: dt.datetime | None = None, **kw: Any
    ) -> Scope:
        """The last `minutes`/`hours` up to `now` (default: the current time)."""
        end = now or dt.datetime.now(dt.UTC)
        return cls(start=end - dt.timedelta(minutes=minutes, hours=hours), end=end, **kw)

    def with_grain(self, grain: Grain) -> Scope:
        return dataclasses.replace(self, grain=grain)

    def view(self, rollup: str) -> str:
        return f"{self.database}.{rollup}_{self.grain}"

    def state(self, rollup: str) -> str:
        """The rollup's state table: merge its distinct-key states across keys (uniqCombined64Merge)."""
        return f"{self.database}.{rollup}_{self.grain}_state"

    def where(self, *, org: bool = True, api: bool = True) -> tuple[str, dict[str, Any]]:
        """' WHERE ...' (or '') and its parameters; `org`/`api`: whether the view has those columns."""
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.start is not None:
            clauses.append("window_start >= toDateTime({start:Int64}, 'UTC')")
            params["start"] = _epoch(self.start)
        if self.end is not None:
            clauses.append("window_start < toDateTime({end:Int64}, 'UTC')")
            params["end"] = _epoch(self.end)
        orgs, apis = _as_list(self.org_id), _as_list(self.api_id)
        if org and orgs is not None:
            clauses.append("org_id IN {org_ids:Array(String)}")
            params["org_ids"] = orgs
        if api and apis is not None:
            clauses.append("api_id IN {api_ids:Array(String)}")
            params["api_ids"] = apis
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
