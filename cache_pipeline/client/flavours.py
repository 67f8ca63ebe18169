"""The steps the asyncio and the sync reader take differently, beyond ``async``/``await``.

Each comes in both forms: the asyncio one named ``Async...`` or ``..._async`` (used by
``aio.py``), the sync one without (used by ``sync.py``, which is generated from ``aio.py``
by replacing the one name with the other).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry

from cache_pipeline.client.upstream import AsyncEdgeClient, EdgeAnswer, EdgeClient
from cache_pipeline.config import ReaderSettings
from cache_pipeline.store.connection import connect, connection_options, retry_backoff
from cache_pipeline.store.writer import RedisClient

AsyncRedisClient: TypeAlias = aioredis.Redis | AsyncRedisCluster

__all__ = [
    "AsyncClusterGate",
    "AsyncRedisClient",
    "ClusterGate",
    "RedisClient",
    "connect",
    "connect_async",
    "fetch_with_global",
    "fetch_with_global_async",
]


def connect_async(settings: ReaderSettings) -> AsyncRedisClient:
    """An asyncio client for the configured Redis; nothing is sent until it is used."""
    options = connection_options(settings)
    retry = Retry(retry_backoff(), retries=1)
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        return AsyncRedisCluster(retry=retry, **options)
    return aioredis.Redis(db=settings.redis_db, retry=retry, **options)


class AsyncClusterGate:
    """Holds the first command back until the client knows the cluster's nodes: the
    asyncio cluster client fails when many coroutines trigger its first discovery at once."""

    def __init__(self, redis: AsyncRedisClient) -> None:
        self._undiscovered = redis if isinstance(redis, AsyncRedisCluster) else None
        self._discovering = asyncio.Lock()

    async def open(self) -> None:
        """Return once the cluster's nodes are known (at once for a single node)."""
        if self._undiscovered is None:
            return
        async with self._discovering:
            if self._undiscovered is not None:
                await self._undiscovered.initialize()
                self._undiscovered = None


class ClusterGate:
    """Nothing to hold back: the sync cluster client knows the nodes once it is created."""

    def __init__(self, redis: RedisClient) -> None:
        del redis

    def open(self) -> None:
        """Return at once."""


async def fetch_with_global_async(
    edge: AsyncEdgeClient,
    customer_id: str,
    resource_id: str | None,
    keep_global: Callable[[EdgeAnswer], Awaitable[None]],
) -> EdgeAnswer:
    """The resource scope's Edge answer; the global scope's, asked at the same time
    (as Stigg's SDK asks them), goes to ``keep_global`` once both are in."""
    whole, answer = await asyncio.gather(
        edge.fetch(customer_id), edge.fetch(customer_id, resource_id)
    )
    await keep_global(whole)
    return answer


def fetch_with_global(
    edge: EdgeClient,
    customer_id: str,
    resource_id: str | None,
    keep_global: Callable[[EdgeAnswer], None],
) -> EdgeAnswer:
    """The resource scope's Edge answer, asked once the global scope's went to
    ``keep_global``."""
    keep_global(edge.fetch(customer_id))
    return edge.fetch(customer_id, resource_id)
