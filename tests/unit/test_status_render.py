"""`tykpulse status` prints a command's counters as they are: whole, never rounded."""

from __future__ import annotations

import pytest
from rich.console import Console

from pipelines.cli.commands.status import render

pytestmark = pytest.mark.unit


def test_large_counters_print_whole_and_fractions_stay_readable() -> None:
    console = Console(record=True, width=200)
    render(
        {
            "command": "db serve",
            "healthy": True,
            "detail": "ok: serving",
            "uptime_s": 12.0,
            "totals": {
                "rows_written": 12_345_678.0,
                "reader_in_flight_limit_bytes": float(512 << 20),
                "connections_closed": {"evicted": 1_000_001.0, "refused": 0.0},
                "ratio": 0.1234567,
            },
        },
        console,
    )
    text = console.export_text()
    assert "12345678" in text  # `:g` printed 1.23457e+07
    assert "536870912" in text
    assert "evicted=1000001, refused=0" in text
    assert "0.123457" in text
    assert "e+" not in text


HOSTILE_NODES = (
    "evil[/red]",  # closing a tag never opened: rich raised MarkupError and status exited 1
    "[link=javascript:alert(1)]click[/link]",  # became an OSC 8 hyperlink
    "ansi\x1b[2J\x1b[31mred",  # cleared the screen
    "two\nrows",  # forged a table row
    "bidi\u202eevil",
)


def _worker_status(node: str) -> dict[str, object]:
    return {
        "command": "run",
        "healthy": False,
        "detail": "stale [bold]publisher[/bold]",
        "uptime_s": 3.0,
        "totals": dict.fromkeys(
            ("messages", "records", "lost", "duplicates", "queue_depth", "queue_capacity", "pending_flushes"),
            0,
        ),
        "rejected": {"bad_envelope": 1},
        "last_write": {"at": 0.0, "ok": False, "error": "refused [/] \x1b]0;title\x07"},
        "publishers": [
            {
                "node": node,
                "boot": 1_700_000_000_000,
                "state": "stale",
                "last_seen_age_s": 5.0,
                "interval_ms": 1000,
                "messages": 3,
                "lost": 0,
            }
        ],
    }


@pytest.mark.parametrize("node", HOSTILE_NODES)
def test_names_from_elsewhere_print_as_themselves(node: str) -> None:
    console = Console(record=True, width=300, force_terminal=True)
    render(_worker_status(node), console)
    ansi = console.export_text(styles=True, clear=False)
    text = console.export_text()
    assert "\x1b[2J" not in ansi  # no sequence of the name's reaches the terminal
    assert "\x1b]" not in ansi  # no hyperlink or title (OSC)
    assert "\u202e" not in text
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in node)
    assert shown in text
    assert "[bold]publisher[/bold]" in text  # the worker's detail, literally
    assert text.count("stale") >= 2


def test_a_workers_partitions_print_in_numeric_order_whatever_the_state_holds() -> None:
    console = Console(record=True, width=200)
    worker = {"command": "worker", "healthy": True, "detail": "ok", "uptime_s": 1.0, "totals": {}}
    partitions = {
        "10": {"next_offset": 1200, "landed_offset": 1100},
        "2": {"next_offset": 7, "landed_offset": None},
        "x[/red]": "not a mapping",  # anyone's endpoint: printed, never a crash
    }
    render({**worker, "state": {"partitions": partitions}}, console)
    text = console.export_text()
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert rows == [["2", "7", "-"], ["10", "1200", "1100"]]
    assert "x[/red]" in text
    render({**worker, "state": "not a mapping"}, console)  # no table, no error
