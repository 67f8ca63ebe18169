"""The write rules of CONTRACT.md section 3, against a real Redis.

``StoreRules`` is the contract suite; it runs here against a single redis-server
and in ``test_cluster.py`` against a real three-master Redis Cluster. Each test
uses its own environment prefix, so tests never see each other's keys.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy, Settings
from cache_pipeline.contract.messages import Message
from cache_pipeline.errors import InvalidMessage, InvalidReason, StoreError, StoreUnavailable
from cache_pipeline.keys import KeyLayout, timestamp_key
from cache_pipeline.store.connection import connect
from cache_pipeline.store.writer import UNLINK_BATCH, Outcome, RedisClient
from tests.support import factory
from tests.support.applying import Applier
from tests.support.factory import parsed
from tests.support.servers import RedisServer, free_port, wait_until
from tests.support.snapshot import read_state

UPSERT = CacheUpdatePolicy.UPSERT
IF_EXISTS = CacheUpdatePolicy.UPDATE_IF_EXISTS
WEEK = 604800
BOTH_POLICIES = pytest.mark.parametrize("policy", [UPSERT, IF_EXISTS])


@dataclass
class Backend:
    """One Redis deployment (single server or cluster) seen through one client."""

    client: RedisClient
    cluster: bool
    prefixes: list[str] = field(default_factory=list)

    def layout(self, prefix: str | None = None) -> KeyLayout:
        prefix = prefix or f"test-{uuid.uuid4().hex[:12]}"
        self.prefixes.append(prefix)
        return KeyLayout(prefix, cluster=self.cluster)

    def store(
        self,
        layout: KeyLayout | None = None,
        *,
        ttl: int = WEEK,
        policy: CacheUpdatePolicy = IF_EXISTS,
    ) -> Applier:
        return Applier.of(self.client, layout or self.layout(), ttl=ttl, policy=policy)

    def cleanup(self) -> None:
        for prefix in self.prefixes:
            pattern = KeyLayout(prefix).environment_pattern
            for key in self.client.scan_iter(match=pattern, count=1000):
                self.client.unlink(key)


def backend_for(client: RedisClient, *, cluster: bool) -> Iterator[Backend]:
    """Yield a Backend and remove every key its tests wrote."""
    backend = Backend(client, cluster)
    yield backend
    backend.cleanup()


def msg(body: dict[str, Any]) -> Message:
    return parsed(body, "production")


def state(store: Applier) -> dict[str, Any]:
    return read_state(store.client, store.layout)


def seed(store: Applier, customer: str = "cus-1", ts: int = 100, **kwargs: Any) -> None:
    """Write a customer's entitlements snapshot whatever the store's policy."""
    outcome = store.apply(msg(factory.entitlements(customer, ts, **kwargs)), policy=UPSERT)
    assert outcome is Outcome.WRITTEN


def customer_keys(store: Applier, customer: str = "cus-1", resource: str | None = None) -> Any:
    return store.layout.customer(customer, resource)


class StoreRules:
    """The contract suite; a subclass provides the ``backend`` fixture."""

    # Rule 1: monotonic versions

    def test_older_message_never_overwrites_newer(self, backend: Backend) -> None:
        store = backend.store(policy=UPSERT)
        seed(store, ts=200, features={"seats": 5}, denied="NEW")
        before = state(store)
        older = factory.entitlements("cus-1", 100, features={"seats": 1}, denied="OLD")
        assert store.apply(msg(older)) is Outcome.STALE
        older_usage = factory.usage("cus-1", 150, "seats", 2)
        assert store.apply(msg(older_usage)) is Outcome.STALE
        assert state(store) == before
        keys = customer_keys(store)
        assert before[keys.metadata] == {"accessDeniedReason": "NEW"}
        assert before[timestamp_key(keys.feature_usage("seats"))] == 200

    def test_equal_timestamp_rewrites(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100, features={"seats": 1})
        keys = customer_keys(store)
        assert store.apply(msg(factory.usage("cus-1", 300, "seats", 5))) is Outcome.WRITTEN
        assert store.apply(msg(factory.usage("cus-1", 300, "seats", 6))) is Outcome.WRITTEN
        assert state(store)[keys.feature_usage("seats")]["currentUsage"] == 6
        again = factory.entitlements("cus-1", 100, features={"seats": 1}, denied="SAME_TS")
        assert store.apply(msg(again)) is Outcome.WRITTEN
        assert state(store)[keys.metadata] == {"accessDeniedReason": "SAME_TS"}

    def test_versions_are_per_key(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100, features={"a": 1, "b": 1})
        keys = customer_keys(store)
        store.apply(msg(factory.usage("cus-1", 300, "a", 30)))
        snapshot = factory.entitlements("cus-1", 200, features={"a": 20, "b": 20})
        assert store.apply(msg(snapshot)) is Outcome.WRITTEN
        after = state(store)
        assert after[keys.feature_usage("a")]["currentUsage"] == 30
        assert after[timestamp_key(keys.feature_usage("a"))] == 300
        assert after[keys.feature_usage("b")]["currentUsage"] == 20
        assert after[timestamp_key(keys.entitlements)] == 200

    def test_out_of_order_delivery_keeps_the_newest(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=1, credits={"tokens": 0})
        keys = customer_keys(store)
        for ts in (5, 9, 2, 7, 9, 3):
            store.apply(msg(factory.credits("cus-1", ts, "tokens", ts * 10)))
        value = state(store)[keys.credit("tokens")]
        assert value == {
            "currentUsage": 90,
            "usageLimit": 1000,
            "usagePeriodStart": 1,
            "usagePeriodEnd": 2,
        }

    # Rule 2: policy

    def test_update_if_exists_skips_unknown_customer(self, backend: Backend) -> None:
        store = backend.store(policy=IF_EXISTS)
        body = factory.entitlements("cus-1", 100, features={"seats": 1})
        assert store.apply(msg(body)) is Outcome.POLICY
        assert state(store) == {}
        seed(store, ts=50)
        assert store.apply(msg(body)) is Outcome.WRITTEN
        assert state(store)[customer_keys(store).feature_usage("seats")]["currentUsage"] == 1

    def test_upsert_writes_unknown_customer(self, backend: Backend) -> None:
        store = backend.store(policy=UPSERT)
        body = factory.entitlements("cus-1", 100, features={"seats": 1}, credits={"tok": 7})
        assert store.apply(msg(body)) is Outcome.WRITTEN
        keys = customer_keys(store)
        after = state(store)
        assert set(after[keys.entitlements]) == {"seats"}
        assert after[keys.entitlements]["seats"]["featureUsage"]["currentUsage"] == 1
        assert after[keys.feature_usage("seats")]["currentUsage"] == 1
        assert after[keys.credit("tok")]["usageLimit"] == 1000

    def test_under_update_if_exists_usage_and_credits_need_entitlements(
        self, backend: Backend
    ) -> None:
        store = backend.store(policy=IF_EXISTS)
        use = msg(factory.usage("cus-1", 100, "seats", 3))
        credit = msg(factory.credits("cus-1", 100, "tok", 3))
        assert store.apply(use) is Outcome.POLICY
        assert store.apply(credit) is Outcome.POLICY
        assert state(store) == {}
        seed(store, ts=50)
        assert store.apply(use) is Outcome.WRITTEN
        assert store.apply(credit) is Outcome.WRITTEN
        assert len(state(store)) == 8  # entitlements, metadata, usage, credit + 4 versions

    def test_under_upsert_usage_and_credits_are_written_before_their_snapshot(
        self, backend: Backend
    ) -> None:
        """v2.1 rule 2: the snapshot that comes later keeps the newer usage, never a stale one."""
        store = backend.store(policy=UPSERT)
        keys = customer_keys(store)
        assert store.apply(msg(factory.usage("cus-1", 100, "seats", 3))) is Outcome.WRITTEN
        assert store.apply(msg(factory.credits("cus-1", 100, "tok", 3))) is Outcome.WRITTEN
        assert keys.entitlements not in state(store)
        seed(store, ts=50, features={"seats": 1}, credits={"tok": 1})
        after = state(store)
        assert after[keys.feature_usage("seats")]["currentUsage"] == 3
        assert after[keys.credit("tok")]["currentUsage"] == 3
        assert after[timestamp_key(keys.entitlements)] == 50

    @BOTH_POLICIES
    def test_usage_newer_than_an_invalidation_follows_the_policy(
        self, backend: Backend, policy: CacheUpdatePolicy
    ) -> None:
        store = backend.store(policy=policy)
        seed(store, ts=100)
        store.apply(msg(factory.invalidation(200, "cus-1")))
        outcome = store.apply(msg(factory.usage("cus-1", 300, "seats", 3)))
        written = customer_keys(store).feature_usage("seats") in state(store)
        if policy is UPSERT:
            assert (outcome, written) == (Outcome.WRITTEN, True)
        else:
            assert (outcome, written) == (Outcome.POLICY, False)

    # Rule 3: TTL

    def test_every_written_key_gets_the_ttl(self, backend: Backend) -> None:
        store = backend.store(ttl=1000)
        seed(store, ts=100, features={"seats": 1}, credits={"tok": 1})
        store.apply(msg(factory.usage("cus-1", 200, "seats", 2)))
        ttls = all_ttls(store)
        assert len(ttls) == 9  # 4 value keys, 4 versions, the index
        assert all(0 < ttl <= 1000 for ttl in ttls.values()), ttls

    def test_no_expiry_removes_an_existing_ttl(self, backend: Backend) -> None:
        layout = backend.layout()
        with_ttl = backend.store(layout, ttl=1000)
        seed(with_ttl, ts=100, features={"seats": 1}, credits={"tok": 1})
        assert all(ttl > 0 for ttl in all_ttls(with_ttl).values())
        forever = backend.store(layout, ttl=-1)
        seed(forever, ts=200, features={"seats": 2}, credits={"tok": 2})
        ttls = all_ttls(forever)
        assert len(ttls) == 9
        assert set(ttls.values()) == {-1}, ttls

    def test_usage_rewrite_with_no_expiry(self, backend: Backend) -> None:
        layout = backend.layout()
        seed(backend.store(layout, ttl=1000), ts=100)
        with_ttl = backend.store(layout, ttl=1000)
        with_ttl.apply(msg(factory.usage("cus-1", 200, "seats", 1)))
        forever = backend.store(layout, ttl=-1)
        forever.apply(msg(factory.usage("cus-1", 300, "seats", 2)))
        key = customer_keys(forever).feature_usage("seats")
        client = backend.client
        assert client.ttl(key) == -1
        assert client.ttl(timestamp_key(key)) == -1
        assert client.ttl(customer_keys(forever).index) == -1

    def test_invalidation_time_gets_the_ttl(self, backend: Backend) -> None:
        layout = backend.layout()
        seed(backend.store(layout, ttl=-1), ts=100, features={"seats": 1})
        store = backend.store(layout, ttl=500)
        store.apply(msg(factory.invalidation(200, "cus-1")))
        ttls = all_ttls(store)
        assert set(ttls) == {customer_keys(store).invalidated, customer_keys(store).deleted}
        assert all(0 < ttl <= 500 for ttl in ttls.values()), ttls

    def test_invalidation_time_without_expiry(self, backend: Backend) -> None:
        layout = backend.layout()
        seed(backend.store(layout, ttl=500), ts=100, features={"seats": 1})
        store = backend.store(layout, ttl=-1)
        store.apply(msg(factory.invalidation(200, "cus-1")))
        keys = customer_keys(store)
        assert all_ttls(store) == {keys.invalidated: -1, keys.deleted: -1}

    # Rule 4: invalidation

    def test_invalidation_deletes_values_and_their_versions(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100, features={"seats": 1, "sso": None}, credits={"tok": 5})
        store.apply(msg(factory.usage("cus-1", 110, "api-calls", 9)))
        outcome = store.apply(msg(factory.invalidation(200, "cus-1")))
        assert outcome is Outcome.INVALIDATED
        assert state(store) == {}
        keys = customer_keys(store)
        assert all_ttls(store).keys() == {keys.invalidated, keys.deleted}
        # the versions it deleted usage and credit keys at, so none older lands later
        assert backend.client.hgetall(keys.deleted) == {
            keys.feature_usage("seats"): "100",
            keys.feature_usage("api-calls"): "110",
            keys.credit("tok"): "100",
        }

    def test_invalidation_deletes_usage_keys_it_did_not_write(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100, features={"seats": 1, "sso": None})
        keys = customer_keys(store)
        foreign = {keys.feature_usage("sso"): '{"currentUsage":4}', keys.credit("x"): "{}"}
        for key, value in foreign.items():  # written by someone else: not in our index
            backend.client.set(key, value)
            backend.client.set(timestamp_key(key), "150")
        store.apply(msg(factory.invalidation(200, "cus-1")))
        after = state(store)
        assert keys.feature_usage("sso") not in after  # a feature of the map: deleted
        assert timestamp_key(keys.feature_usage("sso")) not in after
        assert after == {keys.credit("x"): {}, timestamp_key(keys.credit("x")): 150}

    def test_the_invalidation_time_blocks_older_messages(self, backend: Backend) -> None:
        store = backend.store(policy=UPSERT)
        seed(store, ts=100, features={"seats": 1}, credits={"tok": 5})
        store.apply(msg(factory.invalidation(200, "cus-1")))
        after = state(store)
        older = factory.entitlements("cus-1", 150, features={"seats": 1}, credits={"tok": 5})
        assert store.apply(msg(older)) is Outcome.STALE
        assert store.apply(msg(factory.usage("cus-1", 150, "seats", 3))) is Outcome.STALE
        assert store.apply(msg(factory.usage("cus-1", 200, "seats", 3))) is Outcome.STALE
        assert state(store) == after
        newer = factory.entitlements("cus-1", 250, features={"seats": 1})
        assert store.apply(msg(newer)) is Outcome.WRITTEN
        assert customer_keys(store).entitlements in state(store)

    def test_invalidation_blocks_older_writes_to_keys_it_never_saw(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100, features={"seats": 1})
        store.apply(msg(factory.invalidation(200, "cus-1")))
        seed(store, ts=300, features={"seats": 3})
        keys = customer_keys(store)
        assert store.apply(msg(factory.usage("cus-1", 150, "api", 1))) is Outcome.STALE
        assert store.apply(msg(factory.credits("cus-1", 150, "tok", 1))) is Outcome.STALE
        assert store.apply(msg(factory.usage("cus-1", 250, "api", 2))) is Outcome.WRITTEN
        after = state(store)
        assert keys.credit("tok") not in after
        assert after[keys.feature_usage("api")]["currentUsage"] == 2

    def test_older_snapshot_after_invalidation_writes_nothing(self, backend: Backend) -> None:
        store = backend.store(policy=UPSERT)
        seed(store, ts=100, features={"seats": 1})
        store.apply(msg(factory.invalidation(200, "cus-1")))
        before = state(store)
        older = factory.entitlements("cus-1", 150, features={"new": 1}, credits={"tok": 1})
        assert store.apply(msg(older)) is Outcome.STALE
        assert state(store) == before

    def test_a_late_invalidation_keeps_what_is_newer_than_itself(self, backend: Backend) -> None:
        """v2.1 rule 4: delivered after newer data (reordered or redelivered), it removes only
        what is not newer than itself, and a later snapshot cannot bring back older usage."""
        store = backend.store()
        seed(store, ts=100, features={"seats": 1, "sso": 1})
        keys = customer_keys(store)
        store.apply(msg(factory.usage("cus-1", 300, "seats", 30)))
        store.apply(msg(factory.invalidation(200, "cus-1")))
        assert state(store) == {
            keys.feature_usage("seats"): {
                "currentUsage": 30,
                "usagePeriodStart": 1,
                "usagePeriodEnd": 2,
            },
            timestamp_key(keys.feature_usage("seats")): 300,
        }
        refill = factory.entitlements("cus-1", 250, features={"seats": 2, "sso": 5})
        assert store.apply(msg(refill), policy=UPSERT) is Outcome.WRITTEN
        after = state(store)
        assert after[keys.feature_usage("seats")]["currentUsage"] == 30
        assert after[keys.feature_usage("sso")]["currentUsage"] == 5
        twice = store.apply(msg(factory.invalidation(200, "cus-1")))  # redelivered
        assert twice is Outcome.INVALIDATED
        assert state(store) == after

    def test_invalidation_is_reached_by_later_invalidations(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100, features={"seats": 1})
        store.apply(msg(factory.invalidation(200, "cus-1")))
        seed(store, ts=300, features={"seats": 3})
        store.apply(msg(factory.invalidation(400, "cus-1")))
        assert state(store) == {}
        assert backend.client.get(customer_keys(store).invalidated) == "400"
        store.apply(msg(factory.invalidation(350, "cus-1")))  # T is never lowered
        assert backend.client.get(customer_keys(store).invalidated) == "400"

    def test_purge_lowers_an_invalidation_time_from_the_future(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100, features={"seats": 1})
        store.apply(msg(factory.invalidation(9_000_000, "cus-1")))
        assert store.store.purge("cus-1", None, at=500) == 0
        assert backend.client.get(customer_keys(store).invalidated) == "500"
        seed(store, ts=600, features={"seats": 2})
        assert store.store.purge("cus-1", None, at=700) == 6  # map, metadata, usage and versions
        assert state(store) == {}

    def test_invalidate_all_removes_every_key_of_the_prefix_only(self, backend: Backend) -> None:
        layout = backend.layout()
        other = backend.store(backend.layout(layout.prefix + "-other"), policy=UPSERT)
        seed(other, "bystander", ts=100, features={"seats": 1})
        other_before = state(other)
        store = backend.store(layout, policy=UPSERT)
        bodies = [
            factory.entitlements(f"cus-{i}", 100, features={"seats": i}, resource=None)
            for i in range(1000)
        ]
        assert set(store.apply_batch([msg(b) for b in bodies])) == {Outcome.WRITTEN}
        total = count_keys(backend.client, layout)
        assert total == 7000  # map, metadata, usage, their 3 versions, index
        assert total > 4 * UNLINK_BATCH  # several SCAN pages and UNLINK calls
        everything = msg(factory.invalidation(500, everything=True))
        assert store.apply(everything) is Outcome.INVALIDATED
        assert state(store) == {}
        left = set(backend.client.scan_iter(match=layout.environment_pattern, count=1000))
        tombstones = {customer_keys(store, f"cus-{i}").deleted for i in range(1000)}
        assert left == {layout.environment_invalidated} | tombstones
        assert state(other) == other_before

    def test_invalidate_all_keeps_what_is_newer_and_refuses_what_is_older(
        self, backend: Backend
    ) -> None:
        """v2.1: ``{"all": true}`` at T is version-respecting like a scope's invalidation, and
        covers scopes it never saw: a message of any scope not newer than T is refused."""
        store = backend.store(policy=UPSERT)
        seed(store, ts=100, features={"seats": 1})
        assert store.apply(msg(factory.usage("cus-1", 600, "seats", 6))) is Outcome.WRITTEN
        store.apply(msg(factory.invalidation(500, everything=True)))
        keys = customer_keys(store)
        assert set(state(store)) == {
            keys.feature_usage("seats"),
            timestamp_key(keys.feature_usage("seats")),
        }
        # Redis Cluster: the environment's time lives in another slot than the scope, so a
        # scope the invalidation did not find is not gated there (docs/store.md)
        unseen = Outcome.WRITTEN if backend.cluster else Outcome.STALE
        assert store.apply(msg(factory.entitlements("cus-new", 400))) is unseen
        assert store.apply(msg(factory.usage("cus-1", 500, "seats", 5))) is Outcome.STALE
        assert store.apply(msg(factory.entitlements("cus-new", 700))) is Outcome.WRITTEN
        again = store.apply(msg(factory.invalidation(500, everything=True)))  # redelivered
        assert again is Outcome.INVALIDATED
        assert customer_keys(store, "cus-new").entitlements in state(store)

    def test_invalidate_all_in_a_batch_splits_it(self, backend: Backend) -> None:
        store = backend.store(policy=UPSERT)
        batch = [
            msg(factory.entitlements("cus-1", 100)),
            msg(factory.invalidation(150, everything=True)),
            msg(factory.entitlements("cus-2", 200)),
            msg(factory.entitlements("cus-3", 100)),
        ]
        unseen = Outcome.WRITTEN if backend.cluster else Outcome.STALE  # as above
        outcomes = [Outcome.WRITTEN, Outcome.INVALIDATED, Outcome.WRITTEN, unseen]
        assert store.apply_batch(batch) == outcomes
        assert customer_keys(store, "cus-1").entitlements not in state(store)
        assert customer_keys(store, "cus-2").entitlements in state(store)

    # Key isolation

    @pytest.mark.parametrize(
        ("first", "second"),
        [
            (("a", "b"), ("a:b", None)),
            (("a", None), ("a:meta", None)),
            (("acme:eu", None), ("acme", "eu")),
            (("user@example.com", "site:1"), ("user@example.com", "site")),
            (("a", "b"), ("a", "b:c")),
        ],
    )
    def test_ids_cannot_reach_another_customers_keys(
        self,
        backend: Backend,
        first: tuple[str, str | None],
        second: tuple[str, str | None],
    ) -> None:
        store = backend.store(policy=UPSERT)
        seed(store, first[0], 100, resource=first[1], features={"f:1": 1}, denied="FIRST")
        before = state(store)
        seed(store, second[0], 200, resource=second[1], features={"f:1": 2}, denied="SECOND")
        assert {k: v for k, v in state(store).items() if k in before} == before
        store.apply(msg(factory.invalidation(300, second)))
        assert {k: v for k, v in state(store).items() if k in before} == before

    @pytest.mark.parametrize(
        "ids",
        [("a:r_b", None), ("a:metadata", None), ("x}", None), ("a", "b#timestamp"), ("{a}", None)],
    )
    def test_ids_that_could_reach_other_keys_never_reach_the_store(
        self, backend: Backend, ids: tuple[str, str | None]
    ) -> None:
        with pytest.raises(InvalidMessage) as caught:
            msg(factory.entitlements(ids[0], 100, resource=ids[1], features={"f": 1}))
        assert caught.value.reason is InvalidReason.UNSAFE_ID

    def test_feature_id_cannot_forge_a_version_key(self, backend: Backend) -> None:
        with pytest.raises(InvalidMessage) as caught:
            msg(factory.usage("cus-1", 999, "seats#timestamp", 5))
        assert caught.value.reason is InvalidReason.UNSAFE_ID

    def test_resource_scopes_are_separate(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, "cus-1", 100, features={"seats": 1})
        use = msg(factory.usage("cus-1", 200, "seats", 5, resource="site-1"))
        assert store.apply(use) is Outcome.POLICY
        seed(store, "cus-1", 100, resource="site-1", features={"seats": 2})
        assert store.apply(use) is Outcome.WRITTEN
        store.apply(msg(factory.invalidation(300, ("cus-1", "site-1"))))
        after = state(store)
        plain, scoped = customer_keys(store), customer_keys(store, "cus-1", "site-1")
        assert after[plain.feature_usage("seats")]["currentUsage"] == 1
        assert plain.entitlements in after
        assert scoped.entitlements not in after
        assert scoped.feature_usage("seats") not in after

    # Scripts, batches, failures

    def test_apply_reloads_scripts_after_flush(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100)
        backend.client.script_flush()
        assert store.apply(msg(factory.usage("cus-1", 200, "seats", 1))) is Outcome.WRITTEN
        backend.client.script_flush()
        assert store.apply(msg(factory.invalidation(300, "cus-1"))) is Outcome.INVALIDATED
        # the calls the store runs alone, each in its own round trip
        backend.client.script_flush()
        assert store.store.purge("cus-1", None, at=400) == 0
        backend.client.script_flush()
        everything = msg(factory.invalidation(500, everything=True))
        assert store.apply(everything) is Outcome.INVALIDATED
        assert backend.client.get(store.layout.environment_invalidated) == "500"

    def test_apply_batch_reloads_scripts_after_flush(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100)
        backend.client.script_flush()
        batch = [
            msg(factory.usage("cus-1", 200, "seats", 1)),
            msg(factory.entitlements("cus-1", 200)),
            msg(factory.invalidation(300, "cus-2")),
        ]
        assert store.apply_batch(batch) == [Outcome.WRITTEN] * 2 + [Outcome.INVALIDATED]
        assert customer_keys(store).feature_usage("seats") in state(store)

    @BOTH_POLICIES
    def test_apply_batch_equals_apply_one_by_one(
        self, backend: Backend, policy: CacheUpdatePolicy
    ) -> None:
        bodies = mixed_messages()
        one = backend.store(policy=policy)
        batched = backend.store(policy=policy)
        for store in (one, batched):  # a warm cache
            seed(store, "cus-1", ts=10)
            seed(store, "cus-2", ts=10, resource="r")
        outcomes = [one.apply(msg(body)) for body in bodies]
        assert batched.apply_batch([msg(body) for body in bodies]) == outcomes
        assert Outcome.STALE in outcomes
        assert (Outcome.POLICY in outcomes) is (policy is IF_EXISTS)
        assert without_prefix(state(batched), batched) == without_prefix(state(one), one)

    def test_wrong_key_type_fails_only_its_message(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, "cus-1", 100)
        seed(store, "cus-2", 100)
        broken = customer_keys(store, "cus-1").feature_usage("seats")
        backend.client.rpush(broken, "not", "json")
        batch = [
            msg(factory.usage("cus-2", 200, "seats", 1)),
            msg(factory.usage("cus-1", 200, "seats", 1)),
            msg(factory.credits("cus-1", 200, "tok", 1)),
        ]
        results = store.apply_batch(batch)
        assert results[0] is Outcome.WRITTEN
        assert results[2] is Outcome.WRITTEN
        assert isinstance(results[1], StoreError)
        assert "WRONGTYPE" in str(results[1])
        assert backend.client.lrange(broken, 0, -1) == ["not", "json"]
        assert backend.client.exists(timestamp_key(broken)) == 0
        with pytest.raises(StoreError, match="WRONGTYPE"):
            store.apply(batch[1])

    def test_wrong_index_type_leaves_the_customer_untouched(self, backend: Backend) -> None:
        store = backend.store()
        seed(store, ts=100, features={"seats": 1})
        keys = customer_keys(store)
        before = state(store)
        backend.client.delete(keys.index)
        backend.client.set(keys.index, "foreign")
        with pytest.raises(StoreError, match="WRONGTYPE"):
            store.apply(msg(factory.invalidation(200, "cus-1")))
        with pytest.raises(StoreError, match="WRONGTYPE"):
            store.apply(msg(factory.entitlements("cus-1", 300, features={"seats": 3})))
        assert state(store) == before


def all_ttls(store: Applier) -> dict[str, int]:
    """TTL of every key of the store's prefix, index included."""
    keys = store.client.scan_iter(match=store.layout.environment_pattern, count=1000)
    return {key: int(store.client.ttl(key)) for key in keys}


def count_keys(client: RedisClient, layout: KeyLayout) -> int:
    return sum(1 for _ in client.scan_iter(match=layout.environment_pattern, count=1000))


def without_prefix(snapshot: dict[str, Any], store: Applier) -> dict[str, Any]:
    cut = len(store.layout.prefix)
    return {key[cut:]: value for key, value in snapshot.items()}


def mixed_messages() -> list[dict[str, Any]]:
    """Messages that write, go stale, get skipped by policy and invalidate."""
    return [
        factory.usage("cus-1", 50, "seats", 1),
        factory.entitlements("cus-1", 100, features={"seats": 1}, credits={"tok": 1}),
        factory.entitlements("cus-2", 100, resource="r", features={"seats": 1}),
        factory.usage("cus-1", 300, "seats", 3),
        factory.usage("cus-1", 200, "seats", 2),
        factory.credits("cus-1", 250, "tok", 5),
        factory.invalidation(260, "cus-1"),
        factory.credits("cus-1", 270, "tok", 6),
        factory.entitlements("cus-1", 280, features={"seats": 0}),
        factory.usage("cus-2", 120, "seats", 4, resource="r"),
    ]


class TestStoreOnRedis(StoreRules):
    """The contract suite against a single redis-server."""

    @pytest.fixture
    def backend(self, redis_client: redis.Redis) -> Iterator[Backend]:
        yield from backend_for(redis_client, cluster=False)


def test_unreachable_redis_is_store_unavailable() -> None:
    client = connect(Settings(redis_port=free_port(), redis_timeout_secs=0.5))
    try:
        store = Applier.of(client, KeyLayout("test-down"), ttl=WEEK)
        body = msg(factory.entitlements("cus-1", 100))
        with pytest.raises(StoreUnavailable):
            store.apply(body)
        with pytest.raises(StoreUnavailable):
            store.apply_batch([body, body])
        with pytest.raises(StoreUnavailable):
            store.store.invalidate_environment(100)
    finally:
        client.close()


def test_redis_going_away_mid_stream_is_store_unavailable() -> None:
    server = RedisServer().start()
    client = connect(Settings(redis_port=server.port, redis_timeout_secs=0.5))
    try:
        store = Applier.of(client, KeyLayout("test-gone"), ttl=WEEK, policy=UPSERT)
        assert store.apply(msg(factory.entitlements("cus-1", 100))) is Outcome.WRITTEN
        server.kill()
        with pytest.raises(StoreUnavailable):
            store.apply_batch([msg(factory.entitlements("cus-1", 200))])
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize(
    ("setup", "what"),
    [
        (("CONFIG", "SET", "maxmemory", "1"), "maxmemory"),
        (("REPLICAOF", "127.0.0.1", "1"), "read only replica"),
    ],
)
def test_a_redis_that_cannot_take_writes_now_is_store_unavailable(
    own_redis: RedisServer, setup: tuple[str, ...], what: str
) -> None:
    """Out of memory (noeviction) or a read-only replica: the batch waits, nothing is lost."""
    client = connect(Settings(redis_port=own_redis.port, redis_timeout_secs=2))
    try:
        store = Applier.of(client, KeyLayout("test-full"), ttl=WEEK, policy=UPSERT)
        client.execute_command(*setup)  # type: ignore[no-untyped-call]
        with pytest.raises(StoreUnavailable, match=what):
            store.apply_batch([msg(factory.entitlements("cus-1", 100, features={"seats": 1}))])
        with pytest.raises(StoreUnavailable, match=what):
            store.apply(msg(factory.entitlements("cus-1", 100)))
    finally:
        client.close()


# Read-only, so SCRIPT KILL ends it; it ends by itself after 30 s at the latest.
BUSY_SCRIPT = "local t = redis.call('TIME')[1] + 30 while redis.call('TIME')[1] + 0 < t do end"


def _busy(probe: redis.Redis) -> bool:
    """True once Redis answers BUSY (a script has run beyond busy-reply-threshold)."""
    try:
        probe.ping()
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def _script_ended(probe: redis.Redis, thread: threading.Thread) -> bool:
    try:
        probe.script_kill()
    except redis.ResponseError as exc:
        if not str(exc).startswith("NOTBUSY"):
            raise
    thread.join(0.1)
    return not thread.is_alive()


def test_redis_busy_with_another_script_is_store_unavailable(own_redis: RedisServer) -> None:
    client = connect(Settings(redis_port=own_redis.port, redis_timeout_secs=5))
    blocker = own_redis.client()
    probe = own_redis.client()
    client.config_set("busy-reply-threshold", 100)
    thread = threading.Thread(
        target=lambda: _swallow(lambda: blocker.eval(BUSY_SCRIPT, 0)),
        daemon=True,
    )
    try:
        store = Applier.of(client, KeyLayout("test-busy"), ttl=WEEK, policy=UPSERT)
        thread.start()
        wait_until(lambda: _busy(probe), what="Redis answering BUSY")
        with pytest.raises(StoreUnavailable, match="BUSY"):
            store.apply_batch([msg(factory.entitlements("cus-1", 100))])
    finally:
        wait_until(lambda: _script_ended(probe, thread), what="the busy script killed")
        client.close()
        blocker.close()
        probe.close()


def _swallow(call: Callable[[], object]) -> None:
    try:
        call()
    except redis.RedisError:  # killed by SCRIPT KILL
        return
