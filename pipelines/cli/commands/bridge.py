"""tykpulse bridge: move the firehose to and from other systems."""

from __future__ import annotations

import click


@click.group("bridge")
def group() -> None:
    """Bridges between the firehose and other systems.

    \b
      tykpulse bridge kafka         the firehose -> a Kafka topic, for the Faust workers
    """
