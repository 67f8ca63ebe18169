"""AsyncEntitlementsCache: the same behaviours as the sync client, on asyncio."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cache_pipeline.client import (
    AsyncEntitlementsCache,
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


@pytest.fixture(scope="module")
def stub() -> Iterator[EdgeStub]:
    server = EdgeStub(latency_ms=200).start()
    yield server
    server.stop()


@pytest.fixture
def customer() -> str:
    return f"cus-{uuid.uuid4().hex[:10]}"


def _cache(port: int, prefix: str, url: str, **options: Any) -> AsyncEntitlementsCache:
    return AsyncEntitlementsCache(
        options=ReaderOptions(
            **({"upstream_retries": 0, "redis_retry_after_seconds": 0} | options)
        ),
        redis_port=port,
        redis_timeout_secs=1,
        environment_prefix=prefix,
        edge_api_url=url,
        server_api_key=STUB_API_KEY,
    )


def test_hit_merges_usage(
    redis_server: RedisServer, make_store: Any, prefix: str, customer: str, stub: EdgeStub
) -> None:
    store: Store = make_store(policy=CacheUpdatePolicy.UPSERT)
    store.apply(factory.parsed(factory.entitlements(customer, 100, features={"seats": 3})))
    store.apply(factory.parsed(factory.usage(customer, 150, "seats", 6)))
    store.apply(
        factory.parsed(factory.entitlements(customer, 100, credits={"ai": 5}, resource="r"))
    )
    store.apply(factory.parsed(factory.credits(customer, 150, "ai", 40, limit=100, resource="r")))

    async def scenario() -> tuple[Any, Any]:
        async with _cache(redis_server.port, prefix, stub.url) as cache:
            seats = await cache.get_entitlement(customer, "seats")
            ai = await cache.get_credit_entitlement(customer, "ai", "r")
            return seats, ai

    seats, ai = asyncio.run(scenario())
    assert (seats.source, seats.timestamp, seats.current_usage, seats.has_access) == (
        "cache",
        100,
        6,
        True,
    )
    assert (ai.source, ai.usage_limit, ai.current_usage, ai.remaining_balance) == (
        "cache",
        100,
        40,
        60,
    )
    assert stub.requests(customer) == 0


def test_miss_writes_back_and_concurrent_misses_make_one_request(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    make_store: Any,
    prefix: str,
    customer: str,
    stub: EdgeStub,
) -> None:
    answer = stub.put(customer, snapshot_body(features={"seats": 4}, credits={"ai": 9}))

    async def scenario() -> tuple[list[str], str]:
        async with _cache(redis_server.port, prefix, stub.url) as cache:
            results = await asyncio.gather(*(cache.get_entitlements(customer) for _ in range(50)))
            again = await cache.get_entitlements(customer)
            return [r.source for r in results], again.source

    sources, again = asyncio.run(scenario())
    assert sources.count("upstream") == 1
    assert again == "cache"
    assert stub.requests(customer) == 1
    layout = KeyLayout(prefix)
    expected = ReferenceCache(layout, CacheUpdatePolicy.UPSERT)
    expected.apply_all([UpstreamAnswer.model_validate(answer).to_message()])
    assert read_state(redis_client, layout) == expected.snapshot()
    make_store()  # its teardown removes the test's keys


def test_failure_modes(prefix: str, customer: str) -> None:
    own_redis = RedisServer().start()
    own_stub = EdgeStub().start()
    own_stub.put(customer, snapshot_body(features={"seats": 2}))

    async def scenario() -> list[str]:
        seen: list[str] = []
        async with _cache(own_redis.port, prefix, own_stub.url) as cache:
            seen.append((await cache.get_entitlements(customer)).source)
            own_redis.stop()
            seen.append((await cache.get_entitlements(customer)).source)  # Redis down
            own_redis.start()
            seen.append((await cache.get_entitlements(customer)).source)  # refilled
            own_stub.stop()
            seen.append((await cache.get_entitlements(customer)).source)  # upstream down
            own_redis.stop()
            with pytest.raises(EntitlementsUnavailable):
                await cache.get_entitlements(customer)
            with pytest.raises(InvalidArgument):
                await cache.get_entitlements("")
        return seen

    try:
        assert asyncio.run(scenario()) == ["upstream", "upstream", "upstream", "cache"]
    finally:
        own_stub.stop()
        own_redis.stop()
