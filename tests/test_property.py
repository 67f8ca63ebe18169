"""Property tests: random message sequences through the real store vs the contract model.

Small streams (up to ten messages over three scopes, every value showing the
timestamp that wrote it) let hypothesis shrink a failure to a few messages;
``test_delivery_order.py`` runs the same rule on long realistic streams.

(a) every customer seeded (a warm cache) and no invalidation: every delivery
    permutation with duplicates, one message per ``apply_planned`` and in batches,
    ends in exactly the timestamp-order state, under both policies;
(b) with invalidations as well (rule 6): every delivery permutation with
    duplicates ends in the timestamp-order state up to the misses rule 6 allows
    (under UPDATE_IF_EXISTS, the policy-aware check of ``tests/support/model.py``),
    a message delivered twice in a row changes nothing the second time, and no
    value is ever visible that is older than its key's version or not newer than
    its scope's latest invalidation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.contract.messages import Message
from cache_pipeline.keys import KeyLayout, timestamp_key
from tests.support import factory
from tests.support.applying import Applier
from tests.support.factory import parsed
from tests.support.model import ContractModel, state_differences
from tests.support.servers import RedisServer
from tests.support.snapshot import read_state

Scope = tuple[str, str | None]
SCOPES: list[Scope] = [("cus-1", None), ("cus-2", None), ("cus-1", "site:1")]
FEATURES = ["seats", "api:calls"]
CURRENCIES = ["tokens"]
SEED_TS = 1
POLICIES = pytest.mark.parametrize(
    "policy", [CacheUpdatePolicy.UPSERT, CacheUpdatePolicy.UPDATE_IF_EXISTS]
)
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis_server.client()
    yield connection
    connection.close()


# Messages


def snapshot_body(scope: Scope, ts: int, features: dict[str, int | None]) -> dict[str, Any]:
    """An entitlements snapshot whose every value says it was written at ``ts``."""
    body = factory.entitlements(
        scope[0],
        ts,
        resource=scope[1],
        features={"base": None, **{f: u for f, u in features.items() if f in FEATURES}},
        credits={c: u for c, u in features.items() if c in CURRENCIES and u is not None},
        denied=f"v{ts}",
    )
    for item in body["data"]["entitlements"]:
        item["usageLimit"] = ts
    return body


@st.composite
def one_body(draw: st.DrawFn, ts: int, kinds: Sequence[str]) -> dict[str, Any]:
    kind = draw(st.sampled_from(kinds))
    scope = draw(st.sampled_from(SCOPES))
    if kind == "entitlements":
        ids = draw(st.lists(st.sampled_from(FEATURES + CURRENCIES), unique=True))
        with_usage = draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))
        usage = {i: (ts if used else None) for i, used in zip(ids, with_usage, strict=True)}
        return snapshot_body(scope, ts, usage)
    if kind == "usage":
        feature = draw(st.sampled_from(FEATURES))
        return factory.usage(scope[0], ts, feature, ts, resource=scope[1])
    if kind == "credits":
        currency = draw(st.sampled_from(CURRENCIES))
        return factory.credits(scope[0], ts, currency, ts, resource=scope[1])
    if kind == "all":
        return factory.invalidation(ts, everything=True)
    targets = draw(st.lists(st.sampled_from(SCOPES), min_size=1, max_size=2, unique=True))
    return factory.invalidation(ts, *targets)


@st.composite
def bodies(draw: st.DrawFn, kinds: Sequence[str]) -> list[dict[str, Any]]:
    """Up to 10 messages with distinct timestamps (one version, one state)."""
    stamps = draw(st.lists(st.integers(SEED_TS + 1, 500), min_size=1, max_size=10, unique=True))
    return [draw(one_body(ts, kinds)) for ts in stamps]


@st.composite
def deliveries(draw: st.DrawFn, count: int) -> list[int]:
    """Every message at least once, some more than once, in any order."""
    extra = draw(st.lists(st.integers(0, count - 1), max_size=count))
    return list(draw(st.permutations([*range(count), *extra])))


@st.composite
def chunks(draw: st.DrawFn, items: list[Message]) -> list[list[Message]]:
    """Split a delivery into receive batches of 1..10 messages."""
    out: list[list[Message]] = []
    rest = list(items)
    while rest:
        size = draw(st.integers(1, 10))
        out.append(rest[:size])
        rest = rest[size:]
    return out


# Stores


@dataclass
class Run:
    """One store on a fresh prefix, removed afterwards."""

    client: redis.Redis
    policy: CacheUpdatePolicy

    def __post_init__(self) -> None:
        self.layout = KeyLayout(f"prop-{uuid.uuid4().hex[:12]}")
        self.store = Applier.of(self.client, self.layout, ttl=3600, policy=self.policy)

    def state(self) -> dict[str, Any]:
        return read_state(self.client, self.layout)

    def seed(self, scopes: Sequence[Scope]) -> None:
        for scope in scopes:
            message = parsed(snapshot_body(scope, SEED_TS, dict.fromkeys(FEATURES + CURRENCIES, 1)))
            self.store.apply(message, policy=CacheUpdatePolicy.UPSERT)

    def seeds(self, scopes: Sequence[Scope]) -> list[dict[str, Any]]:
        return [snapshot_body(s, SEED_TS, dict.fromkeys(FEATURES + CURRENCIES, 1)) for s in scopes]

    def close(self) -> None:
        for key in self.client.scan_iter(match=self.layout.environment_pattern, count=1000):
            self.client.unlink(key)


def runs(client: redis.Redis, policy: CacheUpdatePolicy, count: int) -> list[Run]:
    return [Run(client, policy) for _ in range(count)]


# (a) seeded, no invalidation: order does not matter


@POLICIES
@PROPERTY
@given(data=st.data(), messages=bodies(["entitlements", "usage", "credits"]))
def test_any_delivery_order_ends_in_the_timestamp_order_state(
    client: redis.Redis,
    policy: CacheUpdatePolicy,
    data: st.DataObject,
    messages: list[dict[str, Any]],
) -> None:
    delivery = [parsed(messages[i]) for i in data.draw(deliveries(len(messages)))]
    one_by_one, batched = runs(client, policy, 2)
    try:
        for run in (one_by_one, batched):
            run.seed(SCOPES)
        prefix = one_by_one.layout.prefix
        expected = ContractModel(prefix, CacheUpdatePolicy.UPSERT)
        expected.apply_all(one_by_one.seeds(SCOPES)).policy = policy
        expected.replay(messages)
        for message in delivery:
            one_by_one.store.apply(message)
        for batch in data.draw(chunks(delivery)):
            assert not any(isinstance(r, Exception) for r in batched.store.apply_batch(batch))
        assert one_by_one.state() == expected.state()
        assert batched.state() == without_prefix(expected.state(), one_by_one, batched)
    finally:
        one_by_one.close()
        batched.close()


def without_prefix(state: dict[str, Any], source: Run, target: Run) -> dict[str, Any]:
    """``state`` of one run, renamed to another run's prefix."""
    cut = len(source.layout.prefix)
    return {target.layout.prefix + key[cut:]: value for key, value in state.items()}


# (b) with invalidations: rule 6, idempotent redelivery, nothing stale visible


@POLICIES
@PROPERTY
@given(
    data=st.data(),
    messages=bodies(["entitlements", "usage", "credits", "invalidate", "invalidate"]),
)
def test_with_invalidations_any_delivery_order_ends_in_the_state_rule_6_allows(
    client: redis.Redis,
    policy: CacheUpdatePolicy,
    data: st.DataObject,
    messages: list[dict[str, Any]],
) -> None:
    order = data.draw(deliveries(len(messages)))
    run, batched = runs(client, policy, 2)
    try:
        for each in (run, batched):
            each.seed(SCOPES)
        sent = run.seeds(SCOPES) + messages
        deliver(run, [parsed(messages[i]) for i in order])
        for batch in data.draw(chunks([parsed(messages[i]) for i in order])):
            batched.store.apply_batch(batch)
        found = state_differences(run.state(), sent, run.layout.prefix, policy)
        assert found == {}, found
        found = state_differences(batched.state(), sent, batched.layout.prefix, policy)
        assert found == {}, found
    finally:
        run.close()
        batched.close()


def deliver(run: Run, delivery: list[Message]) -> None:
    """Apply each message; after each, nothing stale is visible and delivering the same
    message again right away changes nothing."""
    invalidated: dict[str, int] = {}
    for message in delivery:
        run.store.apply(message)
        if message.type == "cache.invalidated":
            for ref in message.data.customers:
                scope = run.layout.customer(ref.customer_id, ref.resource_id).entitlements
                invalidated[scope] = max(invalidated.get(scope, 0), message.timestamp)
        state = run.state()
        assert_nothing_stale(state, run.layout, invalidated)
        run.store.apply(message)
        assert run.state() == state, f"{message.type} at {message.timestamp} delivered twice"


def assert_nothing_stale(
    state: dict[str, Any], layout: KeyLayout, invalidated: dict[str, int]
) -> None:
    """Each value was written at its key's version, newer than its scope's invalidation."""
    for key, value in state.items():
        if key.endswith("#timestamp"):
            continue
        written_at = embedded_timestamp(key, value, layout)
        assert written_at == state[timestamp_key(key)], key
        assert written_at > invalidated.get(scope_of(key, layout), 0), key


def embedded_timestamp(key: str, value: Any, layout: KeyLayout) -> int:
    if key.endswith(":metadata"):
        return int(value["accessDeniedReason"][1:])
    if key in {layout.customer(*scope).entitlements for scope in SCOPES}:
        versions = {entry["calculatedEntitlement"]["usageLimit"] for entry in value.values()}
        assert len(versions) == 1, value
        return int(versions.pop())
    return int(value["currentUsage"])


def scope_of(key: str, layout: KeyLayout) -> str:
    """The entitlements key of the scope ``key`` belongs to (the longest match)."""
    bases = [layout.customer(*scope).entitlements for scope in SCOPES]
    owners = [base for base in bases if key == base or key.startswith(base + ":")]
    return max(owners, key=len)
