"""``AsyncEntitlementsCache``: the asyncio reader SDK (redis.asyncio, httpx.AsyncClient).

Same behaviour and answers as ``EntitlementsCache``; a resource scope whose global
scope is missing fetches both from the Edge API at once, as Stigg's SDK does.
"""

from __future__ import annotations

import logging
import time
import uuid
from asyncio import sleep
from collections.abc import Mapping
from functools import partial
from typing import Any, TypeVar

import httpx

from cache_pipeline.client.answers import (
    AnyEntitlement,
    BooleanEntitlement,
    CreditEntitlement,
    EnumEntitlement,
    MeteredEntitlement,
    Number,
    NumericEntitlement,
)
from cache_pipeline.client.base import UPSTREAM_TROUBLE, ReaderBase, typed
from cache_pipeline.client.cached_scope import CachedScope, DecodedReply, ScopeMiss, decode
from cache_pipeline.client.flavours import (
    AsyncClusterGate,
    AsyncRedisClient,
    connect_async,
    fetch_with_global_async,
)
from cache_pipeline.client.models import CustomerEntitlements
from cache_pipeline.client.options import ReaderOptions
from cache_pipeline.client.queries import Query, Verdict
from cache_pipeline.client.reading import (
    CACHE_TROUBLE,
    ReadRequest,
    Scope,
    script_source,
    with_global_timestamp,
)
from cache_pipeline.client.upstream import AsyncEdgeClient, EdgeAnswer
from cache_pipeline.config import ReaderSettings
from cache_pipeline.keys import CustomerKeys

T = TypeVar("T")

logger = logging.getLogger(__name__)


class AsyncEntitlementsCache(ReaderBase):
    """asyncio counterpart of ``EntitlementsCache``: same arguments, same answers."""

    def __init__(
        self,
        settings: ReaderSettings | None = None,
        options: ReaderOptions | None = None,
        *,
        redis: AsyncRedisClient | None = None,
        http: httpx.AsyncClient | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(settings, options, overrides)
        self._owns_redis = redis is None
        self.redis: AsyncRedisClient = redis if redis is not None else connect_async(self.settings)
        self.edge = AsyncEdgeClient(self.options.edge(self.settings), http)
        self._read_script = self.redis.register_script(script_source("v2_read_scope"))
        self._write_script = self.redis.register_script(script_source("v2_write_scope"))
        self._release_script = self.redis.register_script(script_source("release_lock"))
        self._cluster_gate = AsyncClusterGate(self.redis)

    # -- public API ---------------------------------------------------------

    async def get_boolean_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        fallback: Mapping[str, Any] | None = None,
    ) -> BooleanEntitlement:
        """See ``EntitlementsCache.get_boolean_entitlement``."""
        query = self._feature("BOOLEAN", feature_id, fallback=fallback)
        return typed(BooleanEntitlement, await self._ask(customer_id, resource_id, query))

    async def get_numeric_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        fallback: Mapping[str, Any] | None = None,
    ) -> NumericEntitlement:
        """See ``EntitlementsCache.get_numeric_entitlement``."""
        query = self._feature("NUMERIC", feature_id, fallback=fallback)
        return typed(NumericEntitlement, await self._ask(customer_id, resource_id, query))

    async def get_metered_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        requested_usage: Number | None = None,
        fallback: Mapping[str, Any] | None = None,
    ) -> MeteredEntitlement:
        """See ``EntitlementsCache.get_metered_entitlement``."""
        query = self._feature(
            "METERED", feature_id, requested_usage=requested_usage, fallback=fallback
        )
        return typed(MeteredEntitlement, await self._ask(customer_id, resource_id, query))

    async def get_enum_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        requested_values: list[str] | tuple[str, ...] | None = None,
        fallback: Mapping[str, Any] | None = None,
    ) -> EnumEntitlement:
        """See ``EntitlementsCache.get_enum_entitlement``."""
        query = self._feature(
            "ENUM", feature_id, requested_values=requested_values, fallback=fallback
        )
        return typed(EnumEntitlement, await self._ask(customer_id, resource_id, query))

    async def get_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        requested_usage: Number | None = None,
        requested_values: list[str] | tuple[str, ...] | None = None,
        fallback: Mapping[str, Any] | None = None,
    ) -> AnyEntitlement:
        """See ``EntitlementsCache.get_entitlement``."""
        query = self._feature(
            "ENTITLEMENT",
            feature_id,
            requested_usage=requested_usage,
            requested_values=requested_values,
            fallback=fallback,
        )
        return await self._ask(customer_id, resource_id, query)

    async def get_entitlements(
        self, customer_id: str, resource_id: str | None = None
    ) -> CustomerEntitlements:
        """See ``EntitlementsCache.get_entitlements``."""
        return await self._ask(customer_id, resource_id, self._whole_scope())

    async def get_credit_entitlement(
        self,
        customer_id: str,
        currency_id: str,
        resource_id: str | None = None,
        *,
        requested_amount: Number = 0,
    ) -> CreditEntitlement:
        """See ``EntitlementsCache.get_credit_entitlement``."""
        query = self._credit(currency_id, requested_amount)
        return await self._ask(customer_id, resource_id, query)

    async def aclose(self) -> None:
        """Close the HTTP pool, and the Redis pool when this object created it."""
        await self.edge.aclose()
        if self._owns_redis:
            await self.redis.aclose()

    async def __aenter__(self) -> AsyncEntitlementsCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the read path ------------------------------------------------------

    async def _ask(self, customer_id: object, resource_id: object, query: Query[T]) -> T:
        """The answer to one call: in-process cache, then Redis, then the Edge API."""
        scope = self._scope(customer_id, resource_id)
        request = self._request(query)
        found = self._local_answer(query, scope, request)
        if found is not None:
            return found
        reply = await self._read(scope, request)
        if reply is None:
            return await self._without_cache(query, scope)
        verdict = self._judge(query, scope, reply)
        if isinstance(verdict, CachedScope):
            self._keep_local(scope, request, reply)
            return self._from_cache(query, scope, verdict)
        return await self._fill(query, scope, request, verdict)

    async def _read(self, scope: Scope, request: ReadRequest) -> DecodedReply | None:
        """The read script's reply; None when Redis is in trouble (logged, never raised)."""
        if self._redis_resting():
            return None
        cluster = self.layout.cluster
        try:
            await self._cluster_gate.open()
            keys, args = scope.read_call(request, cluster=cluster)
            reply = list(await self._read_script(keys=keys, args=args))
            global_key = scope.global_timestamp_key(cluster=cluster)
            if global_key is not None:
                reply = with_global_timestamp(reply, await self.redis.get(global_key))
            return decode(reply)
        except CACHE_TROUBLE as exc:
            self._cache_trouble("read", exc)
            return None

    async def _read_verdict(
        self, query: Query[T], scope: Scope, request: ReadRequest
    ) -> Verdict | None:
        reply = await self._read(scope, request)
        return None if reply is None else self._judge(query, scope, reply)

    async def _fill(
        self, query: Query[T], scope: Scope, request: ReadRequest, miss: ScopeMiss
    ) -> T:
        """A miss: one reader per scope asks the Edge API, the others wait for its write."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.options.lock_wait
        while True:
            locked = await self._lock(scope, token)
            if locked is None:
                return await self._without_cache(query, scope)
            if locked:
                try:
                    again = await self._read_verdict(query, scope, request)
                    if isinstance(again, CachedScope):
                        return self._from_cache(query, scope, again)
                    return await self._fetch(query, scope, request, again or miss)
                finally:
                    await self._unlock(scope, token)
            if time.monotonic() >= deadline:
                logger.warning("miss lock %s still held; asking the Edge API", scope.keys.lock)
                return await self._fetch(query, scope, request, miss)
            await sleep(self.options.poll_interval_seconds)
            again = await self._read_verdict(query, scope, request)
            if again is None:
                return await self._without_cache(query, scope)
            if isinstance(again, CachedScope):
                return self._from_cache(query, scope, again)
            miss = again

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
        except CACHE_TROUBLE as exc:  # the lock expires on its own
            self._cache_trouble("unlock", exc)

    # -- the Edge API path --------------------------------------------------

    async def _fetch(
        self, query: Query[T], scope: Scope, request: ReadRequest, miss: ScopeMiss
    ) -> T:
        """Ask the Edge API (the global scope too when it is missing), write back, answer."""
        if self._edge_resting():
            return self._fallback(query, scope)
        try:
            answer = await self._fetch_scopes(scope, miss)
        except UPSTREAM_TROUBLE as exc:
            return self._upstream_failed(query, scope, exc)
        await self._write(scope.keys, answer)
        if not query.needs_cache:
            return self._from_edge(query, scope, answer)
        again = await self._read_verdict(query, scope, request)
        if isinstance(again, CachedScope):
            return self._from_cache(query, scope, again)
        return self._fallback(query, scope)

    async def _fetch_scopes(self, scope: Scope, miss: ScopeMiss) -> EdgeAnswer:
        """The scope's Edge answer; the global scope's is written back when it is missing."""
        if miss.global_missing and scope.global_keys is not None:
            keep_global = partial(self._write, scope.global_keys)
            return await fetch_with_global_async(
                self.edge, scope.customer_id, scope.resource_id, keep_global
            )
        return await self.edge.fetch(scope.customer_id, scope.resource_id)

    async def _without_cache(self, query: Query[T], scope: Scope) -> T:
        """Redis is in trouble: answer from the Edge API alone, nothing written."""
        if query.needs_cache or self._edge_resting():
            return self._fallback(query, scope)
        try:
            answer = await self.edge.fetch(scope.customer_id, scope.resource_id)
        except UPSTREAM_TROUBLE as exc:
            return self._upstream_failed(query, scope, exc)
        return self._from_edge(query, scope, answer)

    async def _write(self, keys: CustomerKeys, answer: EdgeAnswer) -> None:
        """Write an Edge answer back (v2_write_scope.lua); cache trouble is only logged."""
        call = self._write_call(keys, answer)
        if call is None:
            return
        try:
            await self._cluster_gate.open()
            self._written(keys, await self._write_script(keys=call.keys, args=call.args))
        except CACHE_TROUBLE as exc:
            self._cache_trouble("write-back", exc)
