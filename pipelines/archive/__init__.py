"""The raw-event archive (ClickHouse table events_raw) and what reads it back.

sanitize   what is kept of a record: API keys hashed, credentials dropped
output     WAL records -> events_raw rows, written with each flush
timerange  --from/--to parsing
replay     re-publish archived messages on a firehose
rebuild    recompute and replace the rollups of a time range
"""
