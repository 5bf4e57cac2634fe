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
