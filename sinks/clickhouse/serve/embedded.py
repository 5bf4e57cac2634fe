"""Serve a worker's own embedded database while it writes (`tykpulse run --serve`)."""

from __future__ import annotations

import logging

from sinks.clickhouse.client import parse_dsn
from sinks.clickhouse.serve.server import ClickHouseHttpServer
from sinks.clickhouse.serve.settings import ServeSettings
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.errors import SinkError

log = logging.getLogger(__name__)


def serve_embedded(clickhouse: ClickHouseSettings, serve: ServeSettings) -> ClickHouseHttpServer | None:
    """Start the endpoint for an embedded DSN; None when off, not embedded, or it cannot start.

    A worker keeps ingesting when its endpoint cannot start (say the port is
    taken): the reason is logged as an error and nothing else changes.
    """
    target = parse_dsn(clickhouse.clickhouse_dsn)
    if not serve.enabled or target.embedded_path is None:
        return None
    try:
        return ClickHouseHttpServer(target.embedded_path, serve).start()
    except SinkError as exc:
        log.error("not serving the embedded database over HTTP: %s", exc)
        return None
