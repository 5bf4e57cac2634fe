"""Tumbling event-time windows as pure functions of a timestamp.

A window is identified by its start, in whole UTC seconds. Windows must tile
a minute exactly (the width divides 60) so that the per-minute and hourly
rollups inside ClickHouse are sums of whole windows.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from pipelines.errors import ConfigurationError

NS_PER_S = 1_000_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class TumblingWindows:
    width_s: int = 60

    def __post_init__(self) -> None:
        # The `_1m` tables take a window's start to its minute: a wider window landed whole in
        # one of them (five minutes of requests read as one minute's, per-minute alert rates 5x).
        if not 1 <= self.width_s <= 60 or 60 % self.width_s:
            msg = f"window width must divide 60 seconds, got {self.width_s}"
            raise ConfigurationError(msg)

    def start_s(self, ts_ns: int) -> int:
        seconds = ts_ns // NS_PER_S
        return seconds - seconds % self.width_s

    def starts_s(self, ts_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
        """Window start (unix seconds) of every timestamp; inputs must be valid (>= 0)."""
        seconds = ts_ns // NS_PER_S
        return (seconds - seconds % self.width_s).astype(np.uint32)
