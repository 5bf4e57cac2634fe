"""The CLI's options come from the typed settings: a Literal setting offers exactly its choices."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
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


def test_a_secret_given_as_an_argument_is_warned_about_and_never_repeated(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Found by attack: every local user read `--writer-password`, `--node-secret` and DSN passwords
    # in /proc/PID/cmdline; the docs taught passing them so.
    caplog.set_level(logging.WARNING, logger="pipelines.cli.options")
    runner = CliRunner()
    bad_range = ["rebuild", "--from", "x", "--to", "y"]  # refused after the options are read

    def warnings() -> list[str]:
        found = [r.getMessage() for r in caplog.records if r.name == "pipelines.cli.options"]
        caplog.clear()
        return found

    dsn = f"chdb://{tmp_path / 'db'}"
    runner.invoke(cli, [*bad_range, "--clickhouse", dsn, "--key-hash-salt", "S3CRET"])
    (salt,) = warnings()
    assert "--key-hash-salt" in salt
    assert "TYKPULSE_KEY_HASH_SALT" in salt
    runner.invoke(cli, [*bad_range, "--clickhouse", "http://u:pw@127.0.0.1:1"])
    (url,) = warnings()
    assert "--clickhouse" in url
    assert "TYKPULSE_CLICKHOUSE_DSN" in url
    assert "S3CRET" not in salt + url
    assert "pw" not in url
    # a password as a query parameter (Redis takes one so), and commands with their own --clickhouse
    runner.invoke(cli, [*bad_range, "--clickhouse", "http://u@127.0.0.1:1/?password=pw"])
    assert len(warnings()) == 1
    runner.invoke(cli, ["status", "--clickhouse", "http://u:pw@127.0.0.1:1", "--runtime-dir", str(tmp_path)])
    (status,) = warnings()
    assert "TYKPULSE_STATUS_CLICKHOUSE_DSN" in status
    # from the environment, or a URL without a password: nothing to say
    runner.invoke(cli, [*bad_range, "--clickhouse", dsn], env={"TYKPULSE_KEY_HASH_SALT": "S3"})
    runner.invoke(cli, [*bad_range, "--clickhouse", "http://u@127.0.0.1:1"])
    assert warnings() == []


def test_a_password_as_a_dsn_query_parameter_is_a_clear_refusal() -> None:
    # Found by attack: clickhouse-connect took the user from the URL and the password from the query
    # and failed with "TypeError: multiple values for argument 'password'", a traceback.
    result = CliRunner().invoke(
        cli, ["schema", "apply", "--clickhouse", "http://tykpulse@127.0.0.1:1/?password=x"]
    )
    assert result.exit_code == 2
    assert "TYKPULSE_CLICKHOUSE_PASSWORD" in result.output
    assert "x" not in result.output.split("query parameters")[-1].strip()
    assert not isinstance(result.exception, TypeError)
