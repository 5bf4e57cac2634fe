"""Signed notices against Tyk's own fixtures: algorithm 5 (SHA-256 + node secret) and RSA (algorithm 0)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pipelines.firehose.protocol import NoticeRecord, RejectReason
from pipelines.ingest import Ingestor
from pipelines.rollups import compute
from pipelines.security.notices import NoticeVerifier, load_public_key, notice_check, sign_sha256
from tests.conftest import T0_NS
from tests.helpers import analytics, message

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parents[1] / "fixtures" / "tyk"
NOTIFICATIONS = json.loads((FIXTURES / "notifications.json").read_text(encoding="utf-8"))
SECRET = NOTIFICATIONS["node_secret"]
PUBLIC_KEY = str(FIXTURES / NOTIFICATIONS["rsa_public_key_file"])


def notice_message(note: dict[str, Any], seq: int) -> list[bytes]:
    wire = json.loads(note["wire"])  # exactly what Tyk PUBLISHes, plus the timestamp a bridge adds
    return message(f"tyk.notice.{wire['command']}", [{**wire, "timestamp": T0_NS}], seq=seq)


def run(check: NoticeVerifier | None) -> tuple[Ingestor, list[str]]:
    ingestor = Ingestor(clock=lambda: T0_NS, notice_check=check)
    for seq, note in enumerate(NOTIFICATIONS["messages"]):
        ingestor.ingest(notice_message(note, seq), received_ns=T0_NS)
    batch = ingestor.take()
    return ingestor, batch.notices["command"].to_list()


def test_with_secret_and_public_key_exactly_the_valid_fixtures_are_kept() -> None:
    ingestor, commands = run(NoticeVerifier(SECRET, load_public_key(PUBLIC_KEY)))
    valid = [json.loads(n["wire"])["command"] for n in NOTIFICATIONS["messages"] if n["valid"]]
    invalid = [n for n in NOTIFICATIONS["messages"] if not n["valid"]]
    assert sorted(commands) == sorted(valid)
    assert ingestor.stats.rejected == {RejectReason.BAD_SIGNATURE.value: len(invalid)}
    assert len(invalid) == 3  # two SHA-256 fixtures and one RSA fixture are forged


def test_with_secret_only_rsa_notices_are_rejected_as_tyk_does() -> None:
    ingestor, commands = run(NoticeVerifier(SECRET, None))
    sha_valid = [
        json.loads(n["wire"])["command"]
        for n in NOTIFICATIONS["messages"]
        if n["valid"] and n["scheme"] == "sha256"
    ]
    assert sorted(commands) == sorted(sha_valid)
    rsa = sum(n["scheme"] == "rsa" for n in NOTIFICATIONS["messages"])
    sha_bad = sum(n["scheme"] == "sha256" and not n["valid"] for n in NOTIFICATIONS["messages"])
    assert ingestor.stats.rejected[RejectReason.BAD_SIGNATURE.value] == rsa + sha_bad


def test_a_wrong_secret_rejects_every_sha256_notice() -> None:
    ingestor, commands = run(NoticeVerifier("not-the-secret", load_public_key(PUBLIC_KEY)))
    assert sorted(commands) == ["PolicyChanged"]  # only the valid RSA one
    assert ingestor.stats.rejected[RejectReason.BAD_SIGNATURE.value] == len(NOTIFICATIONS["messages"]) - 1


def test_without_verification_every_notice_is_accepted_and_that_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        check = notice_check("", None)
    assert check is None
    assert [r.getMessage() for r in caplog.records if "NOT verified" in r.getMessage()]
    ingestor, commands = run(check)
    assert len(commands) == len(NOTIFICATIONS["messages"])
    assert not ingestor.stats.rejected


def test_bad_signature_rejects_only_the_forged_record_of_a_message() -> None:
    good = {"command": "ApiUpdated", "payload": "", "algorithm": 5, "timestamp": T0_NS}
    good["signature"] = sign_sha256("ApiUpdated", "", SECRET)
    forged = {**good, "payload": "tampered"}
    ingestor = Ingestor(clock=lambda: T0_NS, notice_check=NoticeVerifier(SECRET))
    ingestor.ingest(message("tyk.notice.ApiUpdated", [good, forged, good]), received_ns=T0_NS)
    batch = ingestor.take()
    assert batch.notices.height == 2
    assert batch.rejections.to_dicts() == [
        {
            "window_start": T0_NS // 10**9 // 60 * 60,
            "node_id": "gw1",
            "reason": "bad_signature",
            "rejected": 1,
        }
    ]


def test_unknown_algorithm_and_non_base64_rsa_are_rejected_not_raised() -> None:
    verifier = NoticeVerifier(SECRET, load_public_key(PUBLIC_KEY))
    base = {"command": "ApiUpdated", "payload": "x", "timestamp": T0_NS}
    ingestor = Ingestor(clock=lambda: T0_NS, notice_check=verifier)
    frames = message(
        "tyk.notice.ApiUpdated",
        [{**base, "algorithm": 7, "signature": "aa"}, {**base, "algorithm": 0, "signature": "%%%not base64"}],
    )
    ingestor.ingest(frames, received_ns=T0_NS)
    assert ingestor.take().notices.height == 0
    assert ingestor.stats.rejected[RejectReason.BAD_SIGNATURE.value] == 2


def test_the_gateway_config_response_is_not_checked_like_in_tyk() -> None:
    verifier = NoticeVerifier(SECRET)
    assert verifier.verify(NoticeRecord("NoticeGatewayConfigResponse", T0_NS, "{}", "", 5)) is None
    assert verifier.verify(NoticeRecord("ApiUpdated", T0_NS, "{}", "", 5)) is not None


def test_the_secret_never_appears_in_rejection_details_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        ingestor, _ = run(notice_check(SECRET, PUBLIC_KEY))
    assert ingestor.stats.rejected
    assert SECRET not in caplog.text


@pytest.mark.parametrize("command", ["NoticeGatewayConfigResponse", "NoticeGatewayDRLNotification"])
@pytest.mark.parametrize("payload", ["[" * 100_000 + "]" * 100_000, '{"ID":' + "[" * 100_000, '{"ID": 1}'])
def test_a_payload_that_does_not_name_a_gateway_is_counted_under_its_publisher(
    command: str, payload: str
) -> None:
    # Found by attack: JSON nested 100 000 deep made the payload's parse raise RecursionError in the
    # flush, so the worker stopped, and again at every restart as the log replayed the notice.
    ingestor = Ingestor(clock=lambda: T0_NS)
    ingestor.ingest(
        message("tyk.analytics", [analytics(T0_NS)] * 5, node="gw-good", seq=0), received_ns=T0_NS
    )
    record = {"command": command, "timestamp": T0_NS, "payload": payload, "signature": "", "algorithm": 5}
    ingestor.ingest(message(f"tyk.notice.{command}", [record], node="bridge-1", seq=0), received_ns=T0_NS)
    batch = ingestor.take()
    assert batch.notices["node_id"].to_list() == ["bridge-1"]
    assert batch.analytics.height == 5
    assert compute(batch)["traffic"].column("requests").to_pylist() == [5]


def test_a_signature_in_any_script_is_rejected_as_bad_not_raised() -> None:
    # Found by the real-data audit: hmac.compare_digest(str, str) raised TypeError on a non-ASCII
    # signature, which stopped the worker, and again at every restart as the log replayed it.
    good = {"command": "ApiUpdated", "payload": "", "algorithm": 5, "timestamp": T0_NS}
    good["signature"] = sign_sha256("ApiUpdated", "", SECRET)
    forged = [{**good, "signature": "\u00e9" * 64}, {**good, "algorithm": 0, "signature": "\u4e2d"}]
    ingestor = Ingestor(clock=lambda: T0_NS, notice_check=NoticeVerifier(SECRET, load_public_key(PUBLIC_KEY)))
    ingestor.ingest(message("tyk.notice.ApiUpdated", [good, *forged, good]), received_ns=T0_NS)
    assert ingestor.take().notices.height == 2
    assert ingestor.stats.rejected == {RejectReason.BAD_SIGNATURE.value: 2}


def test_a_failing_notice_check_refuses_the_notices_and_the_worker_goes_on() -> None:
    def failing(_: Any) -> list[Any]:
        msg = "verifier bug"
        raise RuntimeError(msg)

    ingestor = Ingestor(clock=lambda: T0_NS, notice_check=failing)
    note = {"command": "ApiUpdated", "payload": "", "algorithm": 5, "timestamp": T0_NS, "signature": ""}
    ingestor.ingest(message("tyk.notice.ApiUpdated", [note, note], seq=0), received_ns=T0_NS)
    ingestor.ingest(message("tyk.analytics", [analytics(T0_NS)] * 3, seq=1), received_ns=T0_NS)
    batch = ingestor.take()
    assert batch.notices.height == 0
    assert batch.analytics.height == 3
    assert ingestor.stats.rejected == {RejectReason.INTERNAL_ERROR.value: 2}
