"""``AsyncEntitlementsCache``: the asyncio reader SDK (redis.asyncio, httpx.AsyncClient).

Same behaviour as ``EntitlementsCache``; the write-back runs the same planned
script calls as ``cache_pipeline.store.Store`` through the asyncio client.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from cache_pipeline.client.base import (
    UPSTREAM_TROUBLE,
    ReaderBase,
    only_credit,
    only_feature,
    upstream_result,
)
from cache_pipeline.client.models import (
    CreditAccess,
    CustomerEntitlements,
    FeatureAccess,
    Kind,
    Number,
)
from cache_pipeline.client.options import ReaderOptions
from cache_pipeline.client.reading import (
    CACHE_TROUBLE,
    CachedRead,
    Scope,
    decode,
    global_version,
    hit_result,
    script_source,
    stale_or_unavailable,
    with_global_version,
)
from cache_pipeline.client.results import credit_access, feature_access
from cache_pipeline.config import CacheUpdatePolicy, Settings
from cache_pipeline.plan import ScriptCall, plan
from cache_pipeline.redis_client import connection_options
from cache_pipeline.scripts import script_source as load_script_source
from cache_pipeline.store import Outcome
from cache_pipeline.upstream import AsyncUpstreamClient, UpstreamAnswer

AsyncRedisClient = aioredis.Redis | AsyncRedisCluster

logger = logging.getLogger(__name__)


def connect_async(settings: Settings) -> AsyncRedisClient:
    """An asyncio client for the configured Redis; nothing is sent until it is used."""
    options = connection_options(settings)
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        return AsyncRedisCluster(retry=retry, **options)
    return aioredis.Redis(db=settings.redis_db, retry=retry, **options)


class AsyncEntitlementsCache(ReaderBase):
    """asyncio counterpart of ``EntitlementsCache``: same arguments, same answers."""

    def __init__(
        self,
        settings: Settings | None = None,
        options: ReaderOptions | None = None,
        *,
        redis: AsyncRedisClient | None = None,
        http: httpx.AsyncClient | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(settings, options, overrides)
        self._owns_redis = redis is None
        self.redis: AsyncRedisClient = redis if redis is not None else connect_async(self.settings)
        self.upstream = AsyncUpstreamClient(self.options.upstream(self.settings), http)
        self._read_script = self.redis.register_script(script_source("read_customer"))
        self._release_script = self.redis.register_script(script_source("release_lock"))
        self._write_script = self.redis.register_script(load_script_source("write_entitlements"))
        self._initialized = not isinstance(self.redis, AsyncRedisCluster)
        self._initializing = asyncio.Lock()

    async def get_entitlements(
        self, customer_id: str, resource_id: str | None = None
    ) -> CustomerEntitlements:
        """See ``EntitlementsCache.get_entitlements``."""
        return await self._get(customer_id, resource_id)

    async def get_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        requested_usage: Number = 0,
    ) -> FeatureAccess:
        """See ``EntitlementsCache.get_entitlement``."""
        result = await self._get(customer_id, resource_id, only_feature(feature_id))
        return feature_access(result, feature_id, requested_usage)

    async def get_credit_entitlement(
        self,
        customer_id: str,
        currency_id: str,
        resource_id: str | None = None,
        *,
        requested_amount: Number = 0,
    ) -> CreditAccess:
        """See ``EntitlementsCache.get_credit_entitlement``."""
        result = await self._get(customer_id, resource_id, only_credit(currency_id))
        return credit_access(result, currency_id, requested_amount)

    async def aclose(self) -> None:
        """Close the HTTP pool, and the Redis pool when this object created it."""
        await self.upstream.aclose()
        if self._owns_redis:
            await self.redis.aclose()

    async def __aenter__(self) -> AsyncEntitlementsCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _get(
        self, customer_id: str, resource_id: str | None, only: tuple[Kind, str] | None = None
    ) -> CustomerEntitlements:
        """The scope's answer: in-process cache, then Redis, then the upstream.

        With ``only`` (and the in-process cache off) a cache hit holds just that entry.
        """
        scope = self._scope(customer_id, resource_id, only)
        found = self._from_local(scope)
        if found is not None:
            return found
        result = await self._resolve(scope)
        self._keep_local(scope, result)
        return result

    async def _resolve(self, scope: Scope) -> CustomerEntitlements:
        cached = await self._read(scope)
        if cached is None:
            return await self._upstream_only(scope)
        found = hit_result(cached)
        return found if found is not None else await self._fill(scope, cached)

    async def _read(self, scope: Scope) -> CachedRead | None:
        if self._redis_resting():
            return None
        try:
            await self._initialize()
            keys, args = scope.script_call(cluster=self.layout.cluster)
            reply = await self._read_script(keys=keys, args=args)
            read = decode(reply, scope)
            if self.layout.cluster and scope.global_keys is not None:
                read = with_global_version(read, await self._global_version(scope))
            return read
        except CACHE_TROUBLE as exc:
            self._cache_trouble("read", exc)
            return None

    async def _initialize(self) -> None:
        """Discover the cluster once: the asyncio cluster client fails when many
        coroutines trigger its first discovery at the same time."""
        if self._initialized:
            return
        async with self._initializing:
            if not self._initialized:
                assert isinstance(self.redis, AsyncRedisCluster)
                await self.redis.initialize()
                self._initialized = True

    async def _global_version(self, scope: Scope) -> int | None:
        assert scope.global_keys is not None
        key = scope.global_keys.entitlements
        exists = await self.redis.exists(key)
        version = await self.redis.get(key + "#timestamp")
        return global_version(exists, version)

    async def _fill(self, scope: Scope, cached: CachedRead) -> CustomerEntitlements:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.options.lock_wait
        while True:
            locked = await self._lock(scope, token)
            if locked is None:
                return await self._upstream_only(scope, fallback=cached)
            if locked:
                try:
                    again = await self._read(scope)
                    found = hit_result(again)
                    if found is not None:
                        return found
                    return await self._fetch_and_write(scope, again or cached)
                finally:
                    await self._unlock(scope, token)
            if time.monotonic() >= deadline:
                logger.warning("miss lock of %s still held; asking the upstream", scope.keys.lock)
                return await self._fetch_and_write(scope, cached)
            await asyncio.sleep(self.options.poll_interval_seconds)
            again = await self._read(scope)
            if again is None:
                return await self._upstream_only(scope, fallback=cached)
            found = hit_result(again)
            if found is not None:
                return found
            cached = again if again.result is not None else cached

    async def _lock(self, scope: Scope, token: str) -> bool | None:
        try:
            ms = self.options.lock_ttl_ms
            return bool(await self.redis.set(scope.keys.lock, token, nx=True, px=ms))
        except CACHE_TROUBLE as exc:
            self._cache_trouble("lock", exc)
            return None

    async def _unlock(self, scope: Scope, token: str) -> None:
        try:
            await self._release_script(keys=(scope.keys.lock,), args=(token,))
        except CACHE_TROUBLE as exc:
            self._cache_trouble("unlock", exc)

    async def _fetch_and_write(self, scope: Scope, cached: CachedRead) -> CustomerEntitlements:
        try:
            if cached.global_missing:
                await self._write(await self.upstream.fetch(scope.customer_id))
            answer = await self.upstream.fetch(scope.customer_id, scope.resource_id)
        except UPSTREAM_TROUBLE as exc:
            return stale_or_unavailable(scope, cached, exc)
        if answer is not None and await self._write(answer) is Outcome.STALE:
            newer = hit_result(await self._read(scope))
            if newer is not None:
                return newer
        return upstream_result(scope, answer)

    async def _upstream_only(
        self, scope: Scope, fallback: CachedRead | None = None
    ) -> CustomerEntitlements:
        try:
            answer = await self.upstream.fetch(scope.customer_id, scope.resource_id)
        except UPSTREAM_TROUBLE as exc:
            return stale_or_unavailable(scope, fallback, exc)
        return upstream_result(scope, answer)

    async def _write(self, answer: UpstreamAnswer | None) -> Outcome | None:
        """The same atomic write as ``Store.apply`` (UPSERT), through the asyncio client."""
        if answer is None or self._redis_resting():
            return None
        (call,) = plan(
            answer.to_message(),
            self.layout,
            ttl=self.settings.keys_ttl_in_secs,
            policy=CacheUpdatePolicy.UPSERT,
        )
        assert isinstance(call, ScriptCall)
        try:
            reply = int(await self._write_script(keys=call.keys, args=call.args))
        except CACHE_TROUBLE as exc:
            self._cache_trouble("write-back", exc)
            return None
        return Outcome.WRITTEN if reply > 0 else Outcome.STALE
