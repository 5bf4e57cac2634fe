"""Fault injection for crash tests: kill this process at a named point of the bridge's work.

`TYKPULSE_FAULT_INJECTION=<point>:<n>` makes the process SIGKILL itself the n-th
time it reaches <point> (points are named by the code that calls `reach`). A
SIGKILL, not an exception: nothing is cleaned up, exactly like a crash or an
OOM kill. Empty (the default) disables it. It exists for the tests that prove
the delivery guarantee (tests/integration/test_tyk_bridge_crash.py).
"""

from __future__ import annotations

import logging
import os
import signal

from pipelines.errors import ConfigurationError

log = logging.getLogger(__name__)


class FaultInjector:
    def __init__(self, spec: str = "") -> None:
        self.point = ""
        self.at = 0
        self.seen = 0
        if spec:
            point, _, count = spec.partition(":")
            if not point or not count.isdigit() or int(count) < 1:
                msg = f"fault injection must look like <point>:<n>, got {spec!r}"
                raise ConfigurationError(msg)
            self.point, self.at = point, int(count)

    def reach(self, point: str) -> None:
        if point != self.point:
            return
        self.seen += 1
        if self.seen == self.at:
            log.critical("fault injection: SIGKILL at point=%s n=%d", point, self.seen)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
