"""ClickHouse's HTTP interface over the embedded engine this process owns.

Embedded chDB locks its directory to one process. The process that owns it
(`tykpulse run`, or `tykpulse db serve`) serves it over HTTP so that
notebooks, dashboards, alert rules and other writers reach it with an
ordinary `http://` DSN while it runs.
"""

from sinks.clickhouse.serve.errors import ServeError
from sinks.clickhouse.serve.handles import Role
from sinks.clickhouse.serve.server import ClickHouseHttpServer
from sinks.clickhouse.serve.settings import ServeSettings

__all__ = ["ClickHouseHttpServer", "Role", "ServeError", "ServeSettings"]
