"""The write-ahead log: received messages on disk before they are aggregated.

format      segment files of checksummed records
writer      append, group commit, fsync policy, rotation, disk bound
reader      read position ranges back, skipping damage
checkpoint  flushed position, in-flight range, publishers' sequences
planner     which records the next flush takes (read back or decoded live), and their rollups
flusher     log -> rollups -> ClickHouse, exactly once (sending through pipelines.delivery)
deadletter  inserts ClickHouse refused for good
pressure    disk use levels and the hook that reports them
build       the flusher from settings
"""

from pipelines.wal.flusher import DurableFlusher
from pipelines.wal.writer import FsyncPolicy, WalWriter

__all__ = ["DurableFlusher", "FsyncPolicy", "WalWriter"]
