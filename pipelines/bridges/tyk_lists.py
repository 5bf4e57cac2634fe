"""Tyk's analytics lists in Redis and the bridge's atomic move out of them.

Key names (fact sheet §2.1): the gateway RPUSHes to `analytics-tyk-system-analytics`,
or to `_0`..`_9` with `enable_multiple_analytics_keys`, each with a `_protobuf`
suffix when `serializer_type` is protobuf: 22 lists in all, drained alike.

The move is one Lua script, so it is atomic: per list, up to the remaining
budget of elements are copied to the list's processing list
(`<key>:tykpulse-processing[:<bridge_id>]`) and trimmed from the source. It
returns what it moved or, on the first move of a run (`recover=True`), the
whole processing list: whatever a crashed run left there is returned and
published again. A processing list is released from the front (`LTRIM`), one
published batch at a time, so batches published later stay parked until their
own release. When a Pump copy prefix is set, each moved element is also pushed,
in the same script, to `<copy prefix>tyk-system-analytics...` for a Tyk Pump
configured with that `redis_key_prefix` (see docs/tyk.md).

Redis Cluster: the script touches several keys that need not share a slot, so
this module supports a single Redis (or a primary with replicas) only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Final

import redis

ANALYTICS_KEY_NAME: Final = "tyk-system-analytics"
GATEWAY_KEY_PREFIX: Final = "analytics-"
PROTOBUF_SUFFIX: Final = "_protobuf"
PROCESSING_SUFFIX: Final = ":tykpulse-processing"
ENCODING_MSGPACK: Final = "msgpack"
ENCODING_PROTOBUF: Final = "protobuf"

# KEYS: n sources, n processing lists, then n copies (only when ARGV[3] == "1").
# ARGV: [budget, n, tee, copy_ttl_s, recover]. Returns n entries {moved, elements...}: the
# elements moved, or with recover == "1" the whole processing list (older elements first).
# An entry {-1} is a list skipped because one of its keys holds another type: a failing call
# would abort the script after the earlier lists' writes, and leave every list undrained.
# RPUSH in chunks keeps unpack() under Lua's C-stack limit (~8000 values).
_MOVE_LUA: Final = """
local budget = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local tee = ARGV[3] == '1'
local ttl = tonumber(ARGV[4])
local recover = ARGV[5] == '1'
local function listlike(key)
  local kind = redis.call('TYPE', key).ok
  return kind == 'list' or kind == 'none'
end
local out = {}
for i = 1, n do
  if not (listlike(KEYS[i]) and listlike(KEYS[n + i]) and (not tee or listlike(KEYS[2 * n + i]))) then
    out[i] = {-1}
  else
    local items = {}
    local moved = 0
    if budget > 0 then
      items = redis.call('LRANGE', KEYS[i], 0, budget - 1)
      moved = #items
      for j = 1, moved, 1000 do
        local last = math.min(j + 999, moved)
        redis.call('RPUSH', KEYS[n + i], unpack(items, j, last))
        if tee then redis.call('RPUSH', KEYS[2 * n + i], unpack(items, j, last)) end
      end
      if moved > 0 then
        redis.call('LTRIM', KEYS[i], moved, -1)
        if tee and ttl > 0 and redis.call('TTL', KEYS[2 * n + i]) == -1 then
          redis.call('EXPIRE', KEYS[2 * n + i], ttl)
        end
        budget = budget - moved
      end
    end
    if recover then items = redis.call('LRANGE', KEYS[n + i], 0, -1) end
    table.insert(items, 1, moved)
    out[i] = items
  end
end
return out
"""


@dataclasses.dataclass(frozen=True, slots=True)
class AnalyticsList:
    """One list Tyk writes, with where the bridge parks and copies its elements."""

    key: str
    encoding: str
    processing: str
    copy: str | None = None


def analytics_lists(
    key_prefix: str = GATEWAY_KEY_PREFIX, bridge_id: str = "", copy_prefix: str = ""
) -> list[AnalyticsList]:
    """The 22 lists a gateway may write, msgpack first, in Tyk Pump's order."""
    processing_suffix = PROCESSING_SUFFIX + (f":{bridge_id}" if bridge_id else "")
    lists = []
    for encoding, serializer_suffix in ((ENCODING_MSGPACK, ""), (ENCODING_PROTOBUF, PROTOBUF_SUFFIX)):
        for shard in ["", *(f"_{i}" for i in range(10))]:
            name = ANALYTICS_KEY_NAME + shard + serializer_suffix
            lists.append(
                AnalyticsList(
                    key=key_prefix + name,
                    encoding=encoding,
                    processing=key_prefix + name + processing_suffix,
                    copy=copy_prefix + name if copy_prefix else None,
                )
            )
    return lists


@dataclasses.dataclass(slots=True)
class HeldBatch:
    """Elements parked in one processing list by a move: `recovered` older ones, then `moved` new ones."""

    source: AnalyticsList
    elements: list[bytes]
    moved: int

    @property
    def recovered(self) -> int:
        return len(self.elements) - self.moved


class AnalyticsListStore:
    """The Redis operations of the drain: move (atomic, with recovery) and release."""

    def __init__(self, client: redis.Redis, lists: Sequence[AnalyticsList], *, copy_ttl_s: int = 60) -> None:
        if not lists:
            msg = "no analytics lists to drain"
            raise ValueError(msg)
        tee = {lst.copy is not None for lst in lists}
        if len(tee) != 1:
            msg = "either every list has a copy key or none has"
            raise ValueError(msg)
        self.client = client
        self.lists = list(lists)
        self.tee = tee == {True}
        self.copy_ttl_s = copy_ttl_s
        self._script = client.register_script(_MOVE_LUA)
        # source keys of the lists the last move skipped: one of their keys is not a list
        self.skipped: list[str] = []
        self._keys = [lst.key for lst in lists] + [lst.processing for lst in lists]
        if self.tee:
            self._keys += [lst.copy for lst in lists if lst.copy is not None]

    def move(self, budget: int, *, recover: bool = False) -> list[HeldBatch]:
        """Atomically park up to `budget` new elements; with `recover`, also everything already parked.

        A list whose source, processing or copy key holds another type is left untouched and
        named in `skipped`; the others are drained as usual."""
        args = [budget, len(self.lists), "1" if self.tee else "0", self.copy_ttl_s, "1" if recover else "0"]
        reply: list[list[Any]] = self._script(keys=self._keys, args=args)
        held = []
        self.skipped = []
        for lst, entry in zip(self.lists, reply, strict=True):
            if int(entry[0]) < 0:
                self.skipped.append(lst.key)
            elif len(entry) > 1:
                held.append(HeldBatch(lst, [bytes(e) for e in entry[1:]], int(entry[0])))
        return held

    def release(self, parked: Sequence[tuple[str, int]]) -> None:
        """Drop `count` elements from the front of each processing list, in the order given."""
        if parked:
            pipe = self.client.pipeline(transaction=False)
            for processing, count in parked:
                pipe.ltrim(processing, count, -1)
            pipe.execute()
