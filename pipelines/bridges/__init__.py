"""Bridges: move the firehose to and from other systems (Kafka, Tyk)."""
