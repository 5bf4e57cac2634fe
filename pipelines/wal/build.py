"""Build the durable flush path from settings (what `tykpulse run` uses)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from pipelines.archive.output import EventsArchiveOutput
from pipelines.delivery import Delivery, RetryPolicy, RollupSink
from pipelines.ingest import NoticeCheck, build_ingestor
from pipelines.journal import Journal
from pipelines.keys import KeyHasher
from pipelines.memory_journal import MemoryJournal
from pipelines.security.notices import NoticeVerifier
from pipelines.settings import ArchiveSettings, FirehoseSettings, WalSettings, WorkerSettings
from pipelines.wal.checkpoint import Checkpoint, load_checkpoint, new_checkpoint
from pipelines.wal.deadletter import DEAD_LETTER_FILE, DeadLetters
from pipelines.wal.flusher import DurableFlusher
from pipelines.wal.format import list_segments
from pipelines.wal.planner import ArchiveOutput
from pipelines.wal.writer import FsyncPolicy, WalWriter
from sinks.clickhouse.client import parse_dsn
from sinks.clickhouse.settings import ClickHouseSettings
from sinks.clickhouse.sink import ClickHouseSink

log = logging.getLogger(__name__)

DEFAULT_WAL_DIR = Path("data") / "wal"


def wal_directory(wal: WalSettings, clickhouse: ClickHouseSettings) -> Path:
    """The configured directory, else `<path>.wal` beside an embedded ClickHouse, else data/wal.

    Beside the embedded database by default, because a log belongs to the data it
    feeds: a worker started on another database never drains a stranger's log.
    """
    if wal.wal_dir:
        return Path(os.path.abspath(Path(wal.wal_dir).expanduser()))  # a link at the path stays one
    embedded = parse_dsn(clickhouse.clickhouse_dsn).embedded_path
    if embedded is not None:
        return embedded.with_name(embedded.name + ".wal")
    return Path(os.path.abspath(DEFAULT_WAL_DIR))


def key_directory(clickhouse: ClickHouseSettings, wal: WalSettings | None = None) -> Path:
    """Where the key file of API-key digests lives by default: beside the data (pipelines.keys).

    The WAL directory's parent (data/ for data/wal, the embedded database's
    directory), as `run` uses it; commands without a WAL (worker, rebuild) read
    the WAL settings from the environment so they land on the same file.
    """
    return wal_directory(wal if wal is not None else WalSettings(), clickhouse).parent


def resume_checkpoint(directory: Path) -> Checkpoint:
    checkpoint = load_checkpoint(directory) if directory.exists() else None
    if checkpoint is not None:
        return checkpoint
    checkpoint = new_checkpoint()
    segments = list_segments(directory) if directory.exists() else []
    if segments:
        checkpoint.flushed = segments[0][0]
        log.warning(
            "WAL has segments but no checkpoint; everything in it is written again under a new id "
            "dir=%s from=%d",
            directory,
            checkpoint.flushed,
        )
    return checkpoint


def build_flusher(
    firehose: FirehoseSettings,
    worker: WorkerSettings,
    wal: WalSettings,
    sink: RollupSink,
    *,
    directory: Path,
    archive: ArchiveOutput | None = None,
    notice_check: NoticeCheck | None = None,
    make_durable: Callable[[], None] = lambda: None,
) -> DurableFlusher:
    writer = WalWriter(
        directory,
        fsync=FsyncPolicy(wal.wal_fsync),
        fsync_interval_ms=wal.wal_fsync_interval_ms,
        segment_bytes=wal.wal_segment_bytes,
        max_bytes=wal.wal_max_bytes,
        warn_fraction=wal.wal_warn_fraction,
    )
    return DurableFlusher(
        writer,
        resume_checkpoint(directory),
        build_ingestor(firehose, worker, replay=True, notice_check=notice_check),
        sink,
        retry=retry_policy(wal),
        flush_max_bytes=wal.wal_flush_max_bytes,
        dead_letters=DeadLetters(directory / DEAD_LETTER_FILE),
        archive=archive,
        make_durable=make_durable,
    )


def retry_policy(wal: WalSettings) -> RetryPolicy:
    return RetryPolicy(
        initial_s=wal.sink_retry_initial_s,
        max_s=wal.sink_retry_max_s,
        refusals_before_dead_letter=wal.sink_refusals_before_dead_letter,
    )


def build_journal(
    firehose: FirehoseSettings,
    worker: WorkerSettings,
    wal: WalSettings,
    archive: ArchiveSettings,
    clickhouse: ClickHouseSettings,
    sink: ClickHouseSink,
    *,
    notice_check: NoticeVerifier | None = None,
) -> Journal:
    """The journal `tykpulse run` uses: the log in wal_directory() (archive if enabled), or memory (--no-wal).

    Both keep dead letters in wal_directory(); without the log there is no archive
    (it is built from the logged frames).
    """
    directory = wal_directory(wal, clickhouse)
    if not wal.wal:
        delivery = Delivery(
            sink,
            DeadLetters(directory / DEAD_LETTER_FILE),
            policy=retry_policy(wal),
            keeper="kept in memory (--no-wal)",
        )
        ingestor = build_ingestor(firehose, worker, notice_check=notice_check)
        return MemoryJournal(ingestor, delivery, max_pending_flushes=worker.max_pending_flushes)
    output = None
    if archive.archive:
        hasher = KeyHasher(worker.key_hash_salt.get_secret_value().encode())
        output = EventsArchiveOutput(sink, hasher, ttl_days=archive.archive_ttl_days, notices=notice_check)
    return build_flusher(
        firehose,
        worker,
        wal,
        sink,
        directory=directory,
        archive=output,
        notice_check=notice_check,
        make_durable=sink.make_durable,
    )
