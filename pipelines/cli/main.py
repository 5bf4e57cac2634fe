"""The `tykpulse` command line."""

from __future__ import annotations

import logging
from importlib.metadata import version

import click

from pipelines.cli.lazy import LazyGroup

# Each subcommand's module is imported only when that subcommand runs (or --help lists it), so
# `tykpulse --version` and every command start without importing chDB, pandas, Faust and the rest.
COMMANDS = {
    "run": "pipelines.cli.commands.run:command",
    "simulate": "pipelines.cli.commands.simulate:command",
    "proxy": "pipelines.cli.commands.proxy:command",
    "schema": "pipelines.cli.commands.schema:group",
    "demo": "pipelines.cli.commands.demo:command",
    "db": "pipelines.cli.commands.db:group",
    "alerts": "pipelines.cli.commands.alerts:group",
    "report": "pipelines.cli.commands.report:command",
    "keys": "pipelines.cli.commands.keys:group",
    "status": "pipelines.cli.commands.status:command",
    "replay": "pipelines.cli.commands.replay:command",
    "rebuild": "pipelines.cli.commands.rebuild:command",
    "bridge": "pipelines.cli.commands.bridge:group",
    "worker": "pipelines.cli.commands.worker:command",
}

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings=CONTEXT)
@click.option(
    "--log-level",
    envvar="TYKPULSE_LOG_LEVEL",
    show_envvar=True,
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Logging verbosity.",
)
@click.version_option(version("tykpulse"), prog_name="tykpulse")
def cli(log_level: str) -> None:
    """tykpulse: Tyk gateway events -> ZeroMQ firehose -> windowed rollups in ClickHouse.

    \b
    Quick start (one machine, embedded ClickHouse under ./data):
      tykpulse demo                 simulated fleet + worker, prints what landed
    \b
    The pipeline:
      tykpulse proxy                the forwarder gateways publish to and workers read from
      tykpulse simulate             a simulated Tyk fleet publishing on the firehose
      tykpulse run                  the worker: firehose -> WAL -> windows -> rollups -> ClickHouse
      tykpulse schema apply|show    create/update (or print) the tables and views
    \b
    From a real Tyk (docs/tyk.md):
      tykpulse bridge tyk           analytics lists + cluster notifications from Tyk's Redis
      tykpulse bridge tyk-webhook   gateway events from Tyk's webhook event handler
    \b
    Reading the rollups (docs/analysts.md):
      tykpulse db serve             share an embedded database over ClickHouse's HTTP interface
      tykpulse alerts check|run     alert rules over the rollups, sent to Alertmanager
      tykpulse report               a one-page HTML summary of a time range
    \b
    Operating it (docs/operations.md, docs/guarantees.md):
      tykpulse status               per-publisher health, the WAL and the last flush of a worker
      tykpulse keys generate NAME   a CURVE key pair for encrypted firehose sockets
      tykpulse replay               re-publish archived events (--from/--to) on a firehose
      tykpulse rebuild              recompute a time range's rollups from the archive
    \b
    Scale-out (Kafka + Faust workers, docs/scaling.md):
      tykpulse bridge kafka         the firehose -> a Kafka topic
      tykpulse worker               a Faust worker: Kafka -> windows -> rollups -> ClickHouse

    Every option can also be set with the environment variable shown in its help.
    """
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


if __name__ == "__main__":
    cli()
