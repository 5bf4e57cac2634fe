"""The simulator answers limits with Tyk's own status codes (fact sheet §1.6)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from pipelines.simulate.traffic import TrafficDrawer
from pipelines.simulate.world import World, WorldShape

pytestmark = pytest.mark.unit


def test_an_organisations_rate_limit_is_answered_403_and_a_keys_429() -> None:
    # Found by the real-data audit: the simulator answered org rate limits with 429, unlike Tyk, so
    # its ground truth could not catch numbers that took every OrgRateLimitExceeded for a 429.
    rng = np.random.default_rng(3)
    drawer = TrafficDrawer(World.build(WorldShape(keys=500), rng), rng, org_limit_share=0.5)
    drawn = drawer.analytics(60_000, 0, 60 * 10**9)
    events = collections.Counter({name: len(records) for name, records in drawn.events.items()})
    keyed = collections.Counter(r["response_code"] for r in drawn.analytics if r["api_key"])
    assert events["OrgRateLimitExceeded"] > 100
    assert events["RatelimitExceeded"] > 100
    assert keyed[429] == events["RatelimitExceeded"]  # every keyed 429 is a key's limit
    assert keyed[403] == events["OrgRateLimitExceeded"] + events["QuotaExceeded"]
