"""The checkpoint: how far the log has landed in ClickHouse, and the flush in flight.

One small JSON file, replaced atomically (write a temporary file, fsync, rename,
fsync the directory), so after a crash it is either the old or the new state,
never a mix. It holds:

- `wal_id`: names this log in every deduplication token, so two workers (two
  logs) never produce the same token for different data;
- `flushed`: every record before this position is in ClickHouse (or in the
  dead-letter file); the segments holding only such records may be deleted;
- `sequences`: the last seq of every (node, boot) as of `flushed`, so a
  restarted worker counts the messages it missed while down as lost, and
  re-aggregates the tail exactly as the first attempt did;
- `inflight`: the range being written, recorded *before* the first insert, so
  that after a crash the same records are regrouped into the same flush and
  get the same token.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated, Final

import msgspec

from pipelines.errors import ConfigurationError
from pipelines.firehose.sequence import SequencePosition

__all__ = [
    "CHECKPOINT_FILE",
    "Checkpoint",
    "InFlight",
    "SequencePosition",
    "load_checkpoint",
    "store_checkpoint",
]

CHECKPOINT_FILE: Final = "checkpoint.json"
FORMAT_VERSION: Final = 1


# A log position as a checkpoint may hold one. Read back, one out of range is damage, not a place to
# resume: a negative `flushed` read the log from a position no segment holds and skipped every
# record in it as damaged (then deleted them); one near 2**64 left no position for the next record.
Position = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]


class InFlight(msgspec.Struct, frozen=True):
    """A planned flush: records [start, end) whose CRCs combine to `digest`."""

    start: Position
    end: Position
    digest: Annotated[int, msgspec.Meta(ge=0, lt=1 << 32)]

    def __post_init__(self) -> None:
        if self.end < self.start:
            msg = f"a range in flight ends ({self.end}) before it starts ({self.start})"
            raise ValueError(msg)


class Checkpoint(msgspec.Struct):
    wal_id: str
    flushed: Position = 0
    sequences: list[SequencePosition] = msgspec.field(default_factory=list)
    inflight: InFlight | None = None
    version: int = FORMAT_VERSION


def new_checkpoint() -> Checkpoint:
    return Checkpoint(wal_id=uuid.uuid4().hex[:16])


def load_checkpoint(directory: Path) -> Checkpoint | None:
    path = directory / CHECKPOINT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        checkpoint = msgspec.json.decode(data, type=Checkpoint)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # Not guessed at: without it, what the log holds that ClickHouse already counted is unknown.
        msg = (
            f"{path} is damaged ({exc}): it says which logged records are already in ClickHouse. "
            f"Restore it from a backup; or move it aside to write the whole log again under a new id "
            "(records flushed before it was damaged, still in the log's oldest segment, count twice)"
        )
        raise ConfigurationError(msg) from None
    if checkpoint.version != FORMAT_VERSION:
        msg = f"{path}: checkpoint format {checkpoint.version}, this tykpulse reads {FORMAT_VERSION}"
        raise ConfigurationError(msg)
    return checkpoint


def store_checkpoint(directory: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically and durably."""
    path = directory / CHECKPOINT_FILE
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, msgspec.json.encode(checkpoint))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make a create/rename/delete in `directory` survive power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
