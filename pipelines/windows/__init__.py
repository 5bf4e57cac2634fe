"""Window math and mergeable aggregates: pure functions, no I/O."""

from pipelines.windows.histogram import LogHistogram, nearest_rank
from pipelines.windows.tumbling import NS_PER_S, TumblingWindows

__all__ = ["NS_PER_S", "LogHistogram", "TumblingWindows", "nearest_rank"]
