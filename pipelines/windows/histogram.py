"""A mergeable log-bucket histogram for latency quantiles.

Bucket 0 holds values <= 0. A value v >= 1 goes to bucket
i = ceil(log_gamma(v)) + 1, which covers (gamma^(i-2), gamma^(i-1)], with
gamma = (1 + a) / (1 - a). The bucket is represented by 2 gamma^(i-1) / (gamma + 1),
which is within relative error a of every value in the bucket (the DDSketch
argument). Histograms merge by adding counts per bucket, so any split of the
data into partial histograms gives the same merged result.

A quantile q of n values is reported for the nearest-rank element
(rank max(1, ceil(q n)) in sorted order): the returned value x' satisfies
|x' - x| <= a * x for that element x.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

MAX_VALUE = 2**31 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class LogHistogram:
    relative_error: float

    @property
    def gamma(self) -> float:
        return (1 + self.relative_error) / (1 - self.relative_error)

    def bucket_indexes(self, values: npt.NDArray[np.int64]) -> npt.NDArray[np.uint16]:
        clipped = np.clip(values, 0, MAX_VALUE).astype(np.float64)
        out = np.zeros(clipped.shape, dtype=np.uint16)
        positive = clipped >= 1
        out[positive] = np.ceil(np.log(clipped[positive]) / math.log(self.gamma)).astype(np.uint16) + 1
        return out

    def representative(self, index: int) -> float:
        if index == 0:
            return 0.0
        return 2 * self.gamma ** (index - 1) / (self.gamma + 1)

    def quantile(self, counts: dict[int, int], q: float) -> float:
        """Nearest-rank quantile of a histogram given as {bucket: count}."""
        total = sum(counts.values())
        if total == 0:
            return math.nan
        rank = max(1, math.ceil(q * total))
        running = 0
        for index in sorted(counts):
            running += counts[index]
            if running >= rank:
                return self.representative(index)
        return self.representative(max(counts))  # pragma: no cover - unreachable when counts sum to total


def nearest_rank(sorted_values: Sequence[float] | npt.NDArray[np.float64], q: float) -> float:
    """The exact nearest-rank quantile, the reference the histogram is bounded against."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    return float(sorted_values[max(1, math.ceil(q * n)) - 1])
