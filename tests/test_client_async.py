"""AsyncEntitlementsCache: the same answers as the sync client, on asyncio."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis

from cache_pipeline.client import (
    AsyncEntitlementsCache,
    EntitlementsCache,
    InvalidArgument,
    ReaderOptions,
)
from cache_pipeline.keys import KeyLayout
from tests.support.edge_answers import answer, boolean, enum, metered, numeric, request_line
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer
from tests.support.v2_writes import credit, write_scope, write_usage

API_KEY = "sdk-async-key"
ENTRIES = [boolean("sso"), numeric("projects", 20), metered("seats", 10, 3), enum("r", ["eu"])]


@pytest.fixture
def customer() -> str:
    return f"cus-{uuid.uuid4().hex[:10]}"


def _settings(port: int, prefix: str, url: str) -> dict[str, Any]:
    return {
        "redis_port": port,
        "redis_timeout_secs": 1,
        "environment_prefix": prefix,
        "edge_api_url": url,
        "server_api_key": API_KEY,
    }


def _cache(port: int, prefix: str, url: str) -> AsyncEntitlementsCache:
    options = ReaderOptions(upstream_retries=0, redis_retry_after_seconds=0)
    return AsyncEntitlementsCache(options=options, **_settings(port, prefix, url))


async def _every_getter(cache: Any, customer: str, resource: str | None) -> list[Any]:
    """Every getter once; ``cache`` is sync or async (its answers awaited when needed)."""
    calls = [
        cache.get_boolean_entitlement(customer, "sso", resource),
        cache.get_numeric_entitlement(customer, "projects", resource),
        cache.get_metered_entitlement(customer, "seats", resource, requested_usage=8),
        cache.get_enum_entitlement(customer, "r", resource, requested_values=["eu", "us"]),
        cache.get_entitlement(customer, "seats", resource, requested_usage=7),
        cache.get_entitlements(customer, resource),
        cache.get_credit_entitlement(customer, "ai", resource, requested_amount=3),
    ]
    return [await call if asyncio.iscoroutine(call) else call for call in calls]


def _json(answers: list[Any]) -> list[Any]:
    return [answer_.to_stigg_json() for answer_ in answers]


@pytest.mark.parametrize("resource", [None, "site-1"])
def test_hits_answer_as_the_sync_client_does(
    redis_server: RedisServer,
    prefixed_redis: redis.Redis,
    prefix: str,
    customer: str,
    resource: str | None,
) -> None:
    layout = KeyLayout(prefix)
    write_scope(prefixed_redis, layout, customer, ENTRIES)
    if resource is not None:
        write_scope(prefixed_redis, layout, customer, ENTRIES, resource=resource)
    ai = layout.customer(customer, resource).credit("ai")
    write_usage(prefixed_redis, layout, customer, ai, credit(1, 5), version=1, resource=resource)

    with RecordingEdge() as edge:

        async def scenario() -> list[Any]:
            async with _cache(redis_server.port, prefix, edge.url) as cache:
                return await _every_getter(cache, customer, resource)

        ours = asyncio.run(scenario())
        settings = _settings(redis_server.port, prefix, edge.url)
        with EntitlementsCache(**settings) as sync:
            expected = asyncio.run(_every_getter(sync, customer, resource))

    assert _json(ours) == _json(expected)
    assert [a.has_access for a in ours[:4]] == [True, True, False, False]
    assert ours[6].remaining_balance == 4
    assert edge.requests == []


def test_miss_writes_back_and_concurrent_misses_make_one_request(
    redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str, customer: str
) -> None:
    with RecordingEdge({request_line(customer): answer(*ENTRIES)}, latency=0.2) as edge:

        async def scenario() -> tuple[list[Any], Any]:
            async with _cache(redis_server.port, prefix, edge.url) as cache:
                results = await asyncio.gather(
                    *(cache.get_metered_entitlement(customer, "seats") for _ in range(50))
                )
                return list(results), await cache.get_entitlements(customer)

        seats, everything = asyncio.run(scenario())

    assert {s.current_usage for s in seats} == {3}
    assert everything.source == "cache"
    assert len(edge.requests) == 1
    assert prefixed_redis.exists(KeyLayout(prefix).customer(customer).feature_usage("seats"))


def test_a_resource_miss_without_global_map_fetches_both_scopes_at_once(
    redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str, customer: str
) -> None:
    responses = {
        request_line(customer): answer(boolean("a")),
        request_line(customer, "r1"): answer(boolean("b")),
    }
    with RecordingEdge(responses, together=2) as edge:  # answers once both are in flight

        async def scenario() -> tuple[bool, str]:
            async with _cache(redis_server.port, prefix, edge.url) as cache:
                b = await cache.get_boolean_entitlement(customer, "b", "r1")
                return b.has_access, (await cache.get_entitlements(customer, "r1")).source

        begin = time.monotonic()
        has_access, source = asyncio.run(scenario())
        print(f"both scopes fetched in {time.monotonic() - begin:.3f} s")

    assert (has_access, source) == (True, "cache")
    assert sorted(r.line for r in edge.requests) == sorted(responses)
    assert edge.max_in_flight == 2  # the two scopes requested at once, not one after the other


def test_failure_modes(prefix: str, customer: str) -> None:
    own_redis = RedisServer().start()

    async def scenario(edge: RecordingEdge) -> list[str]:
        seen: list[str] = []
        async with _cache(own_redis.port, prefix, edge.url) as cache:
            seen.append((await cache.get_entitlements(customer)).source)
            own_redis.stop()
            seen.append((await cache.get_entitlements(customer)).source)  # Redis down
            own_redis.start()
            seen.append((await cache.get_entitlements(customer)).source)  # refilled
            edge.fail_with(503)
            seen.append((await cache.get_entitlements(customer)).source)  # Edge down, a hit
            own_redis.stop()
            seen.append((await cache.get_entitlements(customer)).source)  # both down
            sso = await cache.get_boolean_entitlement(customer, "sso")
            seen.append("fallback" if sso.is_fallback else "answer")
            with pytest.raises(InvalidArgument):
                await cache.get_entitlements("a#b")
        return seen

    try:
        with RecordingEdge({request_line(customer): answer(*ENTRIES)}) as edge:
            assert asyncio.run(scenario(edge)) == [
                "upstream",
                "upstream",
                "upstream",
                "cache",
                "fallback",
                "fallback",
            ]
    finally:
        own_redis.stop()


def test_credit_fallback_when_redis_is_down(prefix: str, customer: str) -> None:
    async def scenario(url: str) -> Any:
        async with _cache(1, prefix, url) as cache:  # nothing listens on port 1
            return await cache.get_credit_entitlement(customer, "ai")

    with RecordingEdge() as edge:
        ai = asyncio.run(scenario(edge.url))
    assert (ai.has_access, ai.is_fallback) == (False, True)
    assert edge.requests == []
