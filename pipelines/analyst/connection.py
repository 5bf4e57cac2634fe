"""Open the rollups for analysis: a clickhouse-connect client from TYKPULSE_CLICKHOUSE_DSN.

Without a DSN configured, a running worker's endpoint (`tykpulse run` serves
its embedded database on 127.0.0.1:8123) is used when one answers, else the
embedded database `tykpulse run` writes by default (./data/clickhouse), which can
only be opened while no worker holds it. (`make run`, the demo, keeps its own
in ./data/demo.)
"""

from __future__ import annotations

import logging
import urllib.request
from typing import Any, Final

from sinks.clickhouse.client import connect as open_client
from sinks.clickhouse.serve.settings import ServeSettings
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.errors import SinkUnavailableError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S: Final = 0.5


def running_endpoint(settings: ServeSettings | None = None) -> str | None:
    """The URL of a tykpulse endpoint answering on the configured serve address, if any."""
    settings = settings or ServeSettings()
    if not settings.enabled:
        return None
    try:
        host, port = settings.address()
    except ValueError:
        return None
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=PROBE_TIMEOUT_S) as response:  # noqa: S310 - http only
            if response.headers.get("X-ClickHouse-Server-Display-Name") == "tykpulse":
                return url
    except OSError:
        return None
    return None


def settings_for(dsn: str | None = None) -> ClickHouseSettings:
    """ClickHouseSettings for `dsn`, else TYKPULSE_* environment, else a running worker's endpoint."""
    if dsn is not None:
        return ClickHouseSettings(clickhouse_dsn=dsn)
    settings = ClickHouseSettings()
    if "clickhouse_dsn" not in settings.model_fields_set:
        endpoint = running_endpoint()
        if endpoint is not None:
            log.info("using the running worker's endpoint %s", endpoint)
            return ClickHouseSettings(clickhouse_dsn=endpoint)
    return settings


def connect(dsn: str | None = None) -> Any:
    """A clickhouse-connect client on the rollups (raises SinkUnavailableError with a hint)."""
    settings = settings_for(dsn)
    try:
        return open_client(settings)
    except SinkUnavailableError as exc:
        if "lock" not in str(exc).lower():
            raise
        msg = (
            f"{exc}\nThe embedded database is held by a running worker. Read it through the worker's "
            "endpoint instead: TYKPULSE_CLICKHOUSE_DSN=http://127.0.0.1:8123 (see docs/serve.md)."
        )
        raise SinkUnavailableError(msg) from exc
