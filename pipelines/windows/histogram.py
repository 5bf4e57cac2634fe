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
import functools
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

    def thresholds(self) -> npt.NDArray[np.int64]:
        """The bucket boundaries over the integers: element k - 1 is the smallest value whose
        bucket is k or more, for every bucket up to MAX_VALUE's.

        They are found with bucket_indexes itself, so a value's bucket is the number of
        thresholds at or below it, exactly (the native traffic rollup buckets that way).
        """
        return _thresholds(self)

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


@functools.cache
def _thresholds(histogram: LogHistogram) -> npt.NDArray[np.int64]:
    top = int(histogram.bucket_indexes(np.array([MAX_VALUE], dtype=np.int64))[0])
    wanted = np.arange(1, top + 1, dtype=np.int64)
    # a binary search for every bucket at once: lo rises to the first value in bucket >= k
    lo = np.ones(top, dtype=np.int64)
    hi = np.full(top, MAX_VALUE, dtype=np.int64)
    while (lo < hi).any():
        mid = (lo + hi) // 2
        reached = histogram.bucket_indexes(mid) >= wanted
        hi = np.where(reached, mid, hi)
        lo = np.where(reached, lo, mid + 1)
    lo.flags.writeable = False
    return lo
