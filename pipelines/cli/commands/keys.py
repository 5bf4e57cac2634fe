"""tykpulse keys: CURVE certificates in ZeroMQ's standard format."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.errors import ConfigurationError
from pipelines.security.curve import generate_certificates


@click.group("keys")
def group() -> None:
    """CURVE key pairs for encrypted, authenticated firehose sockets."""


@group.command("generate")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    envvar="TYKPULSE_KEYS_DIR",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("keys"),
    show_default=True,
    help="Directory the key pair is written to.",
)
def generate(name: str, directory: Path) -> None:
    """Write NAME.key (public: give it to peers, or put it in an allowlist directory)
    and NAME.key_secret (secret, owner-only: --curve-secret-key) into --dir.

    \b
    Typical layout:
      tykpulse keys generate proxy   --dir keys       # the proxy's own pair
      tykpulse keys generate gw01    --dir keys       # one per gateway bridge / publisher
      tykpulse keys generate worker1 --dir keys
      mkdir allow && cp keys/gw01.key keys/worker1.key allow/   # admitted clients
    """
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        msg = "NAME may hold letters, digits, '-', '_' and '.' only"
        raise click.UsageError(msg)
    try:
        public, secret = generate_certificates(directory, name)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"public key: {public}\nsecret key: {secret} (mode 600; never share it)")
