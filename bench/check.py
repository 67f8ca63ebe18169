"""Seeding, the contract model, and the comparison of Redis with it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.contract.messages import Message, parse_message
from cache_pipeline.contract.plan import Planner
from cache_pipeline.keys import TIMESTAMP_SUFFIX, KeyLayout
from cache_pipeline.store.writer import RedisClient, Store
from tests.support.model import ContractModel, state_differences
from tests.support.snapshot import read_state

SEED_CHUNK = 200
EXAMPLES = 20
TTL = 604800


def parsed(messages: Iterable[dict[str, Any]]) -> list[Message]:
    return [parse_message(json.dumps(m), "any") for m in messages]


def seed(client: RedisClient, layout: KeyLayout, seeds: Sequence[dict[str, Any]]) -> None:
    """Write the seed snapshots with UPSERT, as the reader SDK's miss path would."""
    planner = Planner(layout, ttl=TTL, policy=CacheUpdatePolicy.UPSERT)
    store = Store(client, layout, ttl=TTL)
    planned = [planner.plan(message) for message in parsed(seeds)]
    for start in range(0, len(planned), SEED_CHUNK):
        for result in store.apply_planned(planned[start : start + SEED_CHUNK]):
            if isinstance(result, Exception):
                raise RuntimeError(f"seeding failed: {result}")


@dataclass
class Check:
    """How Redis differs from the contract model's state."""

    keys: int
    stale: list[str] = field(default_factory=list)  # a version older than expected
    missing: list[str] = field(default_factory=list)  # expected, absent
    unexpected: list[str] = field(default_factory=list)  # present, not expected (or newer)
    different: list[str] = field(default_factory=list)  # right version, wrong value
    examples: dict[str, str] = field(default_factory=dict)  # key -> "want ... got ..."

    @property
    def ok(self) -> bool:
        return not (self.stale or self.missing or self.unexpected or self.different)

    def summary(self) -> str:
        if self.ok:
            return f"OK: {self.keys} keys equal the contract model"
        parts = [
            f"{len(items)} {name} (e.g. {items[0]}: {self.examples.get(items[0], '?')})"
            for name, items in (
                ("stale", self.stale),
                ("missing", self.missing),
                ("unexpected", self.unexpected),
                ("different", self.different),
            )
            if items
        ]
        return f"MISMATCH over {self.keys} keys: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "keys": self.keys,
            "stale": len(self.stale),
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "different": len(self.different),
        }


def compare(expected: dict[str, Any], actual: dict[str, Any]) -> Check:
    """Classify every value key (with its version) where Redis and the model disagree."""
    bases = {_base(key) for key in expected.keys() | actual.keys()}
    check = Check(keys=len(bases))
    for base in sorted(bases):
        version = base + TIMESTAMP_SUFFIX
        want = (expected.get(version), expected.get(base))
        got = (actual.get(version), actual.get(base))
        if want != got:
            _classify(check, base, want, got)
            if len(check.examples) < EXAMPLES:
                check.examples[base] = f"want version {want[0]}, got {got[0]}"
    return check


def _base(key: str) -> str:
    return key.removesuffix(TIMESTAMP_SUFFIX)


def _classify(check: Check, key: str, want: tuple[Any, Any], got: tuple[Any, Any]) -> None:
    want_version, _ = want
    got_version, got_value = got
    if got_version is None:
        check.missing.append(key)
    elif want_version is None or got_version > want_version:
        check.unexpected.append(key)
    elif got_version < want_version:
        check.stale.append(key)
    elif got_value is None and want[1] is not None:
        check.missing.append(key)
    else:
        check.different.append(key)


def check_redis(
    client: RedisClient,
    layout: KeyLayout,
    seeds: Sequence[dict[str, Any]],
    stream: Iterable[dict[str, Any]],
    policy: CacheUpdatePolicy = CacheUpdatePolicy.UPDATE_IF_EXISTS,
) -> Check:
    """Compare the environment's keys in Redis with what contract v2.1 allows after the seeds
    and the stream delivered in any order (rule 6, under the worker's ``policy``)."""
    sent = [*seeds, *stream]
    actual = read_state(client, layout)
    differ = state_differences(actual, sent, layout.prefix, policy)
    expected = ContractModel(layout.prefix, CacheUpdatePolicy.UPSERT).replay(sent).state()
    check = compare(
        {key: expected[key] for key in differ if key in expected},
        {key: actual[key] for key in differ if key in actual},
    )
    check.keys = len({_base(key) for key in expected.keys() | actual.keys()})
    return check
