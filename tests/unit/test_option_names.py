"""One naming scheme for options: every option has its TYKPULSE_ variable, and a variable means one thing.

The test walks every click command of `tykpulse`, lists each visible option's environment variable
and fails when one variable is read by options that mean different things (the help differs,
or the type does), unless the variable is listed in SAME_IDEA with why the wordings differ.
Old spellings live on only as hidden, deprecated flags without a variable of their own.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from pipelines.cli.main import cli
from pipelines.cli.options import pass_settings, settings_options
from pipelines.settings.kafka import KafkaSettings

pytestmark = pytest.mark.unit

# `tykpulse demo` reads no TYKPULSE_* variable on purpose: a variable set for a real worker must
# never point the demo at real data (pipelines/cli/commands/demo.py).
NO_VARIABLES = {"demo"}
# One idea, worded for each command (what that command does with it), or an old second flag name.
SAME_IDEA = {
    "TYKPULSE_CLICKHOUSE_DSN": "the ClickHouse DSN; read-only commands say what they read there",
    "TYKPULSE_CLICKHOUSE_DATABASE": "the rollups' database; status reads its publishers view",
    "TYKPULSE_CLICKHOUSE_CLUSTER": "the cluster the schema is laid out on; schema show renders that layout",
    "TYKPULSE_KEY_HASH_SALT": "the one key-digest salt (one key file, data/key-digest.secret by default): "
    "the bridges digest keys with it before publishing, the workers hash with it",
    "TYKPULSE_KEY_HASH_SALT_FILE": "the key file of that salt; the bridges' default is data/ itself",
    "TYKPULSE_CONNECT": "where a publisher connects; the bridges call it --publish",
    "TYKPULSE_MAX_MESSAGE_BYTES": "the largest firehose message; the proxy says what it does to a bigger one",
    "TYKPULSE_MESSAGE_RECORDS": "records per firehose message; the webhook bridge's records are events",
    "TYKPULSE_NODE_SECRET": "Tyk's node_secret; the simulator signs with it, the others verify",
    "TYKPULSE_RUNTIME_DIR": "where endpoints are announced; status reads, the others write",
    "TYKPULSE_SERVE_LISTEN": "the embedded database's HTTP endpoint; `db serve` calls it --listen",
    "TYKPULSE_FROM": "start of a time range; report takes a date, replay/rebuild also unix seconds",
    "TYKPULSE_TO": "end of a time range (same forms as TYKPULSE_FROM)",
    "TYKPULSE_MAX_FUTURE_S": "the timestamp limit; replay applies the archiving workers' to what it resends",
    "TYKPULSE_MAX_PAST_S": "the timestamp limit; replay applies the archiving workers' to what it resends",
}
# Variables that meant different things in different commands until they were split.
RETIRED = {"TYKPULSE_RATE", "TYKPULSE_BATCH", "TYKPULSE_KEY_SALT", "TYKPULSE_KEY_SALT_FILE"}


def commands(command: click.Command = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), command
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):  # subcommands are imported lazily: ask, don't read .commands
            sub = command.get_command(ctx, name)
            assert sub is not None, name
            yield from commands(sub, (*path, name))


def options(command: click.Command) -> Iterator[click.Option]:
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and "--help" not in param.opts:
            yield param


def meaning(option: click.Option) -> str:
    return (option.help or "").split("[default")[0].strip()


def uses() -> dict[str, list[tuple[str, click.Option]]]:
    found: dict[str, list[tuple[str, click.Option]]] = collections.defaultdict(list)
    for path, command in commands():
        for option in options(command):
            if isinstance(option.envvar, str):
                found[option.envvar].append((path, option))
    return found


def test_every_option_has_its_variable() -> None:
    missing = [
        f"{path} {option.opts[0]}"
        for path, command in commands()
        if path not in NO_VARIABLES
        for option in options(command)
        if "--version" not in option.opts and not (isinstance(option.envvar, str) and option.show_envvar)
    ]
    assert not missing, f"options without an environment variable: {missing}"
    for path in NO_VARIABLES:
        _, demo = next(c for c in commands() if c[0] == path)
        assert not [o.envvar for o in options(demo) if o.envvar], f"{path} must read no variable"


def test_a_variable_means_one_thing() -> None:
    collisions = []
    for envvar, used in sorted(uses().items()):
        assert envvar.startswith("TYKPULSE_"), envvar
        types = {option.type.name for _, option in used}
        if len(types) > 1 and envvar not in SAME_IDEA:
            collisions.append(f"{envvar}: types {sorted(types)}")
        meanings = {meaning(option) for _, option in used}
        if len(meanings) > 1 and envvar not in SAME_IDEA:
            collisions.append(f"{envvar}: " + " | ".join(f"{p}: {meaning(o)!r}" for p, o in used))
    assert not collisions, "one variable, different meanings:\n" + "\n".join(collisions)
    assert not RETIRED & set(uses()), "a retired variable is back"
    assert set(SAME_IDEA) <= set(uses()), "SAME_IDEA names a variable no option reads"


def test_one_command_reads_a_variable_once() -> None:
    for path, command in commands():
        envvars = [o.envvar for o in options(command) if isinstance(o.envvar, str)]
        repeated = {v for v in envvars if envvars.count(v) > 1}
        assert not repeated, f"{path}: {repeated}"


def test_version_imports_no_subcommand() -> None:
    """`tykpulse --version` stays fast: the group imports a subcommand's module only when it is used."""
    code = (
        "import sys; from click.testing import CliRunner; from pipelines.cli.main import cli; "
        "result = CliRunner().invoke(cli, ['--version']); assert result.exit_code == 0, result.output; "
        "heavy = sorted(m for m in sys.modules if m.startswith(('pipelines.cli.commands.', 'chdb', 'faust', "
        "'pandas', 'zmq', 'redis', 'aiokafka', 'clickhouse_connect'))); print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"imported by --version: {result.stdout}"


def test_old_spellings_are_hidden_deprecated_and_read_no_variable() -> None:
    aliases = {
        ("simulate", "--rate"), ("simulate", "--batch"), ("replay", "--rate"), ("bridge tyk", "--batch"),
        ("bridge tyk", "--key-salt"), ("bridge tyk-webhook", "--key-salt"), ("schema apply", "--cluster"),
        ("schema show", "--cluster"), ("schema show", "--database"), ("db serve", "--database"),
        ("report", "--start"), ("report", "--end"), ("status", "--worker"), ("status", "--database"),
    }  # fmt: skip
    found = {
        (path, flag): param
        for path, command in commands()
        for param in command.params
        if isinstance(param, click.Option)
        for flag in param.opts
    }
    for key in sorted(aliases):
        option = found.get(key)
        assert option is not None, f"{key}: the old spelling is gone"
        assert option.hidden, key
        assert option.deprecated, key
        assert not option.envvar, key


def _topic_command() -> click.Command:
    @click.command()
    @settings_options(KafkaSettings, aliases={"kafka_topic": "--topic"})
    @pass_settings(KafkaSettings)
    def show(settings: KafkaSettings) -> None:
        click.echo(settings.kafka_topic)

    return show


@pytest.mark.parametrize(
    ("args", "topic", "warned"),
    [
        (["--kafka-topic", "new"], "new", False),
        (["--topic", "old"], "old", True),
        ([], "tyk.events", False),
        (["--kafka-topic", "new", "--topic", "old"], "new", True),  # the first spelling given wins
    ],
)
def test_only_an_old_spelling_warns_and_its_value_is_used(args: list[str], topic: str, warned: bool) -> None:
    # Found in a secrets audit's runs: the old and new spellings shared a parameter, so click
    # warned "The option 'key_hash_salt' is deprecated. use --key-hash-salt" on the new spelling.
    result = CliRunner().invoke(_topic_command(), args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == topic
    assert ("DeprecationWarning: The option '--topic' is deprecated" in result.stderr) is warned
    assert "kafka_topic" not in result.stderr


def test_an_old_spelling_of_a_plain_option_warns_only_when_typed() -> None:
    new = CliRunner().invoke(cli, ["schema", "show", "--clickhouse-database", "analytics"])
    old = CliRunner().invoke(cli, ["schema", "show", "--database", "analytics"])
    for result in (new, old):
        assert result.exit_code == 0, result.output
        assert "CREATE DATABASE IF NOT EXISTS analytics" in result.stdout
    assert "deprecated" not in new.stderr
    assert "The option '--database' is deprecated" in old.stderr
