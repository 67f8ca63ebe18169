"""The reader SDK on a real three-master Redis Cluster (hash-tagged key layout, our SDK only)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cache_pipeline.client import AsyncEntitlementsCache, EntitlementsCache, ReaderOptions
from cache_pipeline.config import Settings
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.connection import connect
from cache_pipeline.store.writer import RedisClient
from tests.support.cluster import RedisClusterServer
from tests.support.edge_answers import answer, boolean, metered, request_line
from tests.support.recording_edge import RecordingEdge
from tests.support.v2_writes import credit, write_scope, write_usage

pytestmark = pytest.mark.cluster
OPTIONS = ReaderOptions(upstream_retries=0, redis_retry_after_seconds=0)


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServer]:
    cluster = RedisClusterServer().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def edge() -> Iterator[RecordingEdge]:
    with RecordingEdge(latency=0.1) as stub:
        yield stub


@pytest.fixture
def settings(redis_cluster: RedisClusterServer, edge: RecordingEdge) -> Settings:
    return Settings(
        redis_cluster=True,
        redis_port=redis_cluster.ports[0],
        environment_prefix=f"test-{uuid.uuid4().hex[:12]}",
        edge_api_url=edge.url,
        server_api_key="cluster-key",
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
    settings: Settings, client: RedisClient, edge: RecordingEdge, customer: str
) -> None:
    layout = KeyLayout(settings.environment_prefix, cluster=True)
    write_scope(client, layout, customer, [metered("a", 10, 1)], version=100)
    usage_key = layout.customer(customer).feature_usage("a")
    write_usage(client, layout, customer, usage_key, {"currentUsage": 5}, version=1796026500001)
    write_scope(client, layout, customer, [boolean("b")], resource="r1", version=100)
    ai = layout.customer(customer, "r1").credit("ai")
    write_usage(client, layout, customer, ai, credit(10, 15), version=100, resource="r1")
    edge.responses[request_line(customer, "r2")] = answer(boolean("b"))

    with EntitlementsCache(settings, OPTIONS) as cache:
        hit = cache.get_metered_entitlement(customer, "a", requested_usage=5)
        scoped = cache.get_entitlements(customer, "r1")
        balance = cache.get_credit_entitlement(customer, "ai", "r1")
        assert edge.requests == []
        miss = cache.get_entitlements(customer, "r2")
        again = cache.get_entitlements(customer, "r2")
        # the global map changes (newer than r2's): r2 is out of date, both scopes refetched
        write_scope(client, layout, customer, [metered("a", 10, 1)], version=1895168800000)
        edge.responses[request_line(customer)] = answer(metered("a", 10, 1))
        newer_global = cache.get_boolean_entitlement(customer, "b", "r2")

    assert (hit.has_access, hit.current_usage) == (True, 5)
    assert (scoped.source, [e.feature and e.feature.id for e in scoped.entitlements]) == (
        "cache",
        ["b"],
    )
    assert balance.remaining_balance == 5
    assert (miss.source, again.source) == ("upstream", "cache")
    assert newer_global.has_access
    assert sorted(r.line for r in edge.requests) == [
        request_line(customer),
        request_line(customer, "r2"),
        request_line(customer, "r2"),
    ]
    assert client.exists(layout.customer(customer, "r2").entitlements) == 1
    assert layout.customer(customer, "r2").entitlements.endswith(f"{{c_{customer}:r_r2}}")


def test_concurrent_async_misses_make_one_request(
    settings: Settings, client: RedisClient, edge: RecordingEdge, customer: str
) -> None:
    edge.responses[request_line(customer)] = answer(metered("seats", 10, 3))

    async def scenario() -> list[Any]:
        async with AsyncEntitlementsCache(settings, OPTIONS) as cache:
            first = await asyncio.gather(
                *(cache.get_metered_entitlement(customer, "seats") for _ in range(20))
            )
            return [*first, await cache.get_entitlements(customer)]

    *answers, everything = asyncio.run(scenario())
    assert {a.current_usage for a in answers} == {3}
    assert everything.source == "cache"
    assert len(edge.requests) == 1
    layout = KeyLayout(settings.environment_prefix, cluster=True)
    assert client.get(layout.customer(customer).feature_usage("seats")) == '{"currentUsage":3}'
