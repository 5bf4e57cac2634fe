"""Which of several Tyk bridges on one Redis carries the cluster notifications.

Redis pub/sub delivers every notification to every subscriber. With several
bridges on one Redis (`--bridge-id`), each would publish each notification,
and `config_changes` would count it once per bridge. So every bridge with
notifications on subscribes, but only the holder of a lease in Redis
publishes; the others count what they set aside and stand by:

- the lease is one key (`lease_key(channel)`) whose value names its holder and
  its tenure (a token drawn at each taking), set with a time to live and
  renewed well before it runs out;
- a bridge that finds it free, or held under its own name, takes it (so a
  restarted bridge takes back its own lease at once, while another waits out
  the time to live after a crash);
- a bridge stopping cleanly gives it up, so another takes over within a second.

A bridge publishes a batch of notifications only after asking Redis, right
then, that the lease is still its own and in the same tenure as when the batch
began to arrive. A lease that vanished (a Redis restart, a failover, a DEL)
and was taken again starts a new tenure, so what arrived before it is set
aside: the two bridges never both publish a notification, whatever happens to
the key (short of the check and the send being minutes apart).

Notifications received during a handover (a crash: up to `ttl_s`) are set aside
by the standbys and counted: Redis pub/sub is at-most-once anyway, and a
single bridge loses what is published while it is down.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Final

import redis

from sinks.redact import redact

log = logging.getLogger(__name__)

LEASE_TTL_S: Final = 10.0
# A holder renews at a third of the ttl (two renewals may fail before it lapses); a standby looks
# once a second, so it takes over within about a second of a clean handover.
_HOLDER_RENEW_FRACTION: Final = 1 / 3
_STANDBY_RETRY_S: Final = 1.0

# The key's value: a tenure token (_TOKEN_HEX hex digits), a space, the holder's name.
_TOKEN_HEX: Final = 16
# ARGV: 1 this tenure's value, 2 the holder's name, 3 the ttl in ms. Returns 1: the same tenure
# goes on; 2: taken, a new tenure (the key was free, or held under our name in another tenure: a
# restart, or the key vanished and we took it again); 0: another bridge holds it.
_TAKE_OR_RENEW: Final = f"""
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
end
if current == false or string.sub(current, {_TOKEN_HEX + 2}) == ARGV[2] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
    return 2
end
return 0
"""
# Give the lease up only if it is still this tenure's.
_GIVE_UP: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
_SAME_TENURE, _NEW_TENURE = 1, 2


def lease_key(channel: str) -> str:
    return f"tykpulse:notifications-lease:{channel}"


class NotificationLease:
    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        holder: str,
        *,
        ttl_s: float = LEASE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.key = lease_key(channel)
        self.holder = holder
        self.ttl_s = ttl_s
        self.clock = clock
        self._value = self._new_value()
        self._valid_until = 0.0
        self._next_check = 0.0
        # when this bridge's current tenure began (None while it does not hold the lease)
        self._tenure_start: float | None = None
        self._was_holder: bool | None = None
        self._given_up = False

    def _new_value(self) -> str:
        return f"{secrets.token_hex(_TOKEN_HEX // 2)} {self.holder}"

    def held(self) -> bool:
        """Whether this bridge carries the notifications now, as last asked (asks Redis when due:
        this keeps the lease renewed, or looks for it free)."""
        if self._given_up:
            return False
        now = self.clock()
        if now >= self._next_check:
            self._check(now)
        return now < self._valid_until

    def held_since(self, since: float) -> bool:
        """Whether this bridge holds the lease now, asked of Redis now, in a tenure begun at or
        before `since` (a `clock()` reading). Called before publishing a batch: the batch arrived
        after `since`, and one that arrived before a handover was the previous holder's."""
        if self._given_up:
            return False
        now = self.clock()
        self._check(now)
        return now < self._valid_until and self._tenure_start is not None and self._tenure_start <= since

    def _check(self, sent_at: float) -> None:
        ttl_ms = max(1, int(self.ttl_s * 1000))
        if sent_at >= self._valid_until:
            self._value = self._new_value()  # not holding it: a taking is a new tenure
        answer = self.client.eval(_TAKE_OR_RENEW, 1, self.key, self._value, self.holder, ttl_ms)
        taken = answer in (_SAME_TENURE, _NEW_TENURE)
        if taken:
            if answer == _NEW_TENURE or sent_at >= self._valid_until:
                self._tenure_start = sent_at
            self._valid_until = sent_at + self.ttl_s
            self._next_check = sent_at + self.ttl_s * _HOLDER_RENEW_FRACTION
        else:
            self._valid_until = 0.0
            self._tenure_start = None
            self._next_check = sent_at + min(_STANDBY_RETRY_S, self.ttl_s * _HOLDER_RENEW_FRACTION)
        if taken != self._was_holder:
            self._was_holder = taken
            if taken:
                log.info("carrying the cluster notifications (lease %s held as %r)", self.key, self.holder)
            else:
                log.info(
                    "another bridge carries the cluster notifications (lease %s held by %r): standing by",
                    self.key,
                    self._current_holder(),
                )

    def _current_holder(self) -> str:
        value = self.client.get(self.key)
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return text[_TOKEN_HEX + 1 :]

    def give_up(self) -> None:
        """On a clean stop: free the lease for a standby at once (if this bridge holds it), for good."""
        self._given_up = True
        self._valid_until = 0.0
        self._tenure_start = None
        try:
            self.client.eval(_GIVE_UP, 1, self.key, self._value)
        except redis.RedisError as exc:
            log.warning(
                "could not give up the notifications lease (it lapses in %.0f s): %s", self.ttl_s, redact(exc)
            )
