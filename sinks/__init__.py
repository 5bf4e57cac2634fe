"""The write side of tykpulse. Never imports `pipelines`."""

from sinks.errors import SinkError, SinkRejectedError, SinkUnavailableError

__all__ = ["SinkError", "SinkRejectedError", "SinkUnavailableError"]
