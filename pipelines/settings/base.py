"""What every settings class shares: the TYKPULSE_ environment prefix, frozen values."""

from __future__ import annotations

import os
import socket

from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.options import NameList

PROXY_FRONTEND = "tcp://127.0.0.1:5555"
PROXY_BACKEND = "tcp://127.0.0.1:5556"

EndpointList = NameList


def default_node() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class EnvSettings(BaseSettings):
    # hide_input_in_errors: a refused value may be a password, or a URL holding one
    model_config = SettingsConfigDict(
        env_prefix="TYKPULSE_", frozen=True, extra="ignore", hide_input_in_errors=True
    )
