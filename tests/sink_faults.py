"""Fault injection at the sink boundary: a real sink behind a wrapper that fails chosen calls.

Every call the wrapper lets through goes to the real ClickHouse sink; a fault
is raised before (the insert never reached ClickHouse) or after (it landed
and the acknowledgement was lost) the real call, as a network would.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from sinks.clickhouse.sink import ClickHouseSink
from sinks.errors import SinkError, SinkUnavailableError


@dataclasses.dataclass
class Fault:
    """Raise `error` on write calls for which `when(call_number, rollup_name)` is true."""

    when: Callable[[int, str], bool]
    error: Callable[[], SinkError]
    after_write: bool = False


class FaultySink:
    def __init__(self, sink: ClickHouseSink, *faults: Fault, fail_setup: int = 0) -> None:
        self.sink = sink
        self.faults = list(faults)
        self.fail_setup = fail_setup
        self.calls: list[tuple[str, str, str]] = []  # (token, rollup, outcome)

    def setup(self) -> None:
        if self.fail_setup > 0:
            self.fail_setup -= 1
            msg = "injected: connection refused"
            raise SinkUnavailableError(msg)
        self.sink.setup()

    def write(self, partials: Mapping[str, pa.Table], token: str) -> int:
        number = len(self.calls) + 1
        (name,) = partials
        fault = next((f for f in self.faults if f.when(number, name)), None)
        if fault is not None and not fault.after_write:
            self.calls.append((token, name, "failed"))
            raise fault.error()
        rows = self.sink.write(partials, token)
        if fault is not None:
            self.calls.append((token, name, "landed, ack lost"))
            raise fault.error()
        self.calls.append((token, name, "ok"))
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)
