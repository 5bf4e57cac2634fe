"""Runs rules against ClickHouse on their intervals and sends what fires.

A rule whose SQL fails is reported (logged, counted in `errors`) and its
alerts keep their state until it runs again; the other rules carry on.
`check()` runs every rule once and reports per rule instead of raising.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError

from pipelines.alerts.alertmanager import AlertmanagerClient
from pipelines.alerts.rules import Rule
from pipelines.alerts.state import Alert, RuleState

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RuleCheck:
    rule: str
    source: str
    ok: bool
    series: int = 0
    seconds: float = 0.0
    error: str = ""


def run_query(client: Any, sql: str) -> tuple[list[str], list[Sequence[Any]]]:
    result = client.query(sql)
    return list(result.column_names), list(result.result_rows)


_ERROR_CHARS = 160


def _error_text(exc: Exception) -> str:
    """ClickHouse's own message, without the driver's wrapping, the version and the URL."""
    text = str(exc).split(" (for url ")[0]
    text = text[text.find("Code:") :] if "Code:" in text else text
    text = text.split(" (version ")[0].strip()
    if len(text) > _ERROR_CHARS:
        name = text[text.rfind(" (") :] if text.endswith(")") else ""
        text = text[: _ERROR_CHARS - len(name)].rstrip() + " ..." + name
    return text


def check_rule(client: Any, rule: Rule) -> RuleCheck:
    started = time.perf_counter()
    try:
        _, rows = run_query(client, rule.sql)
    except (ClickHouseError, OSError) as exc:
        return RuleCheck(rule.name, rule.source, False, error=_error_text(exc))
    return RuleCheck(rule.name, rule.source, True, len(rows), time.perf_counter() - started)


class Evaluator:
    def __init__(
        self,
        client: Any,
        rules: Sequence[Rule],
        sender: AlertmanagerClient | None,
        *,
        generator_url: str,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.client = client
        self.sender = sender
        self.clock = clock
        self.states = {rule.name: RuleState(rule, generator_url) for rule in rules}
        self.errors: dict[str, str] = {}
        self.evaluations = {"ok": 0, "failed": 0}
        self._due = dict.fromkeys(self.states, 0.0)

    def evaluate(
        self, rule_names: Sequence[str] | None = None, stop: threading.Event | None = None
    ) -> list[Alert]:
        """Run the given rules (default: all) once; returns and sends the alerts they produce.

        With `stop`, the rules not yet run when it is set are left for later: a stop request
        waits for one query, not for a whole round (rules on a busy server take seconds each).
        """
        alerts: list[Alert] = []
        for name in rule_names or list(self.states):
            if stop is not None and stop.is_set():
                break
            alerts.extend(self._evaluate(self.states[name]))
        if self.sender is not None:
            self.sender.send(alerts)
        return alerts

    def _evaluate(self, state: RuleState) -> list[Alert]:
        rule = state.rule
        try:
            columns, rows = run_query(self.client, rule.sql)
        except (ClickHouseError, OSError) as exc:
            self.evaluations["failed"] += 1
            self.errors[rule.name] = _error_text(exc)
            log.error(
                "alert rule failed rule=%s source=%s error=%s", rule.name, rule.source, self.errors[rule.name]
            )
            return []
        self.evaluations["ok"] += 1
        self.errors.pop(rule.name, None)
        alerts = state.evaluate(columns, rows, self.clock())
        if state.last_omitted:
            log.warning(
                "alert series over the cap rule=%s series=%d cap=%d omitted=%d",
                rule.name, len(rows), state.max_series, state.last_omitted,
            )  # fmt: skip
        log.debug("alert rule evaluated rule=%s rows=%d firing=%d", rule.name, len(rows), state.firing)
        return alerts

    def readings(self) -> dict[str, float | dict[str, float]]:
        """The counters `alerts run` exports (pipelines.observe.metrics.ALERTS)."""
        return {
            "evaluations": {k: float(v) for k, v in self.evaluations.items()},
            "firing": float(sum(state.firing for state in self.states.values())),
            "series_omitted": float(sum(state.omitted for state in self.states.values())),
            "delivered": float(self.sender.sent if self.sender else 0),
            "delivery_failures": float(self.sender.failures if self.sender else 0),
        }

    def run(self, stop: threading.Event) -> None:
        """Evaluate each rule on its interval until `stop` is set."""
        while not stop.is_set():
            now = time.monotonic()
            due = [name for name, at in self._due.items() if at <= now]
            if due:
                self.evaluate(due, stop)
                for name in due:
                    self._due[name] = now + self.states[name].rule.interval_s
            stop.wait(max(0.0, min(self._due.values()) - time.monotonic()))
