"""Bridges between the firehose and other systems: from a real Tyk (docs/tyk.md), to Kafka (docs/scaling.md).

tyk_records / tyk_protobuf   Tyk's AnalyticsRecord (msgpack, protobuf) -> firehose analytics records
tyk_lists / tyk_redis        the at-least-once drain of Tyk's Redis analytics lists
tyk_notifications            tyk.cluster.notifications -> tyk.notice.<Command>
tyk_webhook(_server)         Tyk's webhook event handler -> tyk.event.<Name>
key_digest                   keys as bridges publish them (never raw)
publishing                   publish only to subscribers, wait instead of dropping
kafka_bridge                 the firehose -> a Kafka topic, for the Faust workers
"""

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.publishing import BridgePublisher
from pipelines.bridges.tyk_protobuf import decode_protobuf
from pipelines.bridges.tyk_records import FirehoseConverter, TykAnalyticsRecord, decode_msgpack
from pipelines.bridges.tyk_redis import TykRedisBridge

__all__ = [
    "BridgePublisher",
    "FirehoseConverter",
    "KeyDigester",
    "TykAnalyticsRecord",
    "TykRedisBridge",
    "decode_msgpack",
    "decode_protobuf",
]
