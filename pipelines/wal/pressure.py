"""Disk use of the write-ahead log, and the hook that reports it nearing its bound.

The log never grows past `max_bytes`. Listeners (a metrics exporter, an alert
rule, the log) are called when the level changes:

    OK    below warn_fraction of max_bytes
    WARN  at or above warn_fraction: ClickHouse is probably down or too slow
    FULL  a message did not fit and was dropped (counted; see WalStats)
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class PressureLevel(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FULL = "full"


@dataclasses.dataclass(slots=True)
class WalStats:
    """Counters of one writer since it was opened (what metrics export)."""

    max_bytes: int
    disk_bytes: int = 0
    segments: int = 0
    appended: int = 0
    dropped_full: int = 0
    dropped_io_error: int = 0
    dropped_unloggable: int = 0
    fsyncs: int = 0
    fsync_seconds: float = 0.0
    level: PressureLevel = PressureLevel.OK

    @property
    def used_fraction(self) -> float:
        return self.disk_bytes / self.max_bytes if self.max_bytes else 0.0


PressureListener = Callable[[WalStats], None]


class PressureGauge:
    """Turns byte counts into levels and tells listeners (and the log) when the level changes."""

    def __init__(self, stats: WalStats, warn_fraction: float) -> None:
        self.stats = stats
        self.warn_bytes = int(stats.max_bytes * warn_fraction)
        self.listeners: list[PressureListener] = [_log_level]

    def update(self, *, full: bool = False) -> None:
        above_warn = self.stats.disk_bytes >= self.warn_bytes
        if full or (self.stats.level is PressureLevel.FULL and above_warn):
            # FULL holds until use falls below the warning level, so a log at its
            # bound does not flap between FULL and WARN on every flush.
            level = PressureLevel.FULL
        elif above_warn:
            level = PressureLevel.WARN
        else:
            level = PressureLevel.OK
        if level is not self.stats.level:
            self.stats.level = level
            for listener in self.listeners:
                listener(self.stats)


def _log_level(stats: WalStats) -> None:
    used = f"{stats.disk_bytes}/{stats.max_bytes}"
    if stats.level is PressureLevel.FULL:
        log.error(
            "WAL full, new messages are dropped and counted as lost until flushes catch up "
            "bytes=%s dropped_full=%d",
            used,
            stats.dropped_full,
        )
    elif stats.level is PressureLevel.WARN:
        log.warning("WAL nearly full bytes=%s fraction=%.2f", used, stats.used_fraction)
    else:
        log.info("WAL back below its warning level bytes=%s", used)
