"""Coverage-guided fuzzing of the worker loop with atheris (run by `make fuzz`).

Input layout: one byte for the frame count (0-5), then per frame a 2-byte
big-endian length and that many bytes. Every input goes through
Ingestor.ingest, take and compute between two good messages; the good
records must survive and nothing may raise. The seed corpus is the catalogue
of hostile messages (tests/hostile.py), written on first use.

    python -m tests.fuzz.ingest_fuzzer CORPUS_DIR -max_total_time=300
"""

from __future__ import annotations

import logging
import struct
import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped]  # atheris ships no type hints
import polars as pl

# Only the project is instrumented: instrumented numpy and polars gave wrong results (the flush's
# id columns came out null), so every input, the empty one first, looked like good records lost.
with atheris.instrument_imports(include=["pipelines"]):
    from pipelines.ingest import Ingestor
    from pipelines.rollups import compute

from tests.helpers import analytics, message
from tests.hostile import hostile_messages, huge_array_message

T0_NS = 1_795_774_500_000_000_000


def pack(frames: list[bytes]) -> bytes:
    out = bytes([len(frames)])
    for frame in frames:
        out += struct.pack(">H", min(len(frame), 0xFFFF)) + frame[:0xFFFF]
    return out


def unpack(data: bytes) -> list[bytes]:
    if not data:
        return []
    count, pos, frames = min(data[0], 5), 1, []
    for _ in range(count):
        if pos + 2 > len(data):
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        frames.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    return frames


def write_seeds(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    seeds = [frames for _, frames, _, _ in hostile_messages(T0_NS)]
    seeds.append(message("tyk.analytics", [analytics(T0_NS)], node="seed"))
    seeds.append([*huge_array_message(T0_NS)[:2], b"\x90"])
    for i, frames in enumerate(seeds):
        (corpus / f"seed-{i:03d}").write_bytes(pack(frames))


GOOD = [message("tyk.analytics", [analytics(T0_NS, api="good")] * 2, node="good", seq=s) for s in (0, 1)]


def one_input(data: bytes) -> None:
    ingestor = Ingestor(clock=lambda: T0_NS)
    ingestor.ingest(GOOD[0], received_ns=T0_NS)
    ingestor.ingest(unpack(data), received_ns=T0_NS)
    ingestor.ingest(GOOD[1], received_ns=T0_NS)
    batch = ingestor.take()
    compute(batch)
    good = batch.analytics.frame().filter(pl.col("api_id") == "good").height
    if good < 4 or "internal_error" in ingestor.stats.rejected:
        msg = f"good records lost or internal error: good={good} rejected={dict(ingestor.stats.rejected)}"
        raise AssertionError(msg)


def main() -> None:
    logging.disable(logging.CRITICAL)  # rejections are expected here; their samples would drown the output
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    if corpus:
        write_seeds(Path(corpus[0]))
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
