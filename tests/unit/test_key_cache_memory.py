"""A key from outside is not kept whole for the rest of the run.

The bridges' KeyDigester and the workers' KeyHasher remember each distinct key's digest (up to a
million of them) so a busy key is hashed once. Keys come from outside, at any length: a webhook
body's `key` (up to --max-body-bytes), an analytics element's APIKey, each entry of a
KeySpaceUpdateNotification, any field the archive hashes for its name. Before, every distinct key
was kept whole: 48 webhook events with 1 MiB keys left 48 MiB in the receiver after they were
published (a real receiver: +286 MB after 300 such events), and a notification of long entries
left all of them.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable

import pytest

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.tyk_notifications import Notice, notice_from_wire
from pipelines.bridges.tyk_webhook import WebhookEvent, webhook_event
from pipelines.digest_cache import DigestCache
from pipelines.keys import KeyHasher

pytestmark = pytest.mark.unit

MIB = 1024 * 1024


def retained(work: Callable[[], None]) -> int:
    """Bytes still allocated once `work` has returned and its garbage is collected."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_webhook_events_with_long_keys_leave_nothing_behind() -> None:
    digester = KeyDigester(b"salt")

    def receive() -> None:
        for i in range(48):
            body = json.dumps({"event": "AuthFailure", "key": f"{i:04d}" + "k" * MIB}).encode()
            event = webhook_event(body, {}, 1, digester)
            assert isinstance(event, WebhookEvent)
            assert event.record["key"].startswith("kd1:")

    assert retained(receive) < 2 * MIB  # before: over 48 MiB (every key kept whole)


def test_a_keyspace_notification_of_long_entries_leaves_nothing_behind() -> None:
    digester = KeyDigester(b"salt")
    payload = ",".join(f"{i:04d}" + "k" * 100_000 + ":resetQuota" for i in range(200))
    wire = json.dumps({"command": "KeySpaceUpdateNotification", "payload": payload}).encode()

    def receive() -> None:
        notice = notice_from_wire(wire, 1, digester)
        assert isinstance(notice, Notice)
        assert notice.record["payload"].count("kd1:") == 200

    assert retained(receive) < 2 * MIB  # before: about 20 MB


def test_short_keys_are_still_remembered_and_long_ones_digest_alike() -> None:
    digester, hasher = KeyDigester(b"salt"), KeyHasher(b"salt")
    long_key = "x" * (MIB // 4)
    assert digester.digest(long_key) == digester.digest(long_key)
    assert hasher.hash(long_key) == hasher.hash(long_key)
    assert digester.digest("short") == digester.digest("short")
    assert hasher.hash("short") == hasher.hash("short")
    assert digester.cache.keys() == hasher.cache.keys() == ["short"]


def test_the_workers_hasher_keeps_no_long_key() -> None:
    hasher = KeyHasher(b"salt")

    def hash_records() -> None:
        for i in range(48):
            assert hasher.hash_many([f"{i:04d}" + "t" * MIB, ""])[1] is None

    assert retained(hash_records) < 2 * MIB  # before: over 48 MiB


def test_many_keys_under_the_length_bound_are_bounded_in_total() -> None:
    cache: DigestCache[str] = DigestCache(max_total_chars=4 * MIB)

    def remember() -> None:
        for i in range(16_384):  # 16 MiB of distinct 1 KiB keys
            cache.keep(f"{i:06d}".ljust(1_000, "k"), "digest")

    assert retained(remember) < 8 * MIB
    assert 0 < len(cache.keys()) <= 4 * MIB // 1_000 + 1
