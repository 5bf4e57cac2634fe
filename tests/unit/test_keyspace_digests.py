"""KeySpaceUpdateNotification payloads cross the firehose with key digests, never raw keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.tyk_notifications import Notice, digest_keyspace_payload, notice_from_wire
from pipelines.firehose.protocol import NoticeRecord
from pipelines.security.notices import NoticeVerifier

FIXTURES = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "tyk" / "notifications.json").read_text("utf-8")
)
SECRET: str = FIXTURES["node_secret"]
BY_NAME: dict[str, dict[str, Any]] = {m["name"]: m for m in FIXTURES["messages"]}
DIGESTER = KeyDigester(b"deployment-key")


def keys_of(payload: str) -> list[str]:
    """The key of each entry, as Tyk reads it (the segment before the first ':')."""
    return [entry.split(":")[0] for entry in payload.split(",")]


def published(name: str, node_secret: str = "") -> dict[str, Any]:
    notice = notice_from_wire(BY_NAME[name]["wire"].encode(), 1, DIGESTER, node_secret)
    assert isinstance(notice, Notice)
    return notice.record


def verifies(record: dict[str, Any]) -> bool:
    notice = msgspec.convert(record, NoticeRecord)
    return NoticeVerifier(SECRET).verify(notice) is None


def test_the_published_notice_carries_digests_and_no_raw_key() -> None:
    raw = BY_NAME["key_space_update"]["decoded"]["payload"]
    record = published("key_space_update", SECRET)
    wire = json.dumps(record)
    for key in keys_of(raw):
        assert key not in wire
    assert record["payload"] == ",".join(
        [
            DIGESTER.digest("8c7b4f3e2a1d0c9b"),
            DIGESTER.digest("raw-unhashed-key-abc123") + ":resetQuota",
            DIGESTER.digest("5e9d9544a1dcd60001d0ed20c6d5bb2a") + ":hashed",
        ]
    )


def test_with_the_node_secret_the_digested_notice_still_verifies() -> None:
    record = published("key_space_update", SECRET)
    assert record["algorithm"] == 5
    assert verifies(record)


def test_a_forged_notice_is_not_re_signed() -> None:
    record = published("wrong_secret", SECRET)
    assert "raw-unhashed-key-abc123" not in record["payload"]
    assert record["signature"] == ""
    assert not verifies(record)


def test_without_the_node_secret_the_stale_signature_is_blanked() -> None:
    record = published("key_space_update")
    assert record["signature"] == ""
    assert "raw-unhashed-key-abc123" not in record["payload"]


def test_other_notices_are_forwarded_verbatim() -> None:
    for name in ("api_updated", "drl_heartbeat", "api_added_html_unicode", "tampered_payload"):
        record = published(name, SECRET)
        decoded = BY_NAME[name]["decoded"]
        assert {k: record[k] for k in decoded} == decoded


def test_every_credential_segment_is_digested_and_the_action_kept() -> None:
    payload = "api1:client9:s3cret:revoke_all_tokens,tok#hashed:api1:oAuthRevokeToken,old.new:UserKeyReset,"
    out = digest_keyspace_payload(payload, DIGESTER)
    for secret in ("s3cret", "client9", "tok#hashed", "old.new"):
        assert secret not in out
    entries = out.split(",")
    actions = [e.rsplit(":", 1)[-1] for e in entries[:3]]
    assert actions == ["revoke_all_tokens", "oAuthRevokeToken", "UserKeyReset"]
    assert entries[3] == ""  # an empty entry stays empty; the shape is kept


def test_digesting_twice_changes_nothing() -> None:
    once = digest_keyspace_payload(BY_NAME["key_space_update"]["decoded"]["payload"], DIGESTER)
    assert digest_keyspace_payload(once, KeyDigester(b"another-bridge")) == once
