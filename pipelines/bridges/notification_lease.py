"""Which of several Tyk bridges on one Redis carries the cluster notifications.

Redis pub/sub delivers every notification to every subscriber. With several
bridges on one Redis (`--bridge-id`), each would publish each notification,
and `config_changes` would count it once per bridge. So every bridge with
notifications on subscribes, but only the holder of a lease in Redis
publishes; the others count what they set aside and stand by:

- the lease is one key (`lease_key(channel)`) whose value names its holder,
  set with a time to live and renewed well before it runs out;
- a bridge that finds it free, or holding its own name, takes it (so a
  restarted bridge takes back its own lease at once, while another waits out
  the time to live after a crash);
- a bridge stopping cleanly gives it up, so another takes over within a second.

A holder counts itself the holder only until `ttl_s` after it *sent* its last
successful renewal, which is before Redis started that time to live: it stops
publishing no later than Redis lets another bridge take over, so two bridges
never both publish (within clock-rate drift over one ttl).

Notifications received during a handover (a crash: up to `ttl_s`) are set aside
by the standbys and counted: Redis pub/sub is at-most-once anyway, and a
single bridge loses what is published while it is down.
"""

from __future__ import annotations

import logging
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

# Take the lease if it is free or already ours; 1 if we hold it now.
_TAKE_OR_RENEW: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
end
return 0
"""
# Give the lease up only if it is still ours.
_GIVE_UP: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


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
        self._valid_until = 0.0
        self._next_check = 0.0
        # when this bridge's current tenure began (None while it does not hold the lease)
        self._tenure_start: float | None = None
        self._was_holder: bool | None = None
        self._given_up = False

    def held(self) -> bool:
        """Whether this bridge carries the notifications now (asks Redis only when due)."""
        if self._given_up:
            return False
        now = self.clock()
        if now >= self._next_check:
            self._check(now)
        return now < self._valid_until

    def held_since(self, since: float) -> bool:
        """Whether this bridge has held the lease without a break since `since` (a `clock()` reading).

        A batch of notifications is published only if the lease was held the whole time they
        arrived: one that arrived before a handover was the previous holder's to publish.
        """
        return self.held() and self._tenure_start is not None and self._tenure_start <= since

    def _check(self, sent_at: float) -> None:
        ttl_ms = max(1, int(self.ttl_s * 1000))
        taken = self.client.eval(_TAKE_OR_RENEW, 1, self.key, self.holder, ttl_ms) == 1
        if taken:
            if sent_at >= self._valid_until:  # free until now, or lapsed: a new tenure
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
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

    def give_up(self) -> None:
        """On a clean stop: free the lease for a standby at once (if this bridge holds it), for good."""
        self._given_up = True
        self._valid_until = 0.0
        self._tenure_start = None
        try:
            self.client.eval(_GIVE_UP, 1, self.key, self.holder)
        except redis.RedisError as exc:
            log.warning(
                "could not give up the notifications lease (it lapses in %.0f s): %s", self.ttl_s, redact(exc)
            )
