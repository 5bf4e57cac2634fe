"""Small pieces of configuration shared by every command: list values from the environment, loopback.

It lives in `sinks` because `sinks` never imports `pipelines`, and both need it.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Annotated, Any

from pydantic_settings import NoDecode

# A list setting from the environment is "a,b" or "a b" (pydantic would expect JSON);
# declare the field as NameList and validate it with split_names (mode="before").
NameList = Annotated[list[str], NoDecode]


def split_names(value: Any) -> Any:
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


def is_loopback(host: str) -> bool:
    """Whether every address `host` binds to is a loopback one (an unresolvable host is not)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)
