"""``AsyncEntitlementsCache``: the asyncio reader SDK (redis.asyncio, httpx.AsyncClient).

Same behaviour as ``EntitlementsCache``; the write-back runs the same planned
script calls as ``cache_pipeline.store.Store`` through the asyncio client.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import redis.asyncio as aioredis
from loguru import logger
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from cache_pipeline.client.local import LocalCache
from cache_pipeline.client.models import (
    CreditAccess,
    CustomerEntitlements,
    FeatureAccess,
    Kind,
    Number,
)
from cache_pipeline.client.options import (
    ReaderOptions,
    check_id,
    check_optional_id,
    resolve_settings,
)
from cache_pipeline.client.reading import (
    CACHE_TROUBLE,
    CachedRead,
    Scope,
    decode,
    script_source,
    stale_or_unavailable,
    with_global_version,
)
from cache_pipeline.client.results import (
    credit_access,
    customer_not_found,
    feature_access,
    from_upstream,
)
from cache_pipeline.config import CacheUpdatePolicy, Settings
from cache_pipeline.errors import UpstreamError, UpstreamUnavailable
from cache_pipeline.keys import KeyLayout
from cache_pipeline.plan import ScriptCall, plan
from cache_pipeline.redis_client import connection_options
from cache_pipeline.store import Outcome, load_script_source
from cache_pipeline.upstream import AsyncUpstreamClient, UpstreamAnswer

AsyncRedisClient = aioredis.Redis | AsyncRedisCluster


def connect_async(settings: Settings) -> AsyncRedisClient:
    """An asyncio client for the configured Redis; nothing is sent until it is used."""
    options = connection_options(settings)
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        return AsyncRedisCluster(retry=retry, **options)
    return aioredis.Redis(db=settings.redis_db, retry=retry, **options)


class AsyncEntitlementsCache:
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
        self.settings = resolve_settings(settings, overrides)
        self.options = options or ReaderOptions()
        self.layout = KeyLayout(self.settings.environment_prefix, self.settings.redis_cluster)
        self._owns_redis = redis is None
        self.redis: AsyncRedisClient = redis if redis is not None else connect_async(self.settings)
        self.upstream = AsyncUpstreamClient(self.options.upstream(self.settings), http)
        self.local = LocalCache(self.options.local_ttl_seconds, self.options.local_max_entries)
        self._read_script = self.redis.register_script(script_source("read_customer"))
        self._release_script = self.redis.register_script(script_source("release_lock"))
        self._write_script = self.redis.register_script(load_script_source("write_entitlements"))
        self._redis_down_until = 0.0
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
        only: tuple[Kind, str] = ("FEATURE", check_id("feature_id", feature_id))
        result = await self._get(customer_id, resource_id, only)
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
        only: tuple[Kind, str] = ("CREDIT", check_id("currency_id", currency_id))
        result = await self._get(customer_id, resource_id, only)
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
        scope = Scope.build(
            self.layout,
            check_id("customer_id", customer_id),
            check_optional_id("resource_id", resource_id),
            None if self.local.enabled else only,
        )
        local_key = (scope.customer_id, scope.resource_id)
        found = self.local.get(local_key)
        if found is not None:
            return found
        result = await self._resolve(scope)
        if not result.stale:
            self.local.put(local_key, result)
        return result

    async def _resolve(self, scope: Scope) -> CustomerEntitlements:
        cached = await self._read(scope)
        if cached is None:
            return await self._upstream_only(scope)
        if cached.hit and cached.result is not None:
            return cached.result
        return await self._fill(scope, cached)

    async def _read(self, scope: Scope) -> CachedRead | None:
        if time.monotonic() < self._redis_down_until:
            return None
        try:
            await self._initialize()
            keys, args = scope.script_call(cluster=self.layout.cluster)
            reply = await self._read_script(keys=keys, args=args)
            read = decode(reply, scope)
            if self.layout.cluster and scope.global_keys is not None:
                key = scope.global_keys.entitlements
                exists, version = (
                    await self.redis.exists(key),
                    await self.redis.get(key + "#timestamp"),
                )
                read = with_global_version(read, int(version or 0) if exists else None)
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
        pipe = self.redis.pipeline()
        pipe.exists(key)
        pipe.get(key + "#timestamp")
        exists, version = await pipe.execute()
        return int(version or 0) if exists else None

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
                    if again is not None and again.hit and again.result is not None:
                        return again.result
                    return await self._fetch_and_write(scope, again or cached)
                finally:
                    await self._unlock(scope, token)
            if time.monotonic() >= deadline:
                logger.warning("miss lock of {} still held; asking the upstream", scope.keys.lock)
                return await self._fetch_and_write(scope, cached)
            await asyncio.sleep(self.options.poll_interval_seconds)
            again = await self._read(scope)
            if again is None:
                return await self._upstream_only(scope, fallback=cached)
            if again.hit and again.result is not None:
                return again.result
            cached = again if again.result is not None else cached

    async def _lock(self, scope: Scope, token: str) -> bool | None:
        try:
            ms = int(self.options.lock_ttl * 1000)
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
        except (UpstreamUnavailable, UpstreamError) as exc:
            return stale_or_unavailable(scope, cached, exc)
        if answer is None:
            return customer_not_found(scope.customer_id, scope.resource_id)
        if await self._write(answer) is Outcome.STALE:
            newer = await self._read(scope)
            if newer is not None and newer.hit and newer.result is not None:
                return newer.result
        return from_upstream(answer.data, answer.timestamp)

    async def _upstream_only(
        self, scope: Scope, fallback: CachedRead | None = None
    ) -> CustomerEntitlements:
        try:
            answer = await self.upstream.fetch(scope.customer_id, scope.resource_id)
        except (UpstreamUnavailable, UpstreamError) as exc:
            return stale_or_unavailable(scope, fallback, exc)
        if answer is None:
            return customer_not_found(scope.customer_id, scope.resource_id)
        return from_upstream(answer.data, answer.timestamp)

    async def _write(self, answer: UpstreamAnswer | None) -> Outcome | None:
        """The same atomic write as ``Store.apply`` (UPSERT), through the asyncio client."""
        if answer is None or time.monotonic() < self._redis_down_until:
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

    def _cache_trouble(self, what: str, exc: BaseException) -> None:
        logger.warning("cache {} failed, using the upstream API: {!r}", what, exc)
        self._redis_down_until = time.monotonic() + self.options.redis_retry_after_seconds
