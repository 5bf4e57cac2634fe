"""The simulated Tyk estate: orgs, APIs and keys, and how traffic falls on them.

Identifiers look like Tyk's: org ids are 24 hex characters (Mongo ObjectIds),
API ids 32 hex characters, keys are the org id followed by 32 hex characters
(Tyk's legacy key format). Popularity is skewed (a few APIs and keys carry
most traffic), a handful of APIs are "hot" and rate-limit often, and a few are
keyless. Everything is drawn from one seeded generator, so a seed names a world.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from pipelines.errors import SimulationError


@dataclasses.dataclass(frozen=True, slots=True)
class WorldShape:
    orgs: int = 20
    apis: int = 200
    keys: int = 30_000
    hot_api_share: float = 0.05
    keyless_api_share: float = 0.05


def _hex_ids(rng: np.random.Generator, count: int, length: int) -> list[str]:
    raw = rng.integers(0, 16, size=(count, length))
    digits = np.array(list("0123456789abcdef"))
    return ["".join(row) for row in digits[raw]]


def _zipf_weights(count: int, exponent: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    weights = 1.0 / np.arange(1, count + 1) ** exponent
    rng.shuffle(weights)
    normalised: npt.NDArray[np.float64] = weights / weights.sum()
    return normalised


@dataclasses.dataclass(frozen=True)
class World:
    org_ids: list[str]
    api_ids: list[str]
    api_names: list[str]
    api_org: npt.NDArray[np.int64]
    api_weights: npt.NDArray[np.float64]
    api_keyless: npt.NDArray[np.bool_]
    api_p429: npt.NDArray[np.float64]
    api_p403: npt.NDArray[np.float64]
    api_latency_ms: npt.NDArray[np.float64]
    keys: list[str]
    org_key_start: npt.NDArray[np.int64]
    org_key_count: npt.NDArray[np.int64]

    @classmethod
    def build(cls, shape: WorldShape, rng: np.random.Generator) -> World:
        if shape.orgs < 1 or shape.apis < shape.orgs or shape.keys < shape.orgs:
            msg = f"need 1 <= orgs <= apis and orgs <= keys, got {shape}"
            raise SimulationError(msg)
        org_ids = _hex_ids(rng, shape.orgs, 24)
        api_org = np.concatenate(
            [np.arange(shape.orgs), rng.integers(0, shape.orgs, shape.apis - shape.orgs)]
        )
        hot = rng.random(shape.apis) < shape.hot_api_share
        key_org = np.sort(
            np.concatenate([np.arange(shape.orgs), rng.integers(0, shape.orgs, shape.keys - shape.orgs)])
        )
        org_key_count = np.bincount(key_org, minlength=shape.orgs)
        suffixes = _hex_ids(rng, shape.keys, 32)
        return cls(
            org_ids=org_ids,
            api_ids=_hex_ids(rng, shape.apis, 32),
            api_names=[f"api-{i:03d}" for i in range(shape.apis)],
            api_org=api_org,
            api_weights=_zipf_weights(shape.apis, 0.9, rng),
            api_keyless=rng.random(shape.apis) < shape.keyless_api_share,
            api_p429=np.where(hot, rng.uniform(0.08, 0.2, shape.apis), rng.uniform(0.002, 0.02, shape.apis)),
            api_p403=rng.uniform(0.002, 0.015, shape.apis),
            api_latency_ms=rng.lognormal(np.log(40), 0.8, shape.apis),
            keys=[org_ids[o] + s for o, s in zip(key_org, suffixes, strict=True)],
            org_key_start=np.concatenate([[0], np.cumsum(org_key_count)[:-1]]),
            org_key_count=org_key_count,
        )
