"""Notification payloads that carry credentials cross the firehose with digests, never raw keys or secrets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from pipelines.bridges.key_digest import KeyDigester
from pipelines.bridges.tyk_notifications import (
    Notice,
    digest_configuration,
    digest_keyspace_payload,
    notice_from_wire,
)
from pipelines.firehose.protocol import NoticeRecord
from pipelines.security.notices import ALGORITHM_SHA256, NoticeVerifier, sign_sha256

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


def signed_wire(command: str, payload: str, signature: str | None = None) -> bytes:
    """A notification as a gateway signs it with the node secret (fact sheet §4.4)."""
    signature = sign_sha256(command, payload, SECRET) if signature is None else signature
    note = {"command": command, "payload": payload, "signature": signature, "algorithm": ALGORITHM_SHA256}
    return json.dumps(note).encode()


def bridged(wire: bytes) -> dict[str, Any]:
    notice = notice_from_wire(wire, 1, DIGESTER, SECRET)
    assert isinstance(notice, Notice)
    return notice.record


def test_a_user_key_reset_crosses_with_both_keys_digested_and_still_verifies() -> None:
    # Found by the real-data audit: only KeySpaceUpdateNotification was scrubbed, so the MDCB
    # user's old and new keys reached the firehose, the log and the archive verbatim.
    old, new = "0ldDashUserKey0123456789abcdef", "n3wDashUserKey0123456789abcdef"
    record = bridged(signed_wire("UserKeyReset", f"{old}.{new}:UserKeyReset"))
    assert old not in json.dumps(record)
    assert new not in json.dumps(record)
    assert record["payload"] == f"{DIGESTER.digest(f'{old}.{new}')}:UserKeyReset"
    assert verifies(record)


CONFIG = {
    "listen_port": 8080,
    "secret": "GATEWAY-API-SECRET",
    "node_secret": "NODE-SECRET",
    "storage": {"host": "redis", "password": "REDIS-PASSWORD"},
}


def config_payload(config: Any, **addressing: Any) -> str:
    return json.dumps({"Configuration": config, "ForHostname": "gw-a", "ForNodeID": "node-a", **addressing})


def test_a_pushed_configuration_crosses_as_its_digest_with_its_addressing_kept() -> None:
    for command in ("NoticeConfigUpdated", "NoticeGatewayConfigResponse"):
        record = bridged(signed_wire(command, config_payload(CONFIG, TimeStamp=1796596080)))
        for secret in ("GATEWAY-API-SECRET", "NODE-SECRET", "REDIS-PASSWORD"):
            assert secret not in json.dumps(record)
        payload = json.loads(record["payload"])
        assert payload["Configuration"].startswith("kd1:")
        assert {k: payload[k] for k in ("ForHostname", "ForNodeID", "TimeStamp")} == {
            "ForHostname": "gw-a",
            "ForNodeID": "node-a",
            "TimeStamp": 1796596080,
        }
        assert verifies(record)


def test_the_same_configuration_gives_the_same_digest_and_another_one_another() -> None:
    def digest_of(config: Any) -> str:
        return str(json.loads(digest_configuration(config_payload(config), DIGESTER))["Configuration"])

    assert digest_of(CONFIG) == digest_of(dict(CONFIG))
    assert digest_of(CONFIG) != digest_of({**CONFIG, "secret": "another"})


def test_a_configuration_payload_of_another_shape_is_digested_whole_or_kept_if_it_has_none() -> None:
    for payload in ("secret=GATEWAY-API-SECRET", "[1, 2]", "[" * 100_000):
        out = digest_configuration(payload, DIGESTER)
        assert out.startswith("kd1:")
        assert len(out) == len("kd1:") + 32
    no_configuration = json.dumps({"FromHostname": "gw-a", "TimeStamp": 1})
    assert digest_configuration(no_configuration, DIGESTER) == no_configuration
    once = digest_configuration(config_payload(CONFIG), DIGESTER)
    assert digest_configuration(once, KeyDigester(b"another-bridge")) == once  # chained bridges


def test_a_signature_in_any_script_is_a_wrong_signature_not_a_crash() -> None:
    # Found by the real-data audit: hmac.compare_digest raises TypeError on non-ASCII str, and the
    # bridge exited on such a notification (the worker too, and again at every restart).
    record = bridged(signed_wire("KeySpaceUpdateNotification", "abc123", signature="\u00e9" * 64))
    assert record["signature"] == ""
    assert "abc123" not in record["payload"]
    verifier = NoticeVerifier(SECRET)
    for signature in ("\u00e9" * 64, "\u4e2d", "\U0001f600"):
        notice = NoticeRecord("ApiUpdated", 1, "", signature, ALGORITHM_SHA256)
        assert verifier.verify(notice) == "SHA-256 signature mismatch"
