"""The CLI's options come from the typed settings: a Literal setting offers exactly its choices."""

from __future__ import annotations

from click.testing import CliRunner

from pipelines.cli.main import cli


def test_a_literal_setting_is_a_choice_in_help_and_on_the_command_line() -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["bridge", "kafka", "--help"])
    assert shown.exit_code == 0, shown.output
    assert "--bridge-compression [none|gzip|lz4|zstd]" in shown.output

    refused = runner.invoke(cli, ["bridge", "kafka", "--bridge-compression", "snappy"])
    assert refused.exit_code == 2
    assert "'snappy' is not one of 'none', 'gzip', 'lz4', 'zstd'" in refused.output


def test_a_literal_setting_from_the_environment_is_checked_too() -> None:
    result = CliRunner().invoke(cli, ["run", "--no-wal"], env={"TYKPULSE_WAL_FSYNC": "sometimes"})
    assert result.exit_code == 2
    assert "TYKPULSE_WAL_FSYNC" in result.output
    assert "'sometimes' is not one of 'always', 'interval', 'never'" in result.output


def test_db_serve_refuses_a_server_dsn_as_its_database_with_what_to_do() -> None:
    result = CliRunner().invoke(cli, ["db", "serve", "--path", "http://clickhouse:8123"])
    assert result.exit_code == 2
    assert "is a ClickHouse server already" in result.output
    assert "chdb:///path" in result.output
