"""Tumbling event-time windows as pure functions of a timestamp.

A window is identified by its start, in whole UTC seconds. Windows must tile
an hour exactly (the width divides 3600) so that hourly rollups inside
ClickHouse are sums of whole windows.
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
        if not 1 <= self.width_s <= 3600 or 3600 % self.width_s:
            msg = f"window width must divide 3600 seconds, got {self.width_s}"
            raise ConfigurationError(msg)

    def start_s(self, ts_ns: int) -> int:
        seconds = ts_ns // NS_PER_S
        return seconds - seconds % self.width_s

    def starts_s(self, ts_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
        """Window start (unix seconds) of every timestamp; inputs must be valid (>= 0)."""
        seconds = ts_ns // NS_PER_S
        return (seconds - seconds % self.width_s).astype(np.uint32)
