"""Which gateway issued a Tyk cluster notification, when its payload says so.

A bridge republishes every gateway's notifications under its own node name,
so the envelope names the bridge. Two commands carry the issuing gateway in
their payload (fact sheet §4.3): the DRL heartbeat (`drl.Server` JSON: `ID`
is the gateway's node id, `HostName` its host) and the config response
(`FromNodeID`, `FromHostname`). Those are attributed to the gateway; every
other notice keeps the publishing node.
"""

from __future__ import annotations

from typing import Final

import msgspec

from pipelines.errors import DECODE_ERRORS
from pipelines.firehose.protocol import node_problem


class _DrlServer(msgspec.Struct):
    ID: str = ""
    HostName: str = ""


class _ConfigResponse(msgspec.Struct):
    FromNodeID: str = ""
    FromHostname: str = ""


_DRL_DECODER: Final = msgspec.json.Decoder(_DrlServer)
_RESPONSE_DECODER: Final = msgspec.json.Decoder(_ConfigResponse)


def _drl(payload: str) -> str:
    server = _DRL_DECODER.decode(payload)
    return server.ID or server.HostName


def _response(payload: str) -> str:
    response = _RESPONSE_DECODER.decode(payload)
    return response.FromNodeID or response.FromHostname


_ORIGINS: Final = {
    "NoticeGatewayDRLNotification": _drl,
    "NoticeGatewayConfigResponse": _response,
}


def issuing_node(command: str, payload: str, publisher: str) -> str:
    """The gateway named in the payload, else `publisher` (also for a payload that does not parse)."""
    origin = _ORIGINS.get(command)
    if origin is None or not payload:
        return publisher
    try:
        node = origin(payload)
    except DECODE_ERRORS:  # deep nesting included: a payload nothing checked before the flush
        return publisher
    # the same bound as an envelope's node: a payload cannot make a key column unbounded
    if node_problem(node) is not None:
        return publisher
    return node
