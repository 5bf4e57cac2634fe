"""The dead-letter file: partial rollups ClickHouse refused for good, with the reason.

One JSON object per line: when, the flush token, the table, ClickHouse's error
code and message, and the rows (the partial rollup exactly as it was sent,
`window_start` as unix seconds). An operator can fix the cause and insert the
rows back (`INSERT INTO <table> FORMAT JSONEachRow`). Refusals are whole
inserts: ClickHouse accepts or refuses a block, not single rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any, Final

import msgspec
import pyarrow as pa

log = logging.getLogger(__name__)

DEAD_LETTER_FILE: Final = "dead-letter.jsonl"


class DeadLetters:
    """The dead-letter file at `path`; None (a runner built without one, as in tests): logged only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.written = 0

    def add(self, *, token: str, table: str, rows: pa.Table, reason: str, code: int | None) -> None:
        if self.path is None:
            self.written += rows.num_rows
            log.error(
                "ClickHouse refused an insert for good and no dead-letter file is set; rows not kept "
                "table=%s rows=%d token=%s code=%s reason=%s",
                table,
                rows.num_rows,
                token,
                code,
                reason,
            )
            return
        entry: dict[str, Any] = {
            "at": dt.datetime.now(dt.UTC).isoformat(),
            "token": token,
            "table": table,
            "code": code,
            "reason": reason,
            "rows": rows.to_pylist(),
        }
        line = msgspec.json.encode(entry) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.written += rows.num_rows
        log.error(
            "ClickHouse refused an insert for good; rows written to the dead-letter file "
            "table=%s rows=%d token=%s file=%s reason=%s",
            table,
            rows.num_rows,
            token,
            self.path,
            reason,
        )


def read_dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [msgspec.json.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
