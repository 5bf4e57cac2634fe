"""Verification of signed cluster notices, with Tyk's own schemes (docs/protocol.md).

    algorithm 5        signature = lowercase hex SHA-256 of command + payload + node_secret
    algorithm 0/absent signature = base64 RSA PKCS#1 v1.5 over SHA-256 of payload only,
                       checked with the dashboard's public key (PEM)

As in Tyk's gateway (isPayloadSignatureValid): with verification on, a
notice that no configured scheme can verify is rejected (an RSA notice with no
public key configured, an unknown algorithm), and NoticeGatewayConfigResponse
is not checked (gateways ignore it). A rejected notice is counted with reason
bad_signature and never reaches config_changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pipelines.errors import ConfigurationError
from pipelines.firehose.codec import DecodedMessage, Rejection
from pipelines.firehose.protocol import NoticeRecord, RejectReason

log = logging.getLogger(__name__)

ALGORITHM_SHA256: Final = 5
ALGORITHM_RSA: Final = 0
UNCHECKED_COMMANDS: Final = frozenset({"NoticeGatewayConfigResponse"})


def sign_sha256(command: str, payload: str, secret: str) -> str:
    """Tyk's algorithm-5 signature."""
    return hashlib.sha256((command + payload + secret).encode()).hexdigest()


def sha256_signature_valid(command: str, payload: str, secret: str, signature: str) -> bool:
    """Whether `signature` is the algorithm-5 signature of command + payload (constant time).

    Compared as bytes: hmac.compare_digest refuses str holding non-ASCII, and a signature
    is whatever the sender wrote (a forged one in any script is simply wrong).
    """
    expected = sign_sha256(command, payload, secret).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


def load_public_key(path: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        msg = f"cannot read the notice public key {path}: {type(exc).__name__}"
        raise ConfigurationError(msg) from None
    if not isinstance(key, rsa.RSAPublicKey):
        msg = f"{path} is not an RSA public key"
        raise ConfigurationError(msg)
    return key


class NoticeVerifier:
    """A notice_check for the Ingestor: keeps the notices that verify, rejects the rest."""

    def __init__(self, node_secret: str = "", public_key: rsa.RSAPublicKey | None = None) -> None:
        self._secret = node_secret
        self._public_key = public_key

    def verify(self, notice: NoticeRecord) -> str | None:
        """None when the notice is good; else why not (never containing the secret)."""
        if notice.command in UNCHECKED_COMMANDS:
            return None
        if notice.algorithm == ALGORITHM_SHA256:
            if not self._secret:
                return "algorithm 5 but no node secret configured"
            valid = sha256_signature_valid(notice.command, notice.payload, self._secret, notice.signature)
            return None if valid else "SHA-256 signature mismatch"
        if notice.algorithm == ALGORITHM_RSA:
            return self._verify_rsa(notice)
        return f"unknown algorithm {notice.algorithm}"

    def _verify_rsa(self, notice: NoticeRecord) -> str | None:
        if self._public_key is None:
            return "RSA-signed but no public key configured"
        try:
            signature = base64.b64decode(notice.signature, validate=True)
            self._public_key.verify(signature, notice.payload.encode(), padding.PKCS1v15(), hashes.SHA256())
        except (binascii.Error, ValueError):
            return "RSA signature is not base64"
        except InvalidSignature:
            return "RSA signature mismatch"
        return None

    def __call__(self, message: DecodedMessage) -> list[Rejection]:
        kept: list[Any] = []
        rejections = []
        for notice in message.structs:
            problem = self.verify(notice)
            if problem is None:
                kept.append(notice)
            else:
                rejections.append(
                    Rejection(
                        RejectReason.BAD_SIGNATURE, f"{notice.command}: {problem}", message.envelope.node
                    )
                )
        if rejections:
            message.records = kept
        return rejections


def notice_check(node_secret: str, public_key_path: str | None) -> NoticeVerifier | None:
    """The verifier the settings ask for, or None (notices accepted unverified, logged once here)."""
    if not node_secret and not public_key_path:
        log.warning(
            "notice signatures are NOT verified: set --node-secret (TYKPULSE_NODE_SECRET) and/or "
            "--notice-public-key to reject forged cluster notices"
        )
        return None
    public_key = load_public_key(public_key_path) if public_key_path else None
    log.info(
        "notice signatures verified: sha256=%s rsa=%s",
        "on" if node_secret else "off",
        "on" if public_key is not None else "off",
    )
    return NoticeVerifier(node_secret, public_key)
