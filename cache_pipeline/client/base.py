"""What the sync and asyncio readers share away from I/O: settings, argument checks, queries,
the in-process cache, the Redis back-off and the write-back's script call."""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar

from cache_pipeline.client.answers import AnyEntitlement
from cache_pipeline.client.cached_scope import CachedScope, DecodedReply
from cache_pipeline.client.decide import GetterKind
from cache_pipeline.client.local import LocalCache, ReadKey
from cache_pipeline.client.options import (
    ReaderOptions,
    check_fallback,
    check_id,
    check_number,
    check_optional_number,
    check_optional_scope_id,
    check_scope_id,
    check_values,
    resolve_settings,
)
from cache_pipeline.client.queries import (
    CreditQuery,
    FeatureQuery,
    Query,
    ScopeQuery,
    ScopeView,
    Verdict,
    edge_view,
)
from cache_pipeline.client.reading import ReadRequest, Scope
from cache_pipeline.client.upstream import EdgeAnswer
from cache_pipeline.client.write_back import write_back_call, write_back_problem
from cache_pipeline.config import ReaderSettings
from cache_pipeline.contract.plan import ScriptCall
from cache_pipeline.errors import UpstreamError, UpstreamUnavailable
from cache_pipeline.keys import CustomerKeys, KeyLayout

logger = logging.getLogger(__name__)

# What an Edge API call may raise that the readers answer with the fallback instead.
UPSTREAM_TROUBLE: tuple[type[Exception], ...] = (UpstreamUnavailable, UpstreamError)
T = TypeVar("T")
E = TypeVar("E", bound=AnyEntitlement)


class ReaderBase:
    """Settings, options, key layout, the in-process cache and the Redis back-off.

    ``EntitlementsCache`` and ``AsyncEntitlementsCache`` add the clients and the I/O.
    """

    def __init__(
        self,
        settings: ReaderSettings | None,
        options: ReaderOptions | None,
        overrides: dict[str, Any],
    ) -> None:
        self.settings = resolve_settings(settings, overrides)
        self.options = options or ReaderOptions()
        self.layout = KeyLayout(self.settings.environment_prefix, self.settings.redis_cluster)
        self.local = LocalCache(self.options.local_ttl_seconds, self.options.local_max_entries)
        self._redis_down_until = 0.0
        self._edge_down_until = 0.0

    # -- arguments, checked before any I/O -------------------------------------------------

    def _scope(self, customer_id: object, resource_id: object) -> Scope:
        customer = check_scope_id("customer_id", customer_id)
        resource = check_optional_scope_id("resource_id", resource_id)
        return Scope.build(self.layout, customer, resource)

    def _feature(
        self,
        kind: GetterKind,
        feature_id: object,
        *,
        requested_usage: object = None,
        requested_values: object = None,
        fallback: object = None,
    ) -> FeatureQuery:
        feature = check_id("feature_id", feature_id)
        fields = check_fallback("fallback", fallback)
        if fields is None:
            fields = self.options.entitlements_fallback.get(feature)
        return FeatureQuery(
            kind,
            feature,
            requested_usage=check_optional_number("requested_usage", requested_usage),
            requested_values=check_values("requested_values", requested_values),
            fallback_fields=fields,
        )

    def _credit(self, currency_id: object, requested_amount: object) -> CreditQuery:
        return CreditQuery(
            check_id("currency_id", currency_id),
            check_number("requested_amount", requested_amount),
        )

    def _whole_scope(self) -> ScopeQuery:
        return ScopeQuery(self.options.entitlements_fallback)

    # -- pure steps of a read ----------------------------------------------------------------

    def _now(self) -> int:
        return self.options.clock()

    def _request(self, query: Query[T]) -> ReadRequest:
        return query.request(self.local.enabled)

    def _judge(self, query: Query[T], scope: Scope, reply: DecodedReply) -> Verdict:
        return query.judge(reply, scope, self._now())

    def _from_cache(self, query: Query[T], scope: Scope, hit: CachedScope) -> T:
        self._count("hit")
        return query.answer(scope, ScopeView(hit, "cache"), self._now())

    def _from_edge(self, query: Query[T], scope: Scope, answer: EdgeAnswer) -> T:
        self._count("miss")
        return query.answer(scope, edge_view(answer), self._now())

    def _fallback(self, query: Query[T], scope: Scope) -> T:
        self._count("fallback")
        return query.fallback(scope)

    def _count(self, outcome: str) -> None:
        if self.options.outcomes is not None:
            self.options.outcomes(outcome)

    def _local_answer(self, query: Query[T], scope: Scope, request: ReadRequest) -> T | None:
        """The answer from the in-process cache, when it holds a hit for this call."""
        reply = self.local.get(_read_key(scope, request))
        if reply is None:
            return None
        verdict = self._judge(query, scope, reply)
        return self._from_cache(query, scope, verdict) if isinstance(verdict, CachedScope) else None

    def _keep_local(self, scope: Scope, request: ReadRequest, reply: DecodedReply) -> None:
        self.local.put(_read_key(scope, request), reply)

    def _upstream_failed(self, query: Query[T], scope: Scope, exc: Exception) -> T:
        logger.warning(
            "Edge API failed for customer %r (resource %r), answering the fallback: %r",
            scope.customer_id,
            scope.resource_id,
            exc,
        )
        if isinstance(exc, UpstreamUnavailable):
            self._edge_down_until = time.monotonic() + self.options.edge_retry_after_seconds
        self._count("edge_error")
        return self._fallback(query, scope)

    def _edge_resting(self) -> bool:
        """True while the Edge API is skipped after it was unavailable."""
        return time.monotonic() < self._edge_down_until

    def _write_call(self, keys: CustomerKeys, answer: EdgeAnswer) -> ScriptCall | None:
        """The write-back of an Edge answer, or None when it is not written (logged)."""
        if self._redis_resting():
            return None
        problem = write_back_problem(answer)
        if problem is not None:
            logger.warning("Edge answer for %s not written back: %s", keys.entitlements, problem)
            return None
        return write_back_call(
            keys,
            answer,
            ttl=self.settings.keys_ttl_in_secs,
            environment_gate=self.layout.environment_gate,
        )

    def _written(self, keys: CustomerKeys, reply: Any) -> None:
        if int(reply) == 0:
            logger.info(
                "write-back of %s kept out: the cache holds newer data or was invalidated "
                "after the Edge request started",
                keys.entitlements,
            )

    # -- Redis back-off ----------------------------------------------------------------------

    def _redis_resting(self) -> bool:
        """True while Redis is skipped after a failure (``redis_retry_after_seconds``)."""
        return time.monotonic() < self._redis_down_until

    def _cache_trouble(self, what: str, exc: BaseException) -> None:
        logger.warning("cache %s failed, going on without it: %r", what, exc)
        self._redis_down_until = time.monotonic() + self.options.redis_retry_after_seconds


def typed(kind: type[E], answer: AnyEntitlement) -> E:
    """A typed getter's answer (``decide`` always answers a typed getter with its own type)."""
    if not isinstance(answer, kind):
        raise TypeError(f"expected a {kind.__name__}, got {type(answer).__name__}")
    return answer


def _read_key(scope: Scope, request: ReadRequest) -> ReadKey:
    return scope.keys.entitlements, request.what, request.wanted
