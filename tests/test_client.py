"""Reader SDK against a real redis-server and the edge stub over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from cache_pipeline.client import (
    EntitlementsCache,
    EntitlementsUnavailable,
    InvalidArgument,
    ReaderOptions,
)
from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store import Store
from cache_pipeline.upstream import UpstreamAnswer
from tests.support import factory
from tests.support.edge import STUB_API_KEY, EdgeStub, snapshot_body
from tests.support.reference import ReferenceCache
from tests.support.servers import RedisServer
from tests.support.snapshot import read_state

FAST = ReaderOptions(upstream_retries=0, upstream_timeout_seconds=2, redis_retry_after_seconds=0)


def own_cache(
    port: int, url: str, prefix: str, options: ReaderOptions = FAST, timeout: float = 1
) -> EntitlementsCache:
    """A cache on a redis-server (and edge stub) the test starts and stops itself."""
    return EntitlementsCache(
        options=options,
        redis_port=port,
        redis_timeout_secs=timeout,
        environment_prefix=prefix,
        edge_api_url=url,
        server_api_key=STUB_API_KEY,
    )


@pytest.fixture(scope="module")
def stub() -> Iterator[EdgeStub]:
    server = EdgeStub().start()
    yield server
    server.stop()


@pytest.fixture
def customer() -> str:
    return f"cus-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_cache(
    redis_server: RedisServer, prefix: str, stub: EdgeStub, redis_client: redis.Redis
) -> Iterator[Callable[..., EntitlementsCache]]:
    """``make_cache(options=..., **settings)`` → a cache on the test's prefix and the stub."""
    made: list[EntitlementsCache] = []

    def build(
        options: ReaderOptions = FAST, port: int | None = None, url: str | None = None, **kw: Any
    ) -> EntitlementsCache:
        settings: dict[str, Any] = {
            "redis_host": "127.0.0.1",
            "redis_port": port or redis_server.port,
            "environment_prefix": prefix,
            "edge_api_url": url or stub.url,
            "server_api_key": STUB_API_KEY,
            "redis_timeout_secs": 1,
        }
        cache = EntitlementsCache(options=options, **(settings | kw))
        made.append(cache)
        return cache

    yield build
    for cache in made:
        cache.close()
    for key in redis_client.scan_iter(match=KeyLayout(prefix).environment_pattern):
        redis_client.unlink(key)


def test_hit_merges_usage_and_credit_balances(
    make_cache: Callable[..., EntitlementsCache],
    make_store: Callable[..., Store],
    customer: str,
    stub: EdgeStub,
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    store.apply(
        factory.parsed(
            factory.entitlements(
                customer, 100, features={"seats": 3, "sso": None}, credits={"ai": 5}
            )
        )
    )
    store.apply(factory.parsed(factory.usage(customer, 200, "seats", 7)))
    store.apply(factory.parsed(factory.credits(customer, 200, "ai", 250, limit=400)))
    cache = make_cache()

    result = cache.get_entitlements(customer)

    assert (result.source, result.timestamp, result.stale) == ("cache", 100, False)
    seats = result.find("FEATURE", "seats")
    sso = result.find("FEATURE", "sso")
    ai = result.find("CREDIT", "ai")
    assert seats is not None
    assert sso is not None
    assert ai is not None
    assert (seats.current_usage, seats.usage_limit, seats.remaining) == (7, 10, 3)
    assert (sso.has_access, sso.current_usage) == (True, None)
    assert (ai.current_usage, ai.usage_limit, ai.remaining) == (250, 400, 150)
    assert stub.requests(customer) == 0


def test_single_checks(
    make_cache: Callable[..., EntitlementsCache], make_store: Callable[..., Store], customer: str
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    store.apply(
        factory.parsed(
            factory.entitlements(customer, 100, features={"seats": 9}, credits={"ai": 990})
        )
    )
    cache = make_cache()

    seats = cache.get_entitlement(customer, "seats")
    assert (seats.has_access, seats.usage_limit, seats.current_usage) == (True, 10, 9)
    assert (seats.source, seats.timestamp, seats.access_denied_reason) == ("cache", 100, None)
    over = cache.get_entitlement(customer, "seats", requested_usage=2)
    assert (over.has_access, over.access_denied_reason) == (False, "RequestedUsageExceedingLimit")
    missing = cache.get_entitlement(customer, "nope")
    assert (missing.has_access, missing.access_denied_reason) == (False, "EntitlementNotFound")

    ai = cache.get_credit_entitlement(customer, "ai")
    assert (ai.has_access, ai.usage_limit, ai.current_usage, ai.remaining_balance) == (
        True,
        1000,
        990,
        10,
    )
    short = cache.get_credit_entitlement(customer, "ai", requested_amount=11)
    assert (short.has_access, short.access_denied_reason) == (False, "InsufficientCredits")


def test_miss_asks_the_upstream_and_writes_back_the_pipeline_layout(
    make_cache: Callable[..., EntitlementsCache],
    redis_client: redis.Redis,
    prefix: str,
    customer: str,
    stub: EdgeStub,
) -> None:
    answer = stub.put(
        customer, snapshot_body(features={"seats": 4}, credits={"ai": 30}, denied=None)
    )
    cache = make_cache()

    first = cache.get_entitlements(customer)
    second = cache.get_entitlements(customer)

    assert (first.source, first.timestamp) == ("upstream", answer["timestamp"])
    assert (second.source, second.timestamp) == ("cache", answer["timestamp"])
    assert first.entitlements == second.entitlements
    assert stub.requests(customer) == 1
    layout = KeyLayout(prefix)
    expected = ReferenceCache(layout, CacheUpdatePolicy.UPSERT)
    expected.apply_all([UpstreamAnswer.model_validate(answer).to_message()])
    assert read_state(redis_client, layout) == expected.snapshot()
    assert 0 < redis_client.ttl(layout.customer(customer).entitlements) <= 604800


def test_write_back_honours_no_expiry(
    make_cache: Callable[..., EntitlementsCache],
    redis_client: redis.Redis,
    prefix: str,
    customer: str,
    stub: EdgeStub,
) -> None:
    stub.put(customer, snapshot_body(features={"seats": 1}))
    cache = make_cache(keys_ttl_in_secs=-1)
    cache.get_entitlements(customer)
    keys = KeyLayout(prefix).customer(customer)
    for key in (keys.entitlements, keys.metadata, keys.feature_usage("seats")):
        assert redis_client.ttl(key) == -1
        assert redis_client.ttl(key + "#timestamp") == -1


def test_write_back_never_overwrites_newer_cache_data(
    make_cache: Callable[..., EntitlementsCache],
    make_store: Callable[..., Store],
    redis_client: redis.Redis,
    prefix: str,
    customer: str,
    stub: EdgeStub,
) -> None:
    make_store().apply(factory.parsed(factory.invalidation(3000, customer)))
    stub.put(customer, snapshot_body(features={"seats": 1}, timestamp=1000))
    cache = make_cache()
    keys = KeyLayout(prefix).customer(customer)

    older = cache.get_entitlements(customer)

    assert (older.source, older.timestamp) == ("upstream", 1000)  # answered, not written
    assert redis_client.get(keys.entitlements) is None
    assert redis_client.get(keys.entitlements + "#timestamp") == "3000"
    stub.put(customer, snapshot_body(features={"seats": 2}, timestamp=4000))
    assert cache.get_entitlements(customer).source == "upstream"
    newer = cache.get_entitlement(customer, "seats")
    assert (newer.source, newer.timestamp, newer.current_usage) == ("cache", 4000, 2)


def test_unknown_customer_is_denied_and_not_cached(
    make_cache: Callable[..., EntitlementsCache],
    redis_client: redis.Redis,
    prefix: str,
    customer: str,
) -> None:
    cache = make_cache()
    result = cache.get_entitlements(customer)
    assert (result.source, result.access_denied_reason, result.entitlements) == (
        "upstream",
        "CustomerNotFound",
        (),
    )
    access = cache.get_entitlement(customer, "seats")
    assert (access.has_access, access.access_denied_reason) == (False, "CustomerNotFound")
    scoped = cache.get_entitlements(customer, "r1")
    assert scoped.access_denied_reason == "CustomerResourceNotFound"
    assert list(redis_client.scan_iter(match=f"{prefix}:*")) == []


def test_resource_scope_hits_when_its_global_entry_is_not_newer(
    make_cache: Callable[..., EntitlementsCache],
    make_store: Callable[..., Store],
    customer: str,
    stub: EdgeStub,
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    store.apply(factory.parsed(factory.entitlements(customer, 100, features={"a": 1})))
    store.apply(
        factory.parsed(factory.entitlements(customer, 100, resource="r1", features={"b": 2}))
    )
    result = make_cache().get_entitlements(customer, "r1")
    assert (result.source, result.resource_id, result.timestamp) == ("cache", "r1", 100)
    assert [e.id for e in result.entitlements] == ["b"]
    assert stub.requests(customer, "r1") == 0


def test_resource_scope_with_missing_global_entry_is_a_miss(
    make_cache: Callable[..., EntitlementsCache],
    make_store: Callable[..., Store],
    customer: str,
    stub: EdgeStub,
) -> None:
    make_store(policy=CacheUpdatePolicy.UPSERT).apply(
        factory.parsed(factory.entitlements(customer, 100, resource="r1", features={"old": 1}))
    )
    stub.put(customer, snapshot_body(features={"a": 1}))
    stub.put(customer, snapshot_body(features={"b": 5}), resource="r1")
    cache = make_cache()

    first = cache.get_entitlements(customer, "r1")
    second = cache.get_entitlements(customer, "r1")

    assert first.source == "upstream"
    assert [e.id for e in first.entitlements] == ["b"]
    assert (second.source, second.entitlements) == ("cache", first.entitlements)
    assert stub.requests(customer, "r1") == 1
    assert stub.requests(customer) == 1  # the global entry was filled too
    assert cache.get_entitlements(customer).source == "cache"


def test_resource_scope_with_newer_global_entry_is_a_miss(
    make_cache: Callable[..., EntitlementsCache],
    make_store: Callable[..., Store],
    customer: str,
    stub: EdgeStub,
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    store.apply(
        factory.parsed(factory.entitlements(customer, 100, resource="r1", features={"b": 1}))
    )
    stub.put(customer, snapshot_body(features={"b": 3}, timestamp=150), resource="r1")
    stub.put(customer, snapshot_body(features={"a": 1}, timestamp=200))
    store.apply(factory.parsed(factory.entitlements(customer, 200, features={"a": 1})))
    cache = make_cache()

    first = cache.get_entitlements(customer, "r1")
    second = cache.get_entitlements(customer, "r1")

    assert (first.source, first.timestamp) == ("upstream", 200)  # covers the global version
    b = second.find("FEATURE", "b")
    assert (second.source, second.timestamp, b and b.current_usage) == ("cache", 200, 3)
    assert stub.requests(customer, "r1") == 1
    assert stub.requests(customer) == 0


@pytest.mark.parametrize(
    ("customer_id", "resource_id"),
    [("", None), ("a\nb", None), ("x" * 257, None), (42, None), ("cus", ""), ("cus", 7)],
)
def test_bad_ids_fail_before_any_io(customer_id: Any, resource_id: Any) -> None:
    cache = EntitlementsCache(
        redis_port=1, edge_api_url="http://127.0.0.1:1", options=ReaderOptions(upstream_retries=0)
    )
    try:
        with pytest.raises(InvalidArgument) as caught:
            cache.get_entitlements(customer_id, resource_id)
        assert isinstance(caught.value, ValueError)
        with pytest.raises(InvalidArgument, match="feature_id"):
            cache.get_entitlement("cus", "")
        with pytest.raises(InvalidArgument, match="currency_id"):
            cache.get_credit_entitlement("cus", None)  # type: ignore[arg-type]
    finally:
        cache.close()


def test_bad_options_and_settings_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="upstream_timeout_seconds"):
        ReaderOptions(upstream_timeout_seconds=0)
    with pytest.raises(InvalidArgument, match="local_ttl_seconds"):
        ReaderOptions(local_ttl_seconds=-1)
    with pytest.raises(Exception, match="EDGE_API_URL"):
        EntitlementsCache(edge_api_url="ftp://nowhere")
    with pytest.raises(Exception, match="unknown setting 'redis_hots'"):
        EntitlementsCache(redis_hots="x")


def test_script_flush_is_survived(
    make_cache: Callable[..., EntitlementsCache],
    redis_client: redis.Redis,
    customer: str,
    stub: EdgeStub,
) -> None:
    stub.put(customer, snapshot_body(features={"a": 1}))
    cache = make_cache()
    assert cache.get_entitlements(customer).source == "upstream"
    redis_client.script_flush()
    assert cache.get_entitlements(customer).source == "cache"


def test_local_cache_serves_without_redis_and_is_bounded(
    make_cache: Callable[..., EntitlementsCache],
    redis_client: redis.Redis,
    prefix: str,
    customer: str,
    stub: EdgeStub,
) -> None:
    for suffix in ("a", "b", "c"):
        stub.put(customer + suffix, snapshot_body(features={"a": 1}))
    local = make_cache(options=ReaderOptions(local_ttl_seconds=60, local_max_entries=2))
    plain = make_cache()
    for suffix in ("a", "b", "c"):
        local.get_entitlements(customer + suffix)
    assert len(local.local) == 2
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.unlink(key)

    assert local.get_entitlements(customer + "c").source == "cache"  # from the process
    assert stub.requests(customer + "c") == 1
    assert plain.get_entitlements(customer + "c").source == "upstream"  # off by default
    assert stub.requests(customer + "c") == 2


def test_redis_down_answers_from_the_upstream(stub: EdgeStub, prefix: str, customer: str) -> None:
    own = RedisServer().start()
    stub.put(customer, snapshot_body(features={"seats": 2}))
    cache = own_cache(own.port, stub.url, prefix)
    try:
        assert cache.get_entitlements(customer).source == "upstream"
        assert cache.get_entitlements(customer).source == "cache"
        own.stop()
        down = cache.get_entitlement(customer, "seats")
        assert (down.source, down.has_access, down.current_usage) == ("upstream", True, 2)
        own.start()  # empty again (no persistence): the SDK refills it
        assert cache.get_entitlements(customer).source == "upstream"
        assert cache.get_entitlements(customer).source == "cache"
    finally:
        cache.close()
        own.stop()


def test_upstream_down_answers_from_the_cache_and_both_down_raise(
    prefix: str, customer: str
) -> None:
    own_redis = RedisServer().start()
    own_stub = EdgeStub().start()
    cache = own_cache(own_redis.port, own_stub.url, prefix)
    try:
        own_stub.put(customer, snapshot_body(features={"seats": 2}))
        assert cache.get_entitlements(customer).source == "upstream"
        own_stub.stop()
        assert cache.get_entitlement(customer, "seats").source == "cache"
        with pytest.raises(EntitlementsUnavailable):
            cache.get_entitlements(customer + "-other")  # a miss with the upstream down
        own_redis.stop()
        with pytest.raises(EntitlementsUnavailable, match=customer):
            cache.get_entitlements(customer)
        own_stub.start()
        assert cache.get_entitlements(customer).source == "upstream"
    finally:
        cache.close()
        own_stub.stop()
        own_redis.stop()


def test_stale_resource_entry_is_served_when_the_upstream_is_down(
    make_cache: Callable[..., EntitlementsCache],
    make_store: Callable[..., Store],
    customer: str,
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    store.apply(
        factory.parsed(factory.entitlements(customer, 100, resource="r1", features={"b": 1}))
    )
    cache = make_cache(edge_api_url="http://127.0.0.1:1")
    result = cache.get_entitlements(customer, "r1")  # global entry missing: a miss
    assert (result.source, result.stale, result.timestamp) == ("cache", True, 100)


class CountingRedis(redis.Redis):
    """A client that records every command it sends (a pipeline would bypass it)."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


def test_a_hit_is_one_redis_round_trip(
    make_cache: Callable[..., EntitlementsCache],
    make_store: Callable[..., Store],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    customer: str,
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    store.apply(factory.parsed(factory.entitlements(customer, 100, features={"a": 1})))
    scoped = factory.entitlements(customer, 100, resource="r1", credits={"c": 1})
    store.apply(factory.parsed(scoped))
    counting = CountingRedis(port=redis_server.port, decode_responses=True)
    counting.sent = []
    cache = make_cache(redis=counting)
    cache.get_entitlements(customer)  # loads the script
    for read in (
        lambda: cache.get_entitlements(customer),
        lambda: cache.get_entitlement(customer, "a"),
        lambda: cache.get_credit_entitlement(customer, "c", "r1"),
    ):
        counting.sent.clear()
        calls = redis_client.info("commandstats")["cmdstat_evalsha"]["calls"]
        assert read().source == "cache"
        assert counting.sent == ["EVALSHA"]
        assert redis_client.info("commandstats")["cmdstat_evalsha"]["calls"] == calls + 1
    counting.close()


def test_a_hanging_redis_is_bounded_by_its_timeout(
    stub: EdgeStub, prefix: str, customer: str
) -> None:
    own = RedisServer().start()
    stub.put(customer, snapshot_body(features={"seats": 2}))
    slow_retry = ReaderOptions(upstream_retries=0, redis_retry_after_seconds=30)
    cache = own_cache(own.port, stub.url, prefix, options=slow_retry, timeout=0.3)
    try:
        assert cache.get_entitlements(customer).source == "upstream"
        own.pause()  # accepts nothing, answers nothing
        assert cache.get_entitlements(customer).source == "upstream"
        assert cache.get_entitlements(customer).source == "upstream"  # Redis skipped for now
    finally:
        own.resume()
        cache.close()
        own.stop()
