"""The demo's own embedded database is held to the data directories' rule, links included."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cli.commands.demo import demo_settings
from sinks.clickhouse.client import connect
from sinks.errors import SinkRejectedError

pytestmark = pytest.mark.unit


def test_a_link_planted_at_the_demo_s_path_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by attack: in a checkout whose data/ others may write, nobody's link data/demo -> a
    # directory of the user's was resolved before the check, and `tykpulse demo` made that
    # directory 0700 and wrote its database into it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    checkout = tmp_path / "checkout"
    (checkout / "data").mkdir(parents=True)
    (checkout / "data").chmod(0o777)
    (checkout / "data" / "demo").symlink_to(elsewhere)
    monkeypatch.chdir(checkout)
    with pytest.raises(SinkRejectedError, match="may be written by other users"):
        connect(demo_settings(None))
    assert list(elsewhere.iterdir()) == []
    assert elsewhere.stat().st_mode & 0o777 == 0o755
