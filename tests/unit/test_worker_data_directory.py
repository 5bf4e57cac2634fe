"""The Faust worker's data directory (its state, dead letters and key file) is held to `run`'s rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import ConfigurationError
from pipelines.runners.faust_app import create_app
from pipelines.runners.kafka_writer import KAFKA_DEAD_LETTER_FILE
from pipelines.settings import FaustWorkerSettings, FirehoseSettings, KafkaSettings, WorkerSettings
from sinks.clickhouse.settings import ClickHouseSettings

pytestmark = pytest.mark.unit


def _app(directory: Path) -> object:
    # the key directory of a chdb DSN is its database's parent (pipelines.wal.build.key_directory)
    clickhouse = ClickHouseSettings(clickhouse_dsn=f"chdb://{directory / 'clickhouse'}")
    return create_app(
        KafkaSettings(), FaustWorkerSettings(), WorkerSettings(), clickhouse, FirehoseSettings()
    )


def test_a_data_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    # Found by attack: the worker appended its dead letters to `data/kafka-dead-letter.jsonl` in a
    # directory anyone could write, so a link planted at that name sent them into another file.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (shared / KAFKA_DEAD_LETTER_FILE).symlink_to(victim)
    with pytest.raises(ConfigurationError, match=r"worker data directory: .* may be written by other users"):
        _app(shared)
    assert victim.read_text() == "mine\n"


def test_a_data_directory_of_its_own_is_made_owner_only(tmp_path: Path) -> None:
    _app(tmp_path / "data")
    assert (tmp_path / "data" / "faust").stat().st_mode & 0o777 == 0o700
