"""The WAL on a real filesystem: append, rotate, read ranges, torn tails, the disk bound."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.wal.checkpoint import (
    CHECKPOINT_FILE,
    InFlight,
    SequencePosition,
    load_checkpoint,
    new_checkpoint,
    store_checkpoint,
)
from pipelines.wal.format import (
    SEGMENT_HEADER,
    LoggedRecords,
    WalRecord,
    encode_record,
    list_segments,
    segment_header,
    segment_name,
)
from pipelines.wal.pressure import PressureLevel, WalStats
from pipelines.wal.reader import WalReader
from pipelines.wal.writer import FsyncPolicy, WalLockedError, WalWriter, read_all, write_all

pytestmark = pytest.mark.component


def frames(i: int, size: int = 100) -> list[bytes]:
    return [b"tyk.analytics", f"env-{i}".encode(), bytes([i % 256]) * size]


def writer(directory: Path, **kwargs: object) -> WalWriter:
    options: dict[str, object] = {"segment_bytes": 1 << 16, "max_bytes": 1 << 20, **kwargs}
    return WalWriter(directory, **options)  # type: ignore[arg-type]


def tapped_records(tapped: list[WalRecord]) -> Callable[[LoggedRecords], None]:
    """A tap that keeps what it is handed as WalRecords, as a read-back returns them."""

    def tap(logged: LoggedRecords) -> None:
        columns = zip(logged.frames, logged.received_ns, logged.crcs, strict=True)
        tapped.extend(
            WalRecord(logged.first + n, received, list(frames), crc)
            for n, (frames, received, crc) in enumerate(columns)
        )

    return tap


def fill(w: WalWriter, count: int, start: int = 0, size: int = 100) -> None:
    for i in range(start, start + count):
        assert w.append(frames(i, size), 1_000 + i)
        if i % 7 == 0:
            w.commit()
    w.commit()


def test_appended_records_read_back_in_order(tmp_path: Path) -> None:
    w = writer(tmp_path)
    assert w.open(0) == 0
    fill(w, 50)
    assert w.written == 50
    read = WalReader(tmp_path).read(0, 50)
    assert [r.position for r in read.records] == list(range(50))
    assert [r.frames for r in read.records] == [frames(i) for i in range(50)]
    assert [r.received_ns for r in read.records] == [1_000 + i for i in range(50)]
    w.close()


def test_uncommitted_records_are_not_visible(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    w.append(frames(0), 1)
    assert w.written == 0
    assert read_all(tmp_path) == []
    w.commit()
    assert w.written == 1
    assert len(read_all(tmp_path)) == 1
    w.close()


def test_segments_rotate_and_ranges_span_them(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    fill(w, 600, size=500)
    segments = list_segments(tmp_path)
    assert len(segments) > 3
    assert all(p.stat().st_size <= (1 << 16) + 600 for _, p in segments[:-1])
    reader = WalReader(tmp_path)
    got: list[int] = []
    for start in range(0, 600, 73):
        read = reader.read(start, min(start + 73, 600))
        got.extend(r.position for r in read.records)
        assert read.end == min(start + 73, 600)
    assert got == list(range(600))
    w.close()


def test_the_same_range_has_the_same_digest_and_a_different_range_another(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    fill(w, 100)
    a = WalReader(tmp_path).read(10, 60)
    b = WalReader(tmp_path).read(10, 60)
    c = WalReader(tmp_path).read(10, 61)
    assert a.digest == b.digest
    assert a.digest != c.digest
    w.close()


def test_max_bytes_ends_a_range_early(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    fill(w, 100, size=1000)
    read = WalReader(tmp_path).read(0, 100, max_bytes=10_000)
    assert 9 <= len(read.records) <= 11
    assert read.end == read.records[-1].position + 1
    w.close()


def test_a_torn_tail_is_truncated_and_appending_continues(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    fill(w, 20)
    w.close()
    _, last = list_segments(tmp_path)[-1]
    size = last.stat().st_size
    with last.open("r+b") as f:
        f.truncate(size - 30)  # the crash tore the last record
    w = writer(tmp_path)
    assert w.open(0) == 19
    assert [r.position for r in read_all(tmp_path)] == list(range(19))
    fill(w, 5, start=19)
    assert [r.position for r in read_all(tmp_path)] == list(range(24))
    w.close()


def test_garbage_after_the_last_record_is_truncated(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    fill(w, 5)
    w.close()
    _, last = list_segments(tmp_path)[-1]
    with last.open("ab") as f:
        f.write(os.urandom(57))
    w = writer(tmp_path)
    assert w.open(0) == 5
    fill(w, 1, start=5)
    assert [r.position for r in read_all(tmp_path)] == list(range(6))
    w.close()


def test_a_segment_torn_while_being_created_is_replaced(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    fill(w, 5)
    w.close()
    (tmp_path / "00000000000000000005.wal").write_bytes(b"TPW")  # header torn
    w = writer(tmp_path)
    assert w.open(0) == 5
    fill(w, 3, start=5)
    assert [r.position for r in read_all(tmp_path)] == list(range(8))
    w.close()


def test_positions_never_go_below_the_checkpoint(tmp_path: Path) -> None:
    """After power loss the log may end before its checkpoint: new records must not reuse positions."""
    w = writer(tmp_path)
    w.open(0)
    fill(w, 10)
    w.close()
    w = writer(tmp_path)
    assert w.open(25) == 25
    fill(w, 3, start=0)
    read = WalReader(tmp_path).read(25, 28)
    assert [r.position for r in read.records] == [25, 26, 27]
    w.close()


def test_a_damaged_record_in_a_closed_segment_is_skipped_and_counted(tmp_path: Path) -> None:
    w = writer(tmp_path, segment_bytes=1 << 16)
    w.open(0)
    fill(w, 400, size=500)
    first_segment = list_segments(tmp_path)[0][1]
    second_first = list_segments(tmp_path)[1][0]
    with first_segment.open("r+b") as f:
        f.seek(SEGMENT_HEADER.size + 3 * 540)
        f.write(b"\xff\xff\xff")
    read = WalReader(tmp_path).read(0, 400)
    positions = [r.position for r in read.records]
    assert positions[0] == 0
    assert positions[-1] == 399
    assert read.damaged == 400 - len(positions)
    assert 0 < read.damaged <= second_first
    assert positions == sorted(set(positions))
    w.close()


def hostile_segment(directory: Path, positions: list[int], first: int = 0) -> None:
    """A segment of CRC-valid records with the given positions (as a hostile writer could make)."""
    data = segment_header(first)
    for position in positions:
        data += encode_record(position, 1, [b"t", b"e", b"p%d" % position])[0]
    (directory / segment_name(first)).write_bytes(data)


FAR = 10**15


@pytest.mark.parametrize(
    ("positions", "returned", "damaged"),
    [
        ([0, 1, FAR, 3, 4], [0, 1, 3, 4], 2),  # in place of 2: it is missing, and the record is damage
        ([0, 1, FAR, 2, 3, 4], [0, 1, 2, 3, 4], 1),  # inserted: every real record is read
        ([0, 1, 0, 2, 3, 4], [0, 1, 2, 3, 4], 1),  # behind the sequence
        ([0, 1, 7, 2, 3, 4], [0, 1, 2, 3, 4], 1),  # past the range asked for
        ([0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4], 0),
    ],
)
def test_a_record_out_of_sequence_is_damage_and_never_returned_outside_the_range(
    tmp_path: Path, positions: list[int], returned: list[int], damaged: int
) -> None:
    hostile_segment(tmp_path, positions)
    reader = WalReader(tmp_path)
    read = reader.read(0, 5)
    assert [r.position for r in read.records] == returned
    assert [bytes(r.frames[2]) for r in read.records] == [b"p%d" % p for p in returned]
    assert read.end == 5
    assert read.damaged == damaged
    assert reader.damaged_total == damaged


def test_out_of_sequence_records_are_skipped_when_ranges_are_read_one_after_the_other(tmp_path: Path) -> None:
    hostile_segment(tmp_path, [0, 1, FAR, 2, 3, 1, 4, 5])
    reader = WalReader(tmp_path)
    reads = [reader.read(start, start + 2) for start in (0, 2, 4)]  # the cursor carries on
    assert [[r.position for r in read.records] for read in reads] == [[0, 1], [2, 3], [4, 5]]
    assert reader.damaged_total == 2
    assert reader.out_of_sequence_total == 2


def test_a_record_past_the_next_segment_s_first_is_damage(tmp_path: Path) -> None:
    hostile_segment(tmp_path, [0, 1, 6, 2])
    hostile_segment(tmp_path, [4, 5, 6], first=4)
    read = WalReader(tmp_path).read(0, 7)
    # 6 cannot be in the first segment, whose successor starts at 4; 3 is missing
    assert [r.position for r in read.records] == [0, 1, 2, 4, 5, 6]
    assert read.damaged == 2


def test_release_deletes_only_flushed_closed_segments(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    fill(w, 600, size=500)
    segments = list_segments(tmp_path)
    before = w.stats.disk_bytes
    w.release(segments[2][0])
    assert [s for s, _ in list_segments(tmp_path)] == [s for s, _ in segments[2:]]
    assert w.stats.disk_bytes < before
    w.release(10**9)
    assert len(list_segments(tmp_path)) == 1  # the open segment stays
    w.close()


def test_when_full_new_messages_are_refused_and_counted_never_old_ones(tmp_path: Path) -> None:
    seen: list[PressureLevel] = []
    w = writer(tmp_path, segment_bytes=1 << 16, max_bytes=1 << 18, warn_fraction=0.5)
    w.pressure.listeners.append(lambda stats: seen.append(stats.level))
    w.open(0)
    accepted = 0
    for i in range(1000):
        if w.append(frames(i, 1000), i):
            accepted += 1
        w.commit()
    assert w.stats.dropped_full == 1000 - accepted
    assert w.stats.dropped_full > 0
    assert w.stats.disk_bytes <= 1 << 18
    assert seen[:2] == [PressureLevel.WARN, PressureLevel.FULL]
    assert [r.position for r in read_all(tmp_path)] == list(range(accepted))
    w.release(accepted)
    assert w.append(frames(0), 0)
    w.commit()
    assert seen[-1] is PressureLevel.OK
    w.close()


def test_two_writers_cannot_share_a_directory(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    with pytest.raises(WalLockedError):
        writer(tmp_path).open(0)
    w.close()
    other = writer(tmp_path)
    other.open(0)
    other.close()


@pytest.mark.parametrize("policy", list(FsyncPolicy))
def test_every_policy_makes_records_durable_at_sync(tmp_path: Path, policy: FsyncPolicy) -> None:
    w = writer(tmp_path, fsync=policy, fsync_interval_ms=1)
    w.open(0)
    fill(w, 30)
    w.sync()
    if policy is FsyncPolicy.ALWAYS:
        assert w.stats.fsyncs >= 5
    assert w.stats.fsyncs >= 1
    w.close()


def test_checkpoint_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None
    checkpoint = new_checkpoint()
    checkpoint.flushed = 99
    checkpoint.inflight = InFlight(99, 120, 0xDEADBEEF)
    checkpoint.sequences = [SequencePosition("gw1", 5, 1234, 777)]
    store_checkpoint(tmp_path, checkpoint)
    assert load_checkpoint(tmp_path) == checkpoint
    assert os.stat(tmp_path / CHECKPOINT_FILE).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]


def test_stats_fraction() -> None:
    assert WalStats(max_bytes=200, disk_bytes=50).used_fraction == 0.25


def test_a_message_with_more_frames_than_a_record_holds_is_logged_cut(tmp_path: Path) -> None:
    """The decoder rejects it (frame_count) downstream; the receiver must not die on it."""
    w = writer(tmp_path, max_bytes=1 << 24, segment_bytes=1 << 20)
    w.open(0)
    assert w.append([b"x"] * 70_000, 1)
    w.commit()
    (record,) = read_all(tmp_path)
    assert len(record.frames) == 0xFFFF
    w.close()


def test_the_tap_sees_exactly_what_reached_the_file_in_order(tmp_path: Path) -> None:
    """What the flusher decodes as it is logged is what a read-back would return, record for record."""
    w = writer(tmp_path, segment_bytes=4_000)
    tapped: list[WalRecord] = []
    w.tap = tapped_records(tapped)
    w.open(0)
    fill(w, 30)
    good_fd = w._fd
    w._fd = os.open(os.devnull, os.O_RDONLY)  # the next write fails (EBADF), as a full disk would
    for i in range(30, 35):
        assert w.append(frames(i), 1_000 + i)
    w.commit()
    os.close(w._fd)
    w._fd = good_fd
    assert w.stats.dropped_io_error == 5
    fill(w, 10, start=35)
    w.close()
    on_disk = read_all(tmp_path)
    assert len(list_segments(tmp_path)) >= 2, "the test must span a rotation"
    assert [r.position for r in tapped] == list(range(40))
    assert tapped == on_disk
    assert [r.frames for r in on_disk] == [frames(i) for i in [*range(30), *range(35, 45)]]


def test_a_tap_set_between_appends_is_handed_the_records_after_it_at_their_positions(tmp_path: Path) -> None:
    w = writer(tmp_path)
    w.open(0)
    w.append_many([frames(0), frames(1)], [1_000, 1_001])
    tapped: list[WalRecord] = []
    w.tap = tapped_records(tapped)
    w.append(frames(2), 1_002)
    w.append_many([frames(3)], [1_003])
    w.commit()
    w.close()
    assert tapped == read_all(tmp_path)[2:]
    assert [r.position for r in tapped] == [2, 3]


def test_write_all_writes_every_part_in_order_when_the_os_takes_them_piecemeal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """writev may take less than it was given; what it left is written next, none twice.

    A real file takes whole writes, so the OS is made to take at most a few kB per call.
    """
    real_writev = os.writev
    sizes = iter(random.Random(7).randint(1, 5_000) for _ in range(1_000_000))

    def piecemeal(fd: int, buffers: list[bytes]) -> int:
        return real_writev(fd, [b"".join(bytes(b) for b in buffers)[: next(sizes)]])

    monkeypatch.setattr("pipelines.wal.writer.os.writev", piecemeal)
    parts = [os.urandom(n) for n in (0, 1, 70_000, 5, 0, 30_000, 3)] + [os.urandom(7)] * 2_500
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, list(parts))
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(parts)


_MESSAGE = st.one_of(
    st.builds(frames, st.integers(0, 255), st.integers(0, 1900)),  # small: framed in one call
    st.builds(frames, st.integers(0, 255), st.integers(1900, 6000)),  # around SMALL_RECORD_BYTES and over
    st.lists(st.binary(max_size=40), max_size=5),  # any frame count, empty frames
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.lists(st.tuples(_MESSAGE, st.sampled_from([1_000, 0, -1, 2**63 - 1, 2**63])), max_size=20),
        max_size=8,
    ),
    segment_bytes=st.sampled_from([2_000, 9_000, 1 << 16]),
    max_bytes=st.sampled_from([6_000, 40_000, 1 << 20]),
)
def test_a_hand_over_is_logged_as_its_messages_one_at_a_time(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[tuple[list[bytes], int]]],
    segment_bytes: int,
    max_bytes: int,
) -> None:
    """append_many frames runs of small records in one native call: the log's files, what the tap
    is handed, and every count are what append() one message at a time gives, at rotations, at the
    log's bound and for receive times a record cannot hold."""
    outcomes = []
    for one_at_a_time in (True, False):
        directory = tmp_path_factory.mktemp("wal")
        w = writer(directory, segment_bytes=segment_bytes, max_bytes=max_bytes)
        tapped: list[WalRecord] = []
        w.tap = tapped_records(tapped)
        w.open(0)
        for batch in batches:
            messages, received = [m for m, _ in batch], [r for _, r in batch]
            if one_at_a_time:
                for message, at in batch:
                    w.append(message, at)
            else:
                w.append_many(messages, received)
            w.commit()
        w.close()
        files = {path.name: path.read_bytes() for _, path in list_segments(directory)}
        stats = (w.stats.appended, w.stats.dropped_full, w.stats.dropped_unloggable, w.stats.disk_bytes)
        outcomes.append((files, tapped, stats, w.written))
    assert outcomes[1] == outcomes[0]
