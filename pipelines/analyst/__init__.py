"""Analyst access to the rollups: a client, a scope, and DataFrames for the common questions.

    from pipelines import analyst

    client = analyst.connect()                       # TYKPULSE_CLICKHOUSE_DSN, else a running
    scope = analyst.Scope.last(hours=1)              # worker's endpoint, else ./data/clickhouse
    analyst.status_rates(client, scope)              # 429 and 403 (quota) rates over time
    analyst.storms(client, scope)                    # rate-limit storms and their onset
    analyst.change_impact(client, scope)             # errors and latency before vs after changes

Every SQL statement lives in pipelines/analyst/queries.py; notebooks,
reports and tests call these functions. `plain` makes data safe in chart labels.
"""

from pipelines.analyst.analysis import change_impact, find_spikes, find_storms, storms
from pipelines.analyst.connection import connect, running_endpoint, settings_for
from pipelines.analyst.labels import plain
from pipelines.analyst.queries import (
    change_frequency,
    config_changes,
    data_range,
    ingest_health,
    rate_limit_hits,
    rate_limited_apis,
    rejections,
    status_rates,
    token_churn,
    traffic,
)
from pipelines.analyst.scope import Scope

__all__ = [
    "Scope",
    "change_frequency",
    "change_impact",
    "config_changes",
    "connect",
    "data_range",
    "find_spikes",
    "find_storms",
    "ingest_health",
    "plain",
    "rate_limit_hits",
    "rate_limited_apis",
    "rejections",
    "running_endpoint",
    "settings_for",
    "status_rates",
    "storms",
    "token_churn",
    "traffic",
]
