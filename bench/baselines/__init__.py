"""Same-run baselines: the transport ceiling, a naive per-record worker, a ClickHouse-native design."""
