"""What a runner hands received messages to, and what it reports at the end.

A journal takes every message the receiver drained (append, received), paces
the receiver (wait_for_room) and, on the runner's timer, flushes what it
holds through the one delivery path (pipelines.delivery). Two journals:

- `pipelines.wal.flusher.DurableFlusher`: the write-ahead log, exactly once
  through crashes and ClickHouse outages (the default of `tykpulse run`);
- `pipelines.memory_journal.MemoryJournal`: in memory (`--no-wal`), for benchmarks and tests.

The runner does not know which one it has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from pipelines.ingest import Ingestor
from pipelines.windows.batch import Batch
from sinks.errors import SinkError


@dataclasses.dataclass(slots=True)
class RunSummary:
    messages: int = 0
    records: int = 0
    lost: int = 0
    rejected: dict[str, int] = dataclasses.field(default_factory=dict)
    flushes: int = 0
    rows_written: int = 0
    records_written: int = 0
    unwritten_flushes: int = 0
    dead_lettered_rows: int = 0


class FlushObserver(Protocol):
    """Told what each flush did (pipelines.observe.watch.WorkerWatch: metrics, liveness, /status)."""

    def took(self, batch: Batch) -> None: ...

    def wrote(self, seconds: float, rows: int) -> None: ...

    def failed(self, error: SinkError) -> None: ...

    wal_readings: Callable[[], dict[str, float]] | None


class Journal(Protocol):
    ingestor: Ingestor

    def open(self) -> None: ...

    def append(self, frames: list[bytes]) -> None: ...

    def received(self) -> None: ...

    def wait_for_room(self, timeout_s: float) -> bool: ...

    def flush(self) -> bool:
        """Write what is held; True if everything received before the call is now written."""
        ...

    def unwritten_flushes(self) -> int: ...

    def finish(self, timeout_s: float) -> bool: ...

    def close(self) -> None: ...

    def report_to(self, observer: FlushObserver) -> None: ...

    def summarise(self, summary: RunSummary) -> None: ...
