"""CurveZMQ for every socket tykpulse opens: keys, the ZAP allowlist, rotation.

Certificates are in ZeroMQ's standard format (zmq.auth: NAME.key holds the
public key, NAME.key_secret both). A socket that binds is the CURVE server:
its clients are admitted by a ZAP handler that checks their public key
against a directory of *.key files (the allowlist). A socket that connects is
a CURVE client and needs the server's public key.

Rotation without downtime: reload() re-reads the allowlist (the CLI calls it
on SIGHUP). A new key is admitted at its next handshake. ZAP only runs at
handshake, so when a key is removed `revision` goes up and every socket that
binds rebinds its endpoints (BoundEndpoints.refresh, called from the thread
that owns the socket): every client reconnects within ZeroMQ's reconnect
interval and the revoked one is refused. Messages in flight during that
moment are lost to everyone and show as sequence gaps.

Keys never reach the logs: decisions are logged with a short fingerprint
(SHA-256 of the public key), and pyzmq's authenticator, which logs raw keys
at debug level, is given a logger that drops its arguments.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pipelines.errors import ConfigurationError, EndpointError
from pipelines.firehose.endpoints import Endpoint, bind
from pipelines.observe.throttle import LogThrottle
from sinks.owned_directory import check_trusted_files, make_directories

if TYPE_CHECKING:  # settings imports the firehose modules, which use this one
    from pipelines.settings import CurveSettings

log = logging.getLogger(__name__)

ZAP_DOMAIN: Final = "tykpulse"
_REBIND_TIMEOUT_S: Final = 5.0


def fingerprint(public_key: bytes) -> str:
    """A short, non-reversible name for a public key, safe for logs."""
    return hashlib.sha256(public_key).hexdigest()[:12]


def generate_certificates(directory: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key (public) and NAME.key_secret (owner-only) into directory."""
    # Not with the umask's mode: under umask 000 the directory was 0777 and the public key 0666, so
    # any user could put a key pair of theirs in place, or their own public key for the allowlist.
    make_directories(Path(os.path.abspath(directory)))
    for suffix in (".key", ".key_secret"):
        if (directory / f"{name}{suffix}").exists():
            msg = f"{directory / (name + suffix)} exists; refusing to overwrite a key"
            raise ConfigurationError(msg)
    # pyzmq writes with the umask's mode (0644): made in a directory of our own (0700) and
    # owner-only before it is linked into place, the secret is never readable by anyone else,
    # not even for the moment between its write and a chmod (found by attack: an inotify watcher
    # opened it in that gap, 2 runs in 20).
    with tempfile.TemporaryDirectory(dir=directory, prefix=".keys-") as private:
        made_public, made_secret = zmq.auth.create_certificates(private, name)
        os.chmod(made_secret, 0o600)
        os.chmod(made_public, 0o644)
        placed = []
        try:
            for made in (made_public, made_secret):
                target = directory / Path(made).name
                os.link(made, target)  # never replaces a key that appeared meanwhile
                placed.append(target)
        except FileExistsError as exc:
            for target in placed:
                target.unlink()
            msg = f"{exc.filename2 or exc.filename} exists; refusing to overwrite a key"
            raise ConfigurationError(msg) from None
    return placed[0], placed[1]


def _load(path: str, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        msg = f"cannot read CURVE certificate {path}: {type(exc).__name__}"
        raise ConfigurationError(msg) from None
    if not stat.S_ISREG(mode):  # a FIFO would hold the start in open() for a writer that never comes
        msg = f"CURVE certificate {path} is not a regular file"
        raise ConfigurationError(msg)
    if need_secret and mode & 0o077:
        # warned, not refused: container secrets are often mounted readable by all (0444, 0644)
        log.warning(
            "CURVE secret key %s is readable by group or others (mode %o): chmod 600 it", path, mode & 0o777
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        msg = f"cannot read CURVE certificate {path}: {type(exc).__name__}"
        raise ConfigurationError(msg) from None
    if need_secret and not secret:
        msg = f"{path} holds no secret key: give the NAME.key_secret file"
        raise ConfigurationError(msg)
    return public, secret


class _ArgumentFreeLog:
    """A logger for pyzmq's authenticator: its messages without their arguments (which hold keys)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger

    def debug(self, *_: Any, **__: Any) -> None:
        pass

    def info(self, *_: Any, **__: Any) -> None:
        pass

    def warning(self, msg: str, *_: Any, **__: Any) -> None:
        self._log.warning("zap: %s", msg.split("%", 1)[0].strip())

    def error(self, msg: str, *_: Any, **__: Any) -> None:
        self._log.error("zap: %s", msg.split("%", 1)[0].strip())

    def exception(self, msg: str, *_: Any, **__: Any) -> None:
        self.error(msg)


class Allowlist:
    """The client public keys admitted by ZAP, read from a directory of *.key files."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.keys: frozenset[bytes] = frozenset()
        self.admitted = 0
        self.denied = 0
        self._throttle = LogThrottle()
        self.reload()

    def reload(self) -> tuple[int, int]:
        """Re-read the directory; returns (added, removed). A broken directory keeps the old list."""
        try:
            # a key another user could place or change there would be admitted (PermissionError)
            check_trusted_files(Path(self.directory), "*.key")
            keys = frozenset(zmq.auth.load_certificates(self.directory))
        except (OSError, ValueError) as exc:
            detail = str(exc) if isinstance(exc, PermissionError) else type(exc).__name__
            log.error(
                "CURVE allowlist not reloaded dir=%s error=%s (keeping %d keys)",
                self.directory,
                detail,
                len(self.keys),
            )
            return 0, 0
        added, removed = len(keys - self.keys), len(self.keys - keys)
        self.keys = keys
        log.info(
            "CURVE allowlist dir=%s keys=%d added=%d removed=%d", self.directory, len(keys), added, removed
        )
        return added, removed

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP decision for a client's z85 public key (called on the authenticator thread)."""
        allowed = key in self.keys
        if allowed:
            self.admitted += 1
        else:
            self.denied += 1
        if self._throttle.allow(allowed) is not None:
            log.log(
                logging.INFO if allowed else logging.WARNING,
                "CURVE client %s fingerprint=%s admitted=%d denied=%d",
                "admitted" if allowed else "refused (not in allowlist)",
                fingerprint(key),
                self.admitted,
                self.denied,
            )
        return allowed


class CurveSession:
    """CURVE for the sockets of one ZeroMQ context: own keys, peer key, ZAP allowlist."""

    def __init__(self, context: zmq.Context[Any], settings: CurveSettings) -> None:
        if settings.curve_secret_key is None:
            msg = "CURVE needs --curve-secret-key (the NAME.key_secret file)"
            raise ConfigurationError(msg)
        public, secret = _load(settings.curve_secret_key, need_secret=True)
        self.public_key = public
        self._secret_key: bytes = secret or b""
        self.server_key = (
            _load(settings.curve_server_key, need_secret=False)[0] if settings.curve_server_key else None
        )
        self.allowlist = Allowlist(settings.curve_allow) if settings.curve_allow else None
        self.revision = 0
        self._lock = threading.Lock()
        self._auth: ThreadAuthenticator | None = None
        if self.allowlist is not None:
            self._auth = ThreadAuthenticator(context, log=_ArgumentFreeLog(log))
            self._auth.start()
            self._auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self.allowlist)
        log.info(
            "CURVE on fingerprint=%s server_key=%s allowlist=%s",
            fingerprint(public),
            "set" if self.server_key else "none",
            settings.curve_allow or "none",
        )

    def secure(self, socket: zmq.Socket[Any], endpoints: Sequence[Endpoint]) -> None:
        """Configure a socket before it binds or connects (all its endpoints must agree)."""
        binds = {e.bind for e in endpoints}
        if len(binds) > 1:
            msg = "with CURVE a socket either binds (server) or connects (client), not both"
            raise ConfigurationError(msg)
        socket.curve_secretkey = self._secret_key
        socket.curve_publickey = self.public_key
        if binds == {True}:
            if self.allowlist is None:
                msg = "a CURVE socket that binds needs --curve-allow DIR (the client keys to admit)"
                raise ConfigurationError(msg)
            socket.zap_domain = ZAP_DOMAIN.encode()
            socket.curve_server = True
        else:
            if self.server_key is None:
                msg = "a CURVE socket that connects needs --curve-server-key (the server's NAME.key)"
                raise ConfigurationError(msg)
            socket.curve_serverkey = self.server_key

    def reload(self) -> tuple[int, int]:
        """Re-read the allowlist; a removal makes binding sockets rebind (revision goes up)."""
        if self.allowlist is None:
            return 0, 0
        with self._lock:
            added, removed = self.allowlist.reload()
            if removed:
                self.revision += 1
        return added, removed

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


class BoundEndpoints:
    """The concrete addresses a socket bound, so it can drop every connection by rebinding."""

    def __init__(self, socket: zmq.Socket[Any], curve: CurveSession | None) -> None:
        self.socket = socket
        self.curve = curve
        self.addresses: list[str] = []
        self._revision = curve.revision if curve is not None else 0

    def add(self, address: str) -> None:
        self.addresses.append(address)

    def refresh(self) -> bool:
        """Rebind if keys were revoked since the last call (call from the socket's own thread)."""
        if self.curve is None or self.curve.revision == self._revision or not self.addresses:
            return False
        self._revision = self.curve.revision
        for address in self.addresses:
            self.socket.unbind(address)
        for address in self.addresses:
            self._bind_again(address)
        log.info("rebound after key revocation endpoints=%s", self.addresses)
        return True

    def _bind_again(self, address: str) -> None:
        # unbind completes on ZeroMQ's I/O thread: the port is free a moment later
        deadline = time.monotonic() + _REBIND_TIMEOUT_S
        while True:
            try:
                bind(self.socket, address)  # an ipc:// file owner-only again, as when first bound
            except zmq.ZMQError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise EndpointError(address, f"rebinding after revocation: {exc}") from exc
                time.sleep(0.01)
            else:
                return
