"""Exceptions raised by the stream side.

    PipelineError
    ├── ConfigurationError      settings that cannot work together
    ├── EndpointError           a ZeroMQ endpoint that cannot be bound or connected
    └── SimulationError         the simulator cannot produce what was asked

Bad input is never an exception that escapes a worker loop: decoders return
counted rejections (pipelines.firehose.codec.Rejection) instead.
"""

from __future__ import annotations


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
