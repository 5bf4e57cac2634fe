"""The ceiling: a bare SUB socket that receives every message and decodes only its envelope.

What ZeroMQ and Python can carry at all on this machine: no payload decoding,
no aggregation, no writes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bench.baselines.consumer import LossCounter, arguments, serve
from pipelines.firehose.protocol import TOPIC_HEARTBEAT, Envelope

_HEARTBEAT = TOPIC_HEARTBEAT.encode()


class CeilingConsumer:
    def __init__(self) -> None:
        self.decode = msgspec.msgpack.Decoder(Envelope).decode
        self.counter = LossCounter()
        self.records = 0

    def on_message(self, frames: list[bytes]) -> None:
        env = self.decode(frames[1])
        self.counter.observe(env.node, env.boot, env.seq)
        if frames[0] != _HEARTBEAT:
            self.records += env.count

    def on_tick(self) -> None:
        pass

    def finish(self) -> dict[str, Any]:
        c = self.counter
        return {"messages": c.messages, "lost": c.lost, "records": self.records, "landed": self.records}


if __name__ == "__main__":
    serve(CeilingConsumer(), arguments(__doc__ or "").parse_args())
