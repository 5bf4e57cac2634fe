"""Watching a worker: metrics, rate-limited logs, the health and status endpoint."""
