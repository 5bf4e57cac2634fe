"""tykpulse alerts: evaluate alert rules over the rollups; send them to Alertmanager."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from pipelines.alerts.alertmanager import AlertmanagerClient
from pipelines.alerts.evaluator import Evaluator, check_rule
from pipelines.alerts.rules import Rule, RuleSet, load_rules, rules_location
from pipelines.alerts.settings import AlertSettings
from pipelines.cli.observe import NO_FLUSHES, serving
from pipelines.cli.options import clickhouse_help, pass_settings, settings_options
from pipelines.cli.signals import stop_on_signals
from pipelines.observe.service import Progress, ServiceWatch
from pipelines.settings import ObservabilitySettings
from sinks.clickhouse.client import connect
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.errors import SinkError
from sinks.redact import redact

log = logging.getLogger(__name__)
CLICKHOUSE_FLAGS = {"clickhouse_dsn": "--clickhouse"}
READ_HELP = clickhouse_help("the alert rules query (they only read)")


@click.group("alerts")
def group() -> None:
    """Alert rules over the rollup views, sent in Alertmanager's API v2 format.

    Without --rules, the rules shipped with tykpulse (alerts/ in the repository).
    """


def _open(clickhouse: ClickHouseSettings) -> Any:
    try:
        return connect(clickhouse)
    except SinkError as exc:
        raise click.ClickException(str(exc)) from exc


def _relative(source: str, rules: Path) -> str:
    base = rules if rules.is_dir() else rules.parent
    try:
        return str(Path(source).relative_to(base))
    except ValueError:
        return source


def _longest_still_s(rules: Sequence[Rule], clickhouse: ClickHouseSettings, settings: AlertSettings) -> float:
    """How long the evaluation counts may stand still before `alerts run` is stuck. Each rule's query
    moves them, so between two moves there is at most the wait for the next rule due (the shortest
    interval), one query and the POST, each as long as allowed; twice that, for a busy server."""
    shortest = min(rule.interval_s for rule in rules)
    query_s = clickhouse.clickhouse_connect_timeout_s + clickhouse.clickhouse_send_receive_timeout_s
    return 2 * (shortest + query_s + settings.webhook_timeout_s)


def _generator_url(settings: AlertSettings) -> str:
    return settings.generator_url or rules_location(settings.rules).resolve().as_uri()


@group.command("check")
@settings_options(AlertSettings, exclude=("webhook", "webhook_timeout_s", "generator_url"))
@settings_options(ClickHouseSettings, flags=CLICKHOUSE_FLAGS, help=READ_HELP)
@pass_settings(AlertSettings, ClickHouseSettings)
def check(settings: AlertSettings, clickhouse: ClickHouseSettings) -> None:
    """Validate every rule file and run each rule's SQL once; exit 1 if any is invalid or broken."""
    location = rules_location(settings.rules)
    ruleset = load_rules(location)
    table = Table(title=f"Alert rules in {location}", title_justify="left")
    for column in ("rule", "source", "status", "detail"):
        table.add_column(column)
    for problem in ruleset.problems:
        table.add_row("", _relative(problem.source, location), "[red]INVALID[/red]", problem.message)
    broken = len(ruleset.problems)
    if ruleset.rules:
        client = _open(clickhouse)
        try:
            for rule in ruleset.rules:
                result = check_rule(client, rule)
                status = "[green]OK[/green]" if result.ok else "[red]ERROR[/red]"
                detail = (
                    f"{result.series} series returned, {result.seconds:.2f}s" if result.ok else result.error
                )
                table.add_row(rule.name, _relative(rule.source, location), status, detail)
                broken += not result.ok
        finally:
            client.close()
    Console(width=200).print(table)
    if broken:
        raise SystemExit(1)


def _valid(ruleset: RuleSet) -> None:
    for problem in ruleset.problems:
        click.echo(f"invalid rule {problem.source}: {problem.message}", err=True)
    if ruleset.problems or not ruleset.rules:
        msg = "fix the rules first (tykpulse alerts check)" if ruleset.problems else "no rules to run"
        raise click.ClickException(msg)


@group.command("run")
@settings_options(AlertSettings)
@settings_options(ClickHouseSettings, flags=CLICKHOUSE_FLAGS, help=READ_HELP)
@click.option(
    "--once",
    envvar="TYKPULSE_ALERTS_ONCE",
    show_envvar=True,
    is_flag=True,
    help="Evaluate every rule once, send, and exit.",
)
@settings_options(ObservabilitySettings, exclude=NO_FLUSHES)
@pass_settings(AlertSettings, ClickHouseSettings, ObservabilitySettings)
def run(
    settings: AlertSettings, clickhouse: ClickHouseSettings, observe: ObservabilitySettings, once: bool
) -> None:
    """Evaluate the rules on their intervals and POST firing and resolved alerts to --webhook.

    Alerts use Alertmanager's API v2 (POST /api/v2/alerts: labels, annotations,
    startsAt, endsAt, generatorURL), so a real Alertmanager or any compatible
    receiver takes them. A series fires once it has been returned for the
    rule's `for`; it resolves when the rule stops returning it. Runs until
    SIGINT/SIGTERM.
    """
    ruleset = load_rules(rules_location(settings.rules))
    _valid(ruleset)
    try:
        sender = (
            AlertmanagerClient(settings.webhook, settings.webhook_timeout_s) if settings.webhook else None
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if sender is None:
        log.warning("no --webhook: alerts are only logged")
    client = _open(clickhouse)
    evaluator = Evaluator(client, ruleset.rules, sender, generator_url=_generator_url(settings))
    log.info("evaluating rules=%d webhook=%s", len(ruleset.rules), redact(sender.url) if sender else "-")
    try:
        if once:
            for alert in evaluator.evaluate():
                click.echo(f"{'RESOLVED' if alert.resolved else 'FIRING'} {alert.labels}")
        else:
            stop = stop_on_signals()
            counts = evaluator.evaluations
            health = Progress(
                "rule evaluations",
                lambda: counts["ok"],
                lambda: counts["failed"],
                changes_within_s=_longest_still_s(ruleset.rules, clickhouse, settings),
            )
            with serving(observe, ServiceWatch("alerts run", evaluator.readings, health), "alerts run"):
                evaluator.run(stop)
    finally:
        client.close()
    if evaluator.errors:
        raise SystemExit(1)
