"""Which deduplication-log tokens are forgotten before the embedded engine opens (files laid out as
ClickHouse lays them out; the real engine's side is tests/component/test_killed_insert_retry.py)."""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

import pytest

from sinks.clickhouse.dedup_repair import forget_unwritten_blocks


def table(root: Path, parts: list[str], *logs: str, name: str = "t") -> Path:
    """A table of database `db` stored as an Atomic database stores it; returns its log directory."""
    (root / "status").touch()
    directory = root / "store" / "abc" / f"abc-{name}"
    (directory / "deduplication_logs").mkdir(parents=True)
    for part in parts:
        (directory / part).mkdir()
    (directory / "detached").mkdir()
    (directory / "format_version.txt").write_text("1")
    (root / "data" / "db").mkdir(parents=True, exist_ok=True)
    (root / "data" / "db" / name).symlink_to(directory)
    for number, text in enumerate(logs, start=1):
        (directory / "deduplication_logs" / f"deduplication_log_{number}.txt").write_text(text)
    return directory / "deduplication_logs"


def add(part: str, block: str) -> str:
    return f"1\t{part}\t{block}\n"


def test_the_token_of_a_part_above_every_part_on_disk_gets_a_drop_line(tmp_path: Path) -> None:
    logs = table(
        tmp_path, ["p_1_1_0", "p_2_2_0"], add("p_1_1_0", "b1") + add("p_2_2_0", "b2") + add("p_3_3_0", "b3")
    )
    forgotten = forget_unwritten_blocks(tmp_path)
    assert [(f.table, f.parts) for f in forgotten] == [("db.t", ("p_3_3_0",))]
    assert (logs / "deduplication_log_1.txt").read_text().endswith("2\tp_3_3_0\tb3\n")
    assert forget_unwritten_blocks(tmp_path) == []


def test_merged_parts_cover_their_sources_and_parts_below_the_newest_are_left(tmp_path: Path) -> None:
    # 1..3 merged into one part; 4 is gone (a TTL emptied it) but 5 is on disk: only a killed
    # insert's part is above everything on disk.
    text = "".join(add(f"p_{n}_{n}_0", f"b{n}") for n in range(1, 6))
    logs = table(tmp_path, ["p_1_3_1", "p_5_5_0"], text)
    assert forget_unwritten_blocks(tmp_path) == []
    assert (logs / "deduplication_log_1.txt").read_text() == text


def test_a_killed_insert_over_two_partitions_forgets_only_the_part_never_written(tmp_path: Path) -> None:
    text = add("202611_1_1_0", "a") + add("202611_2_2_0", "b") + add("202612_3_3_0", "c")
    table(tmp_path, ["202611_1_1_0", "202611_2_2_0"], text)
    assert [f.parts for f in forget_unwritten_blocks(tmp_path)] == [("202612_3_3_0",)]


def test_a_dropped_token_stays_dropped_and_older_logs_are_read_first(tmp_path: Path) -> None:
    logs = table(
        tmp_path,
        ["p_1_1_0"],
        add("p_1_1_0", "b1") + add("p_2_2_0", "b2"),
        "2\tp_2_2_0\tb2\n" + add("p_3_3_0", "b3"),
    )
    assert [f.parts for f in forget_unwritten_blocks(tmp_path)] == [("p_3_3_0",)]
    assert (logs / "deduplication_log_2.txt").read_text().endswith("2\tp_3_3_0\tb3\n")
    assert (logs / "deduplication_log_1.txt").read_text() == add("p_1_1_0", "b1") + add("p_2_2_0", "b2")


def test_a_torn_last_line_is_cut_so_the_next_record_starts_on_a_line_of_its_own(tmp_path: Path) -> None:
    logs = table(tmp_path, ["p_1_1_0"], add("p_1_1_0", "b1") + "1\tp_2_2")
    assert forget_unwritten_blocks(tmp_path) == []
    assert (logs / "deduplication_log_1.txt").read_text() == add("p_1_1_0", "b1")


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"deduplication_log_1.txt": "3\tp_9_9_0\tb\n"}, "line 1 is not"),
        ({"deduplication_log_1.txt": add("p_9_9_0", "b") + "1\tnot a part\tb\n"}, "line 2 is not"),
        ({"deduplication_log_1.txt": add("p_9_9_0", "b"), "notes.txt": "x"}, "unexpected file notes.txt"),
        (
            {"deduplication_log_1.txt": "1\tp_8", "deduplication_log_2.txt": add("p_9_9_0", "b")},
            "not the newest",
        ),
        # unreadable and torn: not even the torn line is cut
        ({"deduplication_log_1.txt": "3\tp_2_2_0\tb\n1\tp_3"}, "line 1 is not"),
    ],
)
def test_a_log_in_an_unknown_form_is_left_as_it_is_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, files: dict[str, str], reason: str
) -> None:
    logs = table(tmp_path, ["p_1_1_0"])
    for name, text in files.items():
        (logs / name).write_text(text)
    with caplog.at_level(logging.WARNING):
        assert forget_unwritten_blocks(tmp_path) == []
    assert all((logs / name).read_text() == text for name, text in files.items())
    assert "left as it is table=db.t" in caplog.text
    assert reason in caplog.text


def test_every_table_is_looked_at_and_named(tmp_path: Path) -> None:
    table(tmp_path, ["p_1_1_0"], add("p_1_1_0", "b1"), name="kept")
    table(tmp_path, [], add("all_1_1_0", "x"), name="killed")
    assert [(f.table, f.parts) for f in forget_unwritten_blocks(tmp_path)] == [("db.killed", ("all_1_1_0",))]


def test_a_status_file_replaced_while_it_was_being_locked_guards_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the engine that held it stopped cleanly and another started, with a status file of its own
    logs = table(tmp_path, [], add("p_1_1_0", "b1"))
    lock = fcntl.flock

    def another_engine_started(fd: int, operation: int) -> None:
        (tmp_path / "status").unlink()
        (tmp_path / "status").touch()
        lock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", another_engine_started)
    assert forget_unwritten_blocks(tmp_path) == []
    assert (logs / "deduplication_log_1.txt").read_text() == add("p_1_1_0", "b1")
