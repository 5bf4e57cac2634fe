"""One definition of a configuration change, and every reader uses it.

The output contract classifies Tyk's notification commands (NOTICE_KINDS,
is_config in the config_changes views). Dashboards, alert rules and the
analyst queries must filter or group by that classification, never by a
hand-kept list of commands: the lists drifted (the dashboard dropped only
key-space updates, the alerts missed GroupReload).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sinks.clickhouse.contract import CONFIG_CHANGES, CONFIG_COMMANDS, NOTICE_KINDS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
READS_NOTICES = re.compile(r"config_changes(_1m|_1h|\")")
# every command Tyk publishes (fact sheet §4.3); none may be named in a reader's SQL
TYK_COMMANDS = (  # noqa: SIM905 (one long list reads better as words)
    "ApiUpdated ApiRemoved ApiAdded PolicyChanged GroupReload KeySpaceUpdateNotification "
    "NoticeGatewayDRLNotification NoticeConfigUpdated NoticeDashboardConfigRequest "
    "NoticeGatewayConfigResponse NoticeDashboardZeroConf OAuthPurgeLapsedTokens DeleteAPICache "
    "InvalidateJWKSCacheForAPI ClientIdPChanged UserKeyReset"
).split()


def dashboard_sql() -> Iterator[tuple[str, str]]:
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                yield f"{path.stem}: {panel['title']}", target["rawSql"]
        for annotation in board["annotations"]["list"]:
            yield f"{path.stem}: annotation {annotation['name']}", annotation["target"]["rawSql"]


def alert_sql() -> Iterator[tuple[str, str]]:
    for path in sorted((ROOT / "alerts").glob("*.yaml")):
        yield f"alert {path.stem}", yaml.safe_load(path.read_text())["sql"]


def analyst_sql() -> Iterator[tuple[str, str]]:
    source = (ROOT / "pipelines" / "analyst" / "queries.py").read_text()
    yield "pipelines/analyst/queries.py", source


READERS = [*dashboard_sql(), *alert_sql(), *analyst_sql()]


def test_configuration_is_what_tyk_reloads_or_rewrites_config_for() -> None:
    # fact sheet §4.3: these make every gateway reload APIs and policies, or rewrite tyk.conf
    assert set(CONFIG_COMMANDS) == {
        "ApiUpdated",
        "ApiAdded",
        "ApiRemoved",
        "PolicyChanged",
        "GroupReload",
        "NoticeConfigUpdated",
    }
    assert NOTICE_KINDS["KeySpaceUpdateNotification"] == "key_space"
    assert NOTICE_KINDS["NoticeGatewayDRLNotification"] == "rate_limiter"


def test_the_views_publish_the_classification() -> None:
    assert {o.name for o in CONFIG_CHANGES.outputs} >= {"kind", "is_config"}


@pytest.mark.parametrize(("name", "sql"), READERS, ids=[n for n, _ in READERS])
def test_readers_of_config_changes_use_the_classification(name: str, sql: str) -> None:
    if not READS_NOTICES.search(sql):
        return
    assert re.search(r"\bis_config\b|\bkind\b", sql), f"{name} reads config_changes without is_config/kind"
    named = [c for c in TYK_COMMANDS if f"'{c}'" in sql]
    assert not named, f"{name} lists commands {named} instead of using is_config/kind"


def test_the_annotation_and_the_alerts_filter_on_is_config() -> None:
    sql = dict(READERS)
    assert "is_config = 1" in sql["config_changes: annotation Config changes"]
    assert "is_config = 1" in sql["alert config_flapping"]
    assert "is_config = 1" in sql["alert error_ratio_after_change"]
