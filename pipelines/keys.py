"""Hashing of API keys: raw keys never leave the process that receives them.

A key becomes a 64-bit keyed BLAKE2b digest. Every worker that writes to the
same database must use the same salt (TYKPULSE_KEY_HASH_SALT) so that distinct
counts merge across workers; when none is set, load_key() generates one per
deployment (see docs/operations.md). The cache (pipelines.digest_cache) bounds
the cost to one hash per distinct key, not per record.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Final, TypeVar

from pydantic import SecretStr

from pipelines.digest_cache import DigestCache
from pipelines.errors import ConfigurationError
from pipelines.settings import TykBridgeSettings, TykWebhookSettings, WorkerSettings
from sinks.owned_directory import make_directories

BridgeKeySettings = TypeVar("BridgeKeySettings", TykBridgeSettings, TykWebhookSettings)


class KeyHasher:
    def __init__(self, salt: bytes = b"") -> None:
        if len(salt) > 64:
            msg = "key hash salt must be at most 64 bytes"
            raise ValueError(msg)
        self._salt = salt
        self.cache: DigestCache[int] = DigestCache()

    def hash(self, key: str) -> int:
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8, key=self._salt).digest()
        value = int.from_bytes(digest, "little")
        self.cache.keep(key, value)
        return value

    def hash_many(self, keys: list[str]) -> list[int | None]:
        """Hashes, with None for empty keys (keyless APIs carry no key)."""
        return [self.hash(k) if k else None for k in keys]


# -- the per-deployment key --------------------------------------------------------------------
#
# An empty key makes the digests a public function of the API key: equal across
# every deployment, so anyone can test a guessed key against them. When no key
# is configured, one is generated at first start and kept beside the data.

KEY_FILE_NAME: Final = "key-digest.secret"
_KEY_BYTES: Final = 32
_OPEN_TO_OTHERS: Final = 0o077
# a key is at most 64 bytes: what is read of a key file, to tell one that holds more
_KEY_FILE_MAX_BYTES: Final = 4096
_log = logging.getLogger(__name__)


def load_key(
    configured: SecretStr, explicit: bool, key_file: Path, env_var: str, *, create: bool = True
) -> bytes:
    """The key a command digests with: the configured one, else the deployment's key file.

    `explicit` says the setting was given (flag or environment), so that an empty
    key chosen on purpose is kept (with a warning) rather than replaced.
    `create=False` is for commands that must reproduce existing digests (rebuild):
    a missing key file is an error there, since a fresh key would digest differently.
    """
    value = configured.get_secret_value()
    if value:
        return value.encode()
    if explicit:
        _log.warning("%s is set but empty: key digests are a public hash, equal in every deployment", env_var)
        return b""
    if not create:
        return _read_existing(key_file, env_var).encode()
    return _read_or_create(key_file, env_var).encode()


def _read_existing(path: Path, env_var: str) -> str:
    path = _followed(path)
    if not path.exists():
        msg = (
            f"no key file {path}: point --key-hash-salt-file at the workers' key file, or set {env_var} "
            "to its contents (a new key would not reproduce the stored digests)"
        )
        raise ConfigurationError(msg)
    return _read(path)


def _read_or_create(path: Path, env_var: str) -> str:
    path = _followed(path)
    make_directories(path.parent)  # beside the data: a level open to others is refused there
    if path.exists():
        return _read(path)
    # Written whole to a file of its own, then linked into place: link() fails if the file exists,
    # so of two processes starting together one creates it and the other reads it, and no process
    # ever sees it created but not yet written (an empty key file is refused).
    key = secrets.token_hex(_KEY_BYTES)
    fd, draft = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.link(draft, path)
    except FileExistsError:
        return _read(path)
    finally:
        os.unlink(draft)
    _log.info(
        "generated the key of API-key digests in %s (mode 0600); every worker or bridge feeding the same "
        "database must use the same key: copy that file to their key file, or set %s to its contents",
        path,
        env_var,
    )
    return key


def _followed(path: Path) -> Path:
    """`path` with its links followed; ConfigurationError if the key file is a link another user made."""
    path = path.expanduser()
    try:
        entry = path.lstat()
    except FileNotFoundError:
        return path.resolve()
    if stat.S_ISLNK(entry.st_mode) and entry.st_uid not in (0, os.getuid()):
        msg = f"key file {path} is a link of uid {entry.st_uid}: refusing a key another user chose"
        raise ConfigurationError(msg)
    return path.resolve()


def _read(path: Path) -> str:
    # Non-blocking: a FIFO planted under the name opens at once and is refused below, instead of
    # holding the start in open() for a writer that never comes (SIGTERM did not end that wait).
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        msg = f"key file {path} cannot be read: {exc.strerror}"
        raise ConfigurationError(msg) from None
    with os.fdopen(fd, "rb") as stream:
        _check_owner(path, os.fstat(fd))
        data = stream.read(_KEY_FILE_MAX_BYTES + 1)
    try:
        key = data.decode().strip()
    except UnicodeDecodeError:
        msg = f"key file {path} is not text: write the shared key into it"
        raise ConfigurationError(msg) from None
    if not key:
        msg = f"key file {path} is empty; delete it to generate a new key, or write the shared key into it"
        raise ConfigurationError(msg)
    if len(key.encode()) > 64:
        msg = f"key file {path} holds more than 64 bytes"
        raise ConfigurationError(msg)
    return key


def _check_owner(path: Path, info: os.stat_result) -> None:
    """Refuse a key file another user could have chosen: the digests' key is known to whoever
    wrote it, and with it every archived digest can be tested against guessed API keys. Found by
    attack: beside `--wal-dir /tmp/wal` the key file is /tmp's, where any user may create it first."""
    me = os.getuid()
    if not stat.S_ISREG(info.st_mode):
        msg = f"key file {path} is not a regular file: refusing it"
        raise ConfigurationError(msg)
    if info.st_uid not in (0, me) or (info.st_uid != me and info.st_nlink > 1):
        # a second link to root's file is someone's choice too (hard links to files one cannot
        # write, where the kernel allows them): /etc/timezone would make a public key
        msg = (
            f"key file {path} belongs to uid {info.st_uid}, not to this user ({me}): "
            "refusing a key another user chose"
        )
        raise ConfigurationError(msg)
    if info.st_mode & 0o022:
        msg = (
            f"key file {path} may be written by group or others (mode {info.st_mode & 0o777:o}): chmod 600 it"
        )
        raise ConfigurationError(msg)
    if info.st_mode & _OPEN_TO_OTHERS:
        _log.warning(
            "key file %s is readable by group or others (mode %o): chmod 600 it", path, info.st_mode & 0o777
        )


def worker_with_key(worker: WorkerSettings, default_dir: Path, *, create: bool = True) -> WorkerSettings:
    """`worker` with its key resolved (load_key), so every later use of the salt sees it.

    `default_dir` comes from pipelines.wal.build.key_directory for every command
    (run, worker, rebuild), so that they find the same file on the same data.
    """
    key_file = Path(worker.key_hash_salt_file) if worker.key_hash_salt_file else default_dir / KEY_FILE_NAME
    explicit = "key_hash_salt" in worker.model_fields_set
    key = load_key(worker.key_hash_salt, explicit, key_file, "TYKPULSE_KEY_HASH_SALT", create=create)
    return worker.model_copy(update={"key_hash_salt": SecretStr(key.decode())})


def bridge_with_key(settings: BridgeKeySettings) -> BridgeKeySettings:
    """Bridge settings with their digest key resolved (load_key)."""
    explicit = "key_hash_salt" in settings.model_fields_set
    key = load_key(
        settings.key_hash_salt, explicit, Path(settings.key_hash_salt_file), "TYKPULSE_KEY_HASH_SALT"
    )
    return settings.model_copy(update={"key_hash_salt": SecretStr(key.decode())})
