"""The reader SDK on a real three-master Redis Cluster (hash-tagged key layout)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cache_pipeline.client import AsyncEntitlementsCache, EntitlementsCache, ReaderOptions
from cache_pipeline.config import CacheUpdatePolicy, Settings
from cache_pipeline.keys import KeyLayout
from cache_pipeline.redis_client import connect
from cache_pipeline.store import RedisClient, Store
from tests.support import factory
from tests.support.cluster import RedisClusterServer
from tests.support.edge import STUB_API_KEY, EdgeStub, snapshot_body

pytestmark = pytest.mark.cluster
OPTIONS = ReaderOptions(upstream_retries=0, redis_retry_after_seconds=0)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServer]:
    cluster = RedisClusterServer().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def stub() -> Iterator[EdgeStub]:
    server = EdgeStub(latency_ms=100).start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_cluster: RedisClusterServer, stub: EdgeStub) -> Settings:
    return Settings(
        redis_cluster=True,
        redis_port=redis_cluster.ports[0],
        environment_prefix=f"test-{uuid.uuid4().hex[:12]}",
        edge_api_url=stub.url,
        server_api_key=STUB_API_KEY,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[RedisClient]:
    redis_client = connect(settings)
    yield redis_client
    redis_client.close()


@pytest.fixture
def customer() -> str:
    return f"cus-{uuid.uuid4().hex[:10]}"


def test_hit_miss_and_resource_scopes(
    settings: Settings, client: RedisClient, stub: EdgeStub, customer: str
) -> None:
    layout = KeyLayout(settings.environment_prefix, cluster=True)
    store = Store(client, layout, ttl=600, policy=CacheUpdatePolicy.UPSERT)
    store.apply(factory.parsed(factory.entitlements(customer, 100, features={"a": 1})))
    store.apply(factory.parsed(factory.usage(customer, 120, "a", 5)))
    store.apply(
        factory.parsed(factory.entitlements(customer, 100, resource="r1", features={"b": 1}))
    )
    stub.put(customer, snapshot_body(features={"b": 2}, timestamp=300), resource="r2")
    stub.put(customer, snapshot_body(features={"a": 1}, timestamp=200))

    with EntitlementsCache(settings, OPTIONS) as cache:
        hit = cache.get_entitlement(customer, "a")
        scoped = cache.get_entitlements(customer, "r1")
        miss = cache.get_entitlements(customer, "r2")
        again = cache.get_entitlements(customer, "r2")
        # the global entry changes (upstream and pipeline agree): r2 is out of date
        stub.put(customer, snapshot_body(features={"a": 2}, timestamp=400))
        store.apply(factory.parsed(factory.entitlements(customer, 400, features={"a": 2})))
        stub.put(customer, snapshot_body(features={"b": 3}, timestamp=350), resource="r2")
        newer_global = cache.get_entitlement(customer, "b", "r2")

    assert (hit.source, hit.current_usage) == ("cache", 5)
    assert scoped.source == "cache"
    assert (miss.source, again.source, again.timestamp) == ("upstream", "cache", 300)
    assert (newer_global.source, newer_global.timestamp) == ("upstream", 400)
    assert newer_global.current_usage == 3
    assert stub.requests(customer, "r2") == 2
    assert stub.requests(customer) == 0


def test_concurrent_async_misses_make_one_request(
    settings: Settings, client: RedisClient, stub: EdgeStub, customer: str
) -> None:
    stub.put(customer, snapshot_body(credits={"ai": 7}))

    async def scenario() -> list[Any]:
        async with AsyncEntitlementsCache(settings, OPTIONS) as cache:
            first = await asyncio.gather(
                *(cache.get_credit_entitlement(customer, "ai") for _ in range(20))
            )
            scoped = await cache.get_entitlements(customer, "missing-resource")
            return [*first, scoped]

    *answers, scoped = asyncio.run(scenario())
    assert [a.source for a in answers].count("upstream") == 1
    assert {a.remaining_balance for a in answers} == {993}
    assert stub.requests(customer) == 1
    assert scoped.access_denied_reason == "CustomerResourceNotFound"
    layout = KeyLayout(settings.environment_prefix, cluster=True)
    assert client.get(layout.customer(customer).entitlements) is not None
