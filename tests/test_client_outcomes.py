"""The reader's outcomes (hit, miss, fallback, edge_error) and its rest after the Edge API failed.

Against a real redis-server and a recording Edge API over HTTP: a miss answered from the
Edge API then hits; an Edge API that fails is not asked again for
``edge_retry_after_seconds`` (the recording server sees no request meanwhile), so the
fallback comes at once; a refused connection is not retried within a call; the
Prometheus hook counts what the callback sees.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from prometheus_client import CollectorRegistry

from cache_pipeline.client import AsyncEntitlementsCache, EntitlementsCache, ReaderOptions
from cache_pipeline.client.metrics import prometheus_outcomes
from tests.support.edge_answers import answer, boolean, request_line
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer, free_port


def settings_for(redis_port: int, edge_url: str, prefix: str) -> dict[str, Any]:
    return {
        "redis_port": redis_port,
        "environment_prefix": prefix,
        "edge_api_url": edge_url,
        "server_api_key": "k",
        "redis_timeout_secs": 1,
    }


def options(seen: list[str], **extra: Any) -> ReaderOptions:
    return ReaderOptions(
        upstream_retries=0, redis_retry_after_seconds=0, outcomes=seen.append, **extra
    )


def test_a_miss_answered_by_the_edge_then_a_hit(redis_server: RedisServer, prefix: str) -> None:
    customer = f"cus-{uuid.uuid4().hex[:8]}"
    with RecordingEdge({request_line(customer): answer(boolean("sso"))}) as edge:
        seen: list[str] = []
        with EntitlementsCache(
            options=options(seen), **settings_for(redis_server.port, edge.url, prefix)
        ) as cache:
            assert cache.get_boolean_entitlement(customer, "sso").has_access
            assert cache.get_boolean_entitlement(customer, "sso").has_access
    assert seen == ["miss", "hit"]


def test_after_the_edge_failed_the_fallback_comes_without_asking_it(
    redis_server: RedisServer, prefix: str
) -> None:
    seen: list[str] = []
    with RecordingEdge() as edge:
        edge.failure_status = 503
        with EntitlementsCache(
            options=options(seen, edge_retry_after_seconds=60),
            **settings_for(redis_server.port, edge.url, prefix),
        ) as cache:
            first = cache.get_boolean_entitlement("cus-1", "sso")
            asked = len(edge.entitlement_requests)
            again = [cache.get_boolean_entitlement("cus-1", "sso") for _ in range(5)]
            assert len(edge.entitlement_requests) == asked == 1
    assert first.is_fallback
    assert all(answer.is_fallback for answer in again)
    assert seen == ["edge_error", "fallback"] + ["fallback"] * 5


def test_with_redis_and_the_edge_refusing_connections_each_call_asks_the_edge_once_at_most(
    prefix: str,
) -> None:
    """A refused connection is not retried within the call, then the Edge API rests."""
    seen: list[str] = []
    dead = f"http://127.0.0.1:{free_port()}"
    with EntitlementsCache(
        options=ReaderOptions(outcomes=seen.append), **settings_for(free_port(), dead, prefix)
    ) as cache:
        answers = [cache.get_metered_entitlement("cus-1", "seats") for _ in range(3)]
    assert all(answer.is_fallback for answer in answers)
    assert seen == ["edge_error", "fallback", "fallback", "fallback"]


def test_the_asyncio_reader_rests_the_edge_too(redis_server: RedisServer, prefix: str) -> None:
    seen: list[str] = []

    async def calls(edge: RecordingEdge) -> None:
        async with AsyncEntitlementsCache(
            options=options(seen, edge_retry_after_seconds=60),
            **settings_for(redis_server.port, edge.url, prefix),
        ) as cache:
            for _ in range(3):
                assert (await cache.get_boolean_entitlement("cus-1", "sso")).is_fallback

    with RecordingEdge() as edge:
        edge.failure_status = 503
        asyncio.run(calls(edge))
        assert len(edge.entitlement_requests) == 1
    assert seen == ["edge_error", "fallback", "fallback", "fallback"]


def test_the_prometheus_hook_counts_each_outcome() -> None:
    registry = CollectorRegistry()
    count = prometheus_outcomes(registry)
    for outcome in ("hit", "hit", "miss", "fallback", "edge_error"):
        count(outcome)
    values = {
        outcome: registry.get_sample_value("cache_pipeline_sdk_reads_total", {"outcome": outcome})
        for outcome in ("hit", "miss", "fallback", "edge_error")
    }
    assert values == {"hit": 2.0, "miss": 1.0, "fallback": 1.0, "edge_error": 1.0}
