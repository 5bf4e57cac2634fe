"""What the write-ahead log costs: append throughput per fsync policy, read-back, checkpoints.

    python bench/wal_append.py                 # default sizes, ~1 minute
    python bench/wal_append.py --dir /var/lib/tykpulse/bench --messages 20000

Appends are grouped as the receiver groups them (commit() after every
`--batch` messages, what one poll of the sockets drains); `always` fsyncs at
every commit, `interval` every 200 ms, `never` only at segment rotation.
Figures depend on the disk: run it on the disk the WAL will live on.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from pipelines.firehose.codec import MessageEncoder
from pipelines.wal.checkpoint import new_checkpoint, store_checkpoint
from pipelines.wal.reader import WalReader
from pipelines.wal.writer import FsyncPolicy, WalWriter


def message(records: int) -> list[bytes]:
    record = {
        "timestamp": 1_795_774_500_000_000_000,
        "org_id": "org-0001",
        "api_id": "api-00042",
        "response_code": 200,
        "api_key": "a" * 32,
        "method": "GET",
        "path": "/v1/orders/12345",
        "latency": {"total": 12, "upstream": 10, "gateway": 2},
    }
    return MessageEncoder("msgpack").encode(
        "tyk.analytics", node="bench", boot=1, seq=0, sent=0, records=[record] * records
    )


def bench_append(
    directory: Path, policy: FsyncPolicy, frames: list[bytes], count: int, batch: int
) -> dict[str, float]:
    shutil.rmtree(directory, ignore_errors=True)
    writer = WalWriter(directory, fsync=policy, fsync_interval_ms=200, max_bytes=64 << 30)
    writer.open(0)
    started = time.perf_counter()
    for i in range(count):
        writer.append(frames, i)
        if i % batch == batch - 1:
            writer.commit()
    writer.commit()
    seconds = time.perf_counter() - started
    writer.close()
    size = sum(len(f) for f in frames)
    return {
        "messages_per_s": count / seconds,
        "mb_per_s": count * size / seconds / 1e6,
        "us_per_message": seconds / count * 1e6,
        "fsyncs": writer.stats.fsyncs,
        "fsync_ms_mean": writer.stats.fsync_seconds / max(writer.stats.fsyncs, 1) * 1e3,
    }


def bench_read(directory: Path, count: int) -> float:
    reader = WalReader(directory)
    started = time.perf_counter()
    read = reader.read(0, count)
    assert len(read.records) == count
    return count / (time.perf_counter() - started)


def bench_checkpoint(directory: Path, rounds: int = 50) -> float:
    checkpoint = new_checkpoint()
    started = time.perf_counter()
    for i in range(rounds):
        checkpoint.flushed = i
        store_checkpoint(directory, checkpoint)
    return (time.perf_counter() - started) / rounds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=None, help="Where to write (default: a temp dir).")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50, help="Messages per commit (receive batch).")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="tykpulse-wal-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"dir={root} messages={args.messages} batch={args.batch}")
    header = ("records/msg", "bytes/msg", "policy", "msg/s", "MB/s", "us/msg", "fsyncs", "ms/fsync")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (11, 9, 8, 10, 7, 7, 6, 8), strict=True)))
    for records in (1, 100):
        frames = message(records)
        size = sum(len(f) for f in frames)
        for policy in FsyncPolicy:
            r = bench_append(root / "wal", policy, frames, args.messages, args.batch)
            print(
                f"{records:>11} {size:>9} {policy.value:>8} {r['messages_per_s']:>10.0f} "
                f"{r['mb_per_s']:>7.1f} {r['us_per_message']:>7.2f} {r['fsyncs']:>6.0f} "
                f"{r['fsync_ms_mean']:>8.2f}"
            )
        print(f"{records:>11} {size:>9} {'read':>8} {bench_read(root / 'wal', args.messages):>10.0f}")
    print(f"checkpoint store (write, fsync, rename, fsync dir): {bench_checkpoint(root):.2f} ms")
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
