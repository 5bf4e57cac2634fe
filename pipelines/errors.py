"""Exceptions raised by the stream side.

    PipelineError
    ├── ConfigurationError      settings that cannot work together
    ├── EndpointError           a ZeroMQ endpoint that cannot be bound or connected
    ├── SimulationError         the simulator cannot produce what was asked
    └── BridgeError             a bridge from Tyk cannot run as configured
        └── TykDecodeError      bytes that are not a record in Tyk's format (counted, skipped)

Bad input is never an exception that escapes a worker loop: decoders return
counted rejections (pipelines.firehose.codec.Rejection) instead.
"""

from __future__ import annotations

from typing import Final

import msgspec

# What decoding hostile bytes with msgspec can raise: RecursionError is msgspec's answer to input
# nested deeper than the interpreter's recursion limit (a 5 KB payload of nested arrays is enough),
# so every decode of received bytes catches it with the rest and counts a rejection.
DECODE_ERRORS: Final = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)


class PipelineError(Exception):
    """Root of every error raised by the pipelines package."""


class ConfigurationError(PipelineError):
    pass


class EndpointError(PipelineError):
    def __init__(self, endpoint: str, reason: str) -> None:
        super().__init__(f"cannot use ZeroMQ endpoint {endpoint!r}: {reason}")
        self.endpoint = endpoint
        self.reason = reason


class SimulationError(PipelineError):
    pass


class BridgeError(PipelineError):
    """A bridge (pipelines.bridges) cannot run as configured."""


class TykDecodeError(BridgeError):
    """Bytes that are not a record in Tyk's format; the bridges count and skip them."""

    def __init__(self, encoding: str, reason: str) -> None:
        super().__init__(f"not a Tyk {encoding} record: {reason}")
        self.encoding = encoding
        self.reason = reason
