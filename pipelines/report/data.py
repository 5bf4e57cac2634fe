"""What a report shows, fetched once through the analyst API."""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

from pipelines import analyst


@dataclasses.dataclass(frozen=True)
class ReportData:
    scope: analyst.Scope
    traffic: pd.DataFrame
    rates: pd.DataFrame
    top_limited: pd.DataFrame
    storms: pd.DataFrame
    tokens: pd.DataFrame
    changes: pd.DataFrame
    impact: pd.DataFrame
    health: pd.DataFrame

    def headline(self) -> dict[str, str]:
        requests = int(self.traffic["requests"].sum()) if not self.traffic.empty else 0
        per = max(requests, 1)

        def total(frame: pd.DataFrame, column: str) -> int:
            return int(frame[column].sum()) if not frame.empty else 0

        return {
            "Requests": f"{requests:,}",
            "Rate limited (429)": f"{total(self.traffic, 'status_429') / per:.2%}",
            "Quota refused (403)": f"{total(self.rates, 'quota_exceeded') / per:.2%}",
            "Server errors (5xx)": f"{total(self.traffic, 'status_5xx') / per:.2%}",
            "Rate-limit storms": str(len(self.storms)),
            "Tokens created": f"{total(self.tokens, 'created'):,}",
            "Tokens deleted": f"{total(self.tokens, 'deleted'):,}",
            "Config changes": f"{total(self.changes, 'changes'):,}",
            "Messages lost": f"{total(self.health, 'lost_messages'):,}",
        }


def fetch(client: Any, scope: analyst.Scope) -> ReportData:
    return ReportData(
        scope=scope,
        traffic=analyst.traffic(client, scope),
        rates=analyst.status_rates(client, scope),
        top_limited=analyst.rate_limited_apis(client, scope, limit=10),
        storms=analyst.storms(client, scope),
        tokens=analyst.token_churn(client, scope),
        changes=analyst.config_changes(client, scope),
        impact=analyst.change_impact(client, scope),
        health=analyst.ingest_health(client, scope),
    )
