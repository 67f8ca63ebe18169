# Generated from cache_pipeline/client/aio.py by `make generate` (scripts/unasync_client.py).
# Do not edit: edit aio.py (the sync docstrings: SYNC_DOCSTRINGS there), then regenerate.
"""``EntitlementsCache``: the synchronous reader SDK (redis-py, httpx)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from functools import partial
from time import sleep
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
    ClusterGate,
    RedisClient,
    connect,
    fetch_with_global,
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
from cache_pipeline.client.upstream import EdgeAnswer, EdgeClient
from cache_pipeline.config import ReaderSettings
from cache_pipeline.keys import CustomerKeys

T = TypeVar("T")

logger = logging.getLogger(__name__)


class EntitlementsCache(ReaderBase):
    """Entitlement checks from the Redis cache, with Stigg's Edge API behind it.

    ``EntitlementsCache()`` reads the settings from the environment (REDIS_*,
    ENVIRONMENT_PREFIX, KEYS_TTL_IN_SECS, EDGE_API_URL, SERVER_API_KEY,
    REDIS_CLUSTER); keyword arguments named like the settings (``redis_host=``,
    ``environment_prefix=``, ...) override them, and ``redis=``/``http=`` take
    ready-made clients. The getters answer as Stigg's Node SDK 3.95.0 does from the
    same Redis. A hit is one Redis round trip; a miss asks the Edge API once per scope
    across threads and processes, writes the answer back as Stigg's SDK would and
    answers from it; when neither can answer, the getter's fallback. Bad arguments
    raise ``InvalidArgument`` (a ``ValueError``) before any I/O.
    """

    def __init__(
        self,
        settings: ReaderSettings | None = None,
        options: ReaderOptions | None = None,
        *,
        redis: RedisClient | None = None,
        http: httpx.Client | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__(settings, options, overrides)
        self._owns_redis = redis is None
        self.redis: RedisClient = redis if redis is not None else connect(self.settings)
        self.edge = EdgeClient(self.options.edge(self.settings), http)
        self._read_script = self.redis.register_script(script_source("v2_read_scope"))
        self._write_script = self.redis.register_script(script_source("v2_write_scope"))
        self._release_script = self.redis.register_script(script_source("release_lock"))
        self._cluster_gate = ClusterGate(self.redis)

    # -- public API ---------------------------------------------------------

    def get_boolean_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        fallback: Mapping[str, Any] | None = None,
    ) -> BooleanEntitlement:
        """Stigg's ``getBooleanEntitlement``."""
        query = self._feature("BOOLEAN", feature_id, fallback=fallback)
        return typed(BooleanEntitlement, self._ask(customer_id, resource_id, query))

    def get_numeric_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        fallback: Mapping[str, Any] | None = None,
    ) -> NumericEntitlement:
        """Stigg's ``getNumericEntitlement``: ``value`` is the limit."""
        query = self._feature("NUMERIC", feature_id, fallback=fallback)
        return typed(NumericEntitlement, self._ask(customer_id, resource_id, query))

    def get_metered_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        requested_usage: Number | None = None,
        fallback: Mapping[str, Any] | None = None,
    ) -> MeteredEntitlement:
        """Stigg's ``getMeteredEntitlement``: may ``requested_usage`` more be used."""
        query = self._feature(
            "METERED", feature_id, requested_usage=requested_usage, fallback=fallback
        )
        return typed(MeteredEntitlement, self._ask(customer_id, resource_id, query))

    def get_enum_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        requested_values: list[str] | tuple[str, ...] | None = None,
        fallback: Mapping[str, Any] | None = None,
    ) -> EnumEntitlement:
        """Stigg's ``getEnumEntitlement``: are all ``requested_values`` allowed."""
        query = self._feature(
            "ENUM", feature_id, requested_values=requested_values, fallback=fallback
        )
        return typed(EnumEntitlement, self._ask(customer_id, resource_id, query))

    def get_entitlement(
        self,
        customer_id: str,
        feature_id: str,
        resource_id: str | None = None,
        *,
        requested_usage: Number | None = None,
        requested_values: list[str] | tuple[str, ...] | None = None,
        fallback: Mapping[str, Any] | None = None,
    ) -> AnyEntitlement:
        """Stigg's untyped ``getEntitlement``: the answer's type follows the feature's."""
        query = self._feature(
            "ENTITLEMENT",
            feature_id,
            requested_usage=requested_usage,
            requested_values=requested_values,
            fallback=fallback,
        )
        return self._ask(customer_id, resource_id, query)

    def get_entitlements(
        self, customer_id: str, resource_id: str | None = None
    ) -> CustomerEntitlements:
        """Stigg's ``getEntitlements``: every entitlement of the customer (scope)."""
        return self._ask(customer_id, resource_id, self._whole_scope())

    def get_credit_entitlement(
        self,
        customer_id: str,
        currency_id: str,
        resource_id: str | None = None,
        *,
        requested_amount: Number = 0,
    ) -> CreditEntitlement:
        """The credit balance of ``currency_id`` and whether ``requested_amount`` fits it."""
        query = self._credit(currency_id, requested_amount)
        return self._ask(customer_id, resource_id, query)

    def close(self) -> None:
        """Close the HTTP pool, and the Redis pool when this object created it."""
        self.edge.close()
        if self._owns_redis:
            self.redis.close()

    def __enter__(self) -> EntitlementsCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the read path ------------------------------------------------------

    def _ask(self, customer_id: object, resource_id: object, query: Query[T]) -> T:
        """The answer to one call: in-process cache, then Redis, then the Edge API."""
        scope = self._scope(customer_id, resource_id)
        request = self._request(query)
        found = self._local_answer(query, scope, request)
        if found is not None:
            return found
        reply = self._read(scope, request)
        if reply is None:
            return self._without_cache(query, scope)
        verdict = self._judge(query, scope, reply)
        if isinstance(verdict, CachedScope):
            self._keep_local(scope, request, reply)
            return self._from_cache(query, scope, verdict)
        return self._fill(query, scope, request, verdict)

    def _read(self, scope: Scope, request: ReadRequest) -> DecodedReply | None:
        """The read script's reply; None when Redis is in trouble (logged, never raised)."""
        if self._redis_resting():
            return None
        cluster = self.layout.cluster
        try:
            self._cluster_gate.open()
            keys, args = scope.read_call(request, cluster=cluster)
            reply = list(self._read_script(keys=keys, args=args))
            global_key = scope.global_timestamp_key(cluster=cluster)
            if global_key is not None:
                reply = with_global_timestamp(reply, self.redis.get(global_key))
            return decode(reply)
        except CACHE_TROUBLE as exc:
            self._cache_trouble("read", exc)
            return None

    def _read_verdict(self, query: Query[T], scope: Scope, request: ReadRequest) -> Verdict | None:
        reply = self._read(scope, request)
        return None if reply is None else self._judge(query, scope, reply)

    def _fill(self, query: Query[T], scope: Scope, request: ReadRequest, miss: ScopeMiss) -> T:
        """A miss: one reader per scope asks the Edge API, the others wait for its write."""
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.options.lock_wait
        while True:
            locked = self._lock(scope, token)
            if locked is None:
                return self._without_cache(query, scope)
            if locked:
                try:
                    again = self._read_verdict(query, scope, request)
                    if isinstance(again, CachedScope):
                        return self._from_cache(query, scope, again)
                    return self._fetch(query, scope, request, again or miss)
                finally:
                    self._unlock(scope, token)
            if time.monotonic() >= deadline:
                logger.warning("miss lock %s still held; asking the Edge API", scope.keys.lock)
                return self._fetch(query, scope, request, miss)
            sleep(self.options.poll_interval_seconds)
            again = self._read_verdict(query, scope, request)
            if again is None:
                return self._without_cache(query, scope)
            if isinstance(again, CachedScope):
                return self._from_cache(query, scope, again)
            miss = again

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

    # -- the Edge API path --------------------------------------------------

    def _fetch(self, query: Query[T], scope: Scope, request: ReadRequest, miss: ScopeMiss) -> T:
        """Ask the Edge API (the global scope too when it is missing), write back, answer."""
        if self._edge_resting():
            return self._fallback(query, scope)
        try:
            answer = self._fetch_scopes(scope, miss)
        except UPSTREAM_TROUBLE as exc:
            return self._upstream_failed(query, scope, exc)
        self._write(scope.keys, answer)
        if not query.needs_cache:
            return self._from_edge(query, scope, answer)
        again = self._read_verdict(query, scope, request)
        if isinstance(again, CachedScope):
            return self._from_cache(query, scope, again)
        return self._fallback(query, scope)

    def _fetch_scopes(self, scope: Scope, miss: ScopeMiss) -> EdgeAnswer:
        """The scope's Edge answer; the global scope's is written back when it is missing."""
        if miss.global_missing and scope.global_keys is not None:
            keep_global = partial(self._write, scope.global_keys)
            return fetch_with_global(self.edge, scope.customer_id, scope.resource_id, keep_global)
        return self.edge.fetch(scope.customer_id, scope.resource_id)

    def _without_cache(self, query: Query[T], scope: Scope) -> T:
        """Redis is in trouble: answer from the Edge API alone, nothing written."""
        if query.needs_cache or self._edge_resting():
            return self._fallback(query, scope)
        try:
            answer = self.edge.fetch(scope.customer_id, scope.resource_id)
        except UPSTREAM_TROUBLE as exc:
            return self._upstream_failed(query, scope, exc)
        return self._from_edge(query, scope, answer)

    def _write(self, keys: CustomerKeys, answer: EdgeAnswer) -> None:
        """Write an Edge answer back (v2_write_scope.lua); cache trouble is only logged."""
        call = self._write_call(keys, answer)
        if call is None:
            return
        try:
            self._cluster_gate.open()
            self._written(keys, self._write_script(keys=call.keys, args=call.args))
        except CACHE_TROUBLE as exc:
            self._cache_trouble("write-back", exc)
