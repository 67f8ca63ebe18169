"""``EntitlementsCache``: the synchronous reader SDK (redis-py, httpx)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import httpx

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
from cache_pipeline.redis_client import connect
from cache_pipeline.store import Outcome, RedisClient, Store
from cache_pipeline.upstream import UpstreamAnswer, UpstreamClient

logger = logging.getLogger(__name__)


class EntitlementsCache(ReaderBase):
    """Entitlement checks from the Redis cache, with the upstream API behind it.

    ``EntitlementsCache()`` reads the settings from the environment (REDIS_*,
    ENVIRONMENT_PREFIX, KEYS_TTL_IN_SECS, EDGE_API_URL, SERVER_API_KEY,
    REDIS_CLUSTER); keyword arguments named like the settings (``redis_host=``,
    ``environment_prefix=``, ...) override them, and ``redis=``/``http=`` take
    ready-made clients. A hit is one Redis round trip; a miss asks the upstream
    once per scope across threads and processes and writes the answer back.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        options: ReaderOptions | None = None,
        *,
        redis: RedisClient | None = None,
        http: httpx.Client | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(settings, options, overrides)
        self._owns_redis = redis is None
        self.redis: RedisClient = redis if redis is not None else connect(self.settings)
        self.upstream = UpstreamClient(self.options.upstream(self.settings), http)
        self.store = Store(
            self.redis,
            self.layout,
            ttl=self.settings.keys_ttl_in_secs,
            policy=CacheUpdatePolicy.UPSERT,
        )
        self._read_script = self.redis.register_script(script_source("read_customer"))
        self._release_script = self.redis.register_script(script_source("release_lock"))

    # -- public API ---------------------------------------------------------

    def get_entitlements(
        self, customer_id: str, resource_id: str | None = None
    ) -> CustomerEntitlements:
        """Every entitlement of the customer (scope) with usage and credit balances merged.

        Raises ``InvalidArgument`` for a bad id (before any I/O) and
        ``EntitlementsUnavailable`` when neither the cache nor the upstream can answer.
        """
        return self._get(customer_id, resource_id)

    def get_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        requested_usage: Number = 0,
    ) -> FeatureAccess:
        """Access to one feature: has_access, usage limit and current usage."""
        result = self._get(customer_id, resource_id, only_feature(feature_id))
        return feature_access(result, feature_id, requested_usage)

    def get_credit_entitlement(
        self,
        customer_id: str,
        currency_id: str,
        resource_id: str | None = None,
        *,
        requested_amount: Number = 0,
    ) -> CreditAccess:
        """One credit grant: has_access, limit, current usage and remaining balance."""
        result = self._get(customer_id, resource_id, only_credit(currency_id))
        return credit_access(result, currency_id, requested_amount)

    def close(self) -> None:
        """Close the HTTP pool, and the Redis pool when this object created it."""
        self.upstream.close()
        if self._owns_redis:
            self.redis.close()

    def __enter__(self) -> EntitlementsCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the read path ------------------------------------------------------

    def _get(
        self, customer_id: str, resource_id: str | None, only: tuple[Kind, str] | None = None
    ) -> CustomerEntitlements:
        """The scope's answer: in-process cache, then Redis, then the upstream.

        With ``only`` (and the in-process cache off) a cache hit holds just that entry.
        """
        scope = self._scope(customer_id, resource_id, only)
        found = self._from_local(scope)
        if found is not None:
            return found
        result = self._resolve(scope)
        self._keep_local(scope, result)
        return result

    def _resolve(self, scope: Scope) -> CustomerEntitlements:
        cached = self._read(scope)
        if cached is None:
            return self._upstream_only(scope)
        found = hit_result(cached)
        return found if found is not None else self._fill(scope, cached)

    def _read(self, scope: Scope) -> CachedRead | None:
        """What the cache holds; None when Redis is in trouble (logged, never raised)."""
        if self._redis_resting():
            return None
        try:
            keys, args = scope.script_call(cluster=self.layout.cluster)
            reply = self._read_script(keys=keys, args=args)
            read = decode(reply, scope)
            if self.layout.cluster and scope.global_keys is not None:
                read = with_global_version(read, self._global_version(scope))
            return read
        except CACHE_TROUBLE as exc:
            self._cache_trouble("read", exc)
            return None

    def _global_version(self, scope: Scope) -> int | None:
        assert scope.global_keys is not None
        key = scope.global_keys.entitlements
        pipe = self.redis.pipeline(transaction=False)
        pipe.exists(key)
        pipe.get(key + "#timestamp")
        exists, version = pipe.execute()
        return global_version(exists, version)

    def _fill(self, scope: Scope, cached: CachedRead) -> CustomerEntitlements:
        """A miss: one reader per scope asks the upstream, the others wait for its write."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.options.lock_wait
        while True:
            locked = self._lock(scope, token)
            if locked is None:
                return self._upstream_only(scope, fallback=cached)
            if locked:
                try:
                    again = self._read(scope)
                    found = hit_result(again)
                    if found is not None:
                        return found
                    return self._fetch_and_write(scope, again or cached)
                finally:
                    self._unlock(scope, token)
            if time.monotonic() >= deadline:
                logger.warning("miss lock of %s still held; asking the upstream", scope.keys.lock)
                return self._fetch_and_write(scope, cached)
            time.sleep(self.options.poll_interval_seconds)
            again = self._read(scope)
            if again is None:
                return self._upstream_only(scope, fallback=cached)
            found = hit_result(again)
            if found is not None:
                return found
            cached = again if again.result is not None else cached

    def _lock(self, scope: Scope, token: str) -> bool | None:
        try:
            ms = self.options.lock_ttl_ms
            return bool(self.redis.set(scope.keys.lock, token, nx=True, px=ms))
        except CACHE_TROUBLE as exc:
            self._cache_trouble("lock", exc)
            return None

    def _unlock(self, scope: Scope, token: str) -> None:
        try:
            self._release_script(keys=(scope.keys.lock,), args=(token,))
        except CACHE_TROUBLE as exc:  # the lock expires on its own
            self._cache_trouble("unlock", exc)

    # -- the upstream path --------------------------------------------------

    def _fetch_and_write(self, scope: Scope, cached: CachedRead) -> CustomerEntitlements:
        try:
            if cached.global_missing:
                self._write(self.upstream.fetch(scope.customer_id))
            answer = self.upstream.fetch(scope.customer_id, scope.resource_id)
        except UPSTREAM_TROUBLE as exc:
            return stale_or_unavailable(scope, cached, exc)
        if answer is not None and self._write(answer) is Outcome.STALE:
            newer = hit_result(self._read(scope))
            if newer is not None:
                return newer
        return upstream_result(scope, answer)

    def _upstream_only(
        self, scope: Scope, fallback: CachedRead | None = None
    ) -> CustomerEntitlements:
        """Redis is in trouble: answer from the upstream without the cache."""
        try:
            answer = self.upstream.fetch(scope.customer_id, scope.resource_id)
        except UPSTREAM_TROUBLE as exc:
            return stale_or_unavailable(scope, fallback, exc)
        return upstream_result(scope, answer)

    def _write(self, answer: UpstreamAnswer | None) -> Outcome | None:
        """Write an upstream answer back (UPSERT, monotonic); cache trouble is only logged."""
        if answer is None or self._redis_resting():
            return None
        try:
            return self.store.apply(answer.to_message(), policy=CacheUpdatePolicy.UPSERT)
        except CACHE_TROUBLE as exc:
            self._cache_trouble("write-back", exc)
            return None
