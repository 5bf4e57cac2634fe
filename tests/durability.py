"""A workload with exactly known rollups, and readers of what landed, for the durability tests.

Message `seq` of node `n` carries `records_of(seq)` analytics records, all in
the one-minute window `window_of(seq)` of org `n`: every window of
`traffic_1m` then belongs to exactly one message, so a window counted twice
shows up as twice that message's records, and a lost message as a missing
window. Expectations are computed here, not by the code under test.
"""

from __future__ import annotations

import time
from typing import Any, Final

from tests.helpers import analytics, message

MINUTE_S: Final = 60


def base_window_s() -> int:
    """A whole hour a few hours before now, so no timestamp is ever in the future."""
    now = time.time_ns() // 1_000_000_000
    return now - now % 3600 - 6 * 3600


def records_of(seq: int) -> int:
    return 1 + seq % 7


def window_of(base_s: int, seq: int) -> int:
    return base_s + seq * MINUTE_S


def workload_message(node: str, seq: int, base_s: int, *, boot: int = 1) -> list[bytes]:
    ts = window_of(base_s, seq) * 1_000_000_000 + 1_000_000
    records = [
        analytics(ts + i, org=node, api=f"api{i % 2}", code=200 + (i % 3) * 100, key=f"k{i}")
        for i in range(records_of(seq))
    ]
    return message("tyk.analytics", records, node=node, boot=boot, seq=seq)


def traffic_by_window(client: Any, database: str, node: str) -> dict[int, int]:
    """window_start -> requests of one node's org in traffic_1m."""
    result = client.query(
        f"SELECT toUnixTimestamp(window_start), sum(requests) FROM {database}.traffic_1m "
        f"WHERE org_id = '{node}' GROUP BY window_start"
    )
    return {int(w): int(n) for w, n in result.result_rows}


def hourly_requests(client: Any, database: str, node: str) -> int:
    result = client.query(f"SELECT sum(requests) FROM {database}.traffic_1h WHERE org_id = '{node}'")
    return int(result.result_rows[0][0] or 0)


def health(client: Any, database: str) -> dict[str, tuple[int, int, int, int]]:
    """node -> (messages, records, lost_messages, rejected) summed over ingest_health_1m."""
    result = client.query(
        f"SELECT node_id, sum(messages), sum(records), sum(lost_messages), sum(rejected) "
        f"FROM {database}.ingest_health_1m GROUP BY node_id"
    )
    return {row[0]: tuple(int(v) for v in row[1:]) for row in result.result_rows}  # type: ignore[misc]


def check_exact(
    client: Any, database: str, node: str, base_s: int, received: set[int], sent: int
) -> list[str]:
    """Problems with one node's rollups, given the seqs the worker received of `sent` messages."""
    problems = []
    by_seq = {(w - base_s) // MINUTE_S: n for w, n in traffic_by_window(client, database, node).items()}
    for seq, requests in sorted(by_seq.items()):
        if seq not in received:
            problems.append(f"{node}: seq {seq} in traffic_1m but never received")
        elif requests != records_of(seq):
            problems.append(f"{node}: seq {seq} counted {requests} records, it carried {records_of(seq)}")
    missing = sorted(received - set(by_seq))
    problems.extend(f"{node}: received seq {seq} missing from traffic_1m" for seq in missing[:5])
    messages, records, lost, rejected = health(client, database).get(node, (0, 0, 0, 0))
    expected_records = sum(records_of(s) for s in received)
    if (messages, records, rejected) != (len(received), expected_records, 0):
        problems.append(
            f"{node}: ingest_health messages={messages}/{len(received)} "
            f"records={records}/{expected_records} rejected={rejected}"
        )
    if messages + lost != sent:
        problems.append(f"{node}: received {messages} + lost {lost} != sent {sent}")
    if hourly_requests(client, database, node) != expected_records:
        problems.append(f"{node}: traffic_1h requests != {expected_records}")
    return problems
