"""The getter calls as values: what a call reads, its hit/miss verdict, its answer, its fallback.

Pure, no I/O. ``FeatureQuery`` is one of Stigg's single getters (boolean, numeric,
metered, enum, untyped), ``ScopeQuery`` is ``getEntitlements``, ``CreditQuery`` this SDK's
credit check. A query is answered from a ``ScopeView``: a cache hit, or the Edge API's
answer mapped as Stigg's SDK maps it (after a refetch Stigg answers from that, not from
Redis). The sync and asyncio readers only run the I/O around them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from cache_pipeline.client.answers import AnyEntitlement, CreditEntitlement, Number
from cache_pipeline.client.cached_scope import CachedScope, DecodedReply, ScopeMiss, judge
from cache_pipeline.client.decide import (
    GetterKind,
    UnsupportedEntry,
    credit_fallback,
    decide,
    decide_all,
    decide_credit,
    fallback_result,
    is_metered,
    list_fallback,
    merge_usage,
)
from cache_pipeline.client.models import CustomerEntitlements, Source
from cache_pipeline.client.reading import ReadRequest, Scope
from cache_pipeline.client.upstream import EdgeAnswer
from cache_pipeline.contract.dates import edge_version
from cache_pipeline.contract.stigg_map import map_entitlements

T = TypeVar("T")
Verdict = CachedScope | ScopeMiss


@dataclass(frozen=True, slots=True)
class ScopeView:
    """What a query is answered from, and where that came from."""

    cached: CachedScope
    source: Source


def edge_view(answer: EdgeAnswer) -> ScopeView:
    """The Edge API's entries as Stigg's SDK holds them after a refetch (no usage keys)."""
    entries = answer.entitlements
    cached = CachedScope(map_entitlements(entries), {}, edge_version(entries), None)
    return ScopeView(cached, "upstream")


def entry_for(cached: CachedScope, feature_id: str) -> Mapping[str, Any] | None:
    """The map's entry for a feature, a metered one with its usage key merged in."""
    entry = cached.entries.get(feature_id)
    if not isinstance(entry, Mapping):
        return None
    usage = cached.usages.get(feature_id)
    if is_metered(entry) and isinstance(usage, Mapping):
        return merge_usage(entry, usage)
    return entry


def merged_entries(cached: CachedScope) -> dict[str, Any]:
    """Every entry of the map with the usage read for it merged in (``getCustomerEntitlements``)."""
    entries = dict(cached.entries)
    for feature_id, usage in cached.usages.items():
        entry = entries.get(feature_id)
        if isinstance(entry, Mapping) and isinstance(usage, Mapping):
            entries[feature_id] = merge_usage(entry, usage)
    return entries


class Query(ABC, Generic[T]):
    """One getter call, checked before any I/O."""

    __slots__ = ()
    # True when only the cache can answer it (a credit balance is never in the Edge answer).
    needs_cache: ClassVar[bool] = False

    @abstractmethod
    def request(self, whole_scope: bool) -> ReadRequest:
        """What to read; ``whole_scope`` when the in-process cache keeps the read."""

    @abstractmethod
    def judge(self, reply: DecodedReply, scope: Scope, now_ms: int) -> Verdict:
        """Stigg's verdict on the read script's (decoded) reply, for this call."""

    @abstractmethod
    def answer(self, scope: Scope, view: ScopeView, now_ms: int) -> T:
        """The answer from a hit or the Edge API's answer."""

    @abstractmethod
    def fallback(self, scope: Scope) -> T:
        """The answer when neither the cache nor the Edge API can give one."""


@dataclass(frozen=True, slots=True)
class FeatureQuery(Query[AnyEntitlement]):
    """``getBoolean/Numeric/Metered/EnumEntitlement`` and the untyped ``getEntitlement``."""

    kind: GetterKind
    feature_id: str
    requested_usage: Number | None = None
    requested_values: tuple[str, ...] | None = None
    fallback_fields: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        self.fallback(None)  # a fallback that does not fit the getter is a bad argument

    def request(self, whole_scope: bool) -> ReadRequest:
        return ReadRequest("all") if whole_scope else ReadRequest("feature", self.feature_id)

    def judge(self, reply: DecodedReply, scope: Scope, now_ms: int) -> Verdict:
        return judge(reply, resource=scope.resource, feature_id=self.feature_id, now_ms=now_ms)

    def answer(self, scope: Scope, view: ScopeView, now_ms: int) -> AnyEntitlement:
        cached = view.cached
        return decide(
            self.kind,
            entry_for(cached, self.feature_id),
            cached.customer_exists,
            requested_usage=self.requested_usage,
            requested_values=self.requested_values,
            now_ms=now_ms,
            fallback=self.fallback_fields,
        )

    def fallback(self, scope: Scope | None) -> AnyEntitlement:
        return fallback_result(
            self.kind,
            self.fallback_fields,
            requested_usage=self.requested_usage,
            requested_values=self.requested_values,
        )


@dataclass(frozen=True, slots=True)
class ScopeQuery(Query[CustomerEntitlements]):
    """``getEntitlements``: every entitlement of the scope."""

    fallbacks: Mapping[str, Mapping[str, Any]]

    def request(self, whole_scope: bool) -> ReadRequest:
        return ReadRequest("all")

    def judge(self, reply: DecodedReply, scope: Scope, now_ms: int) -> Verdict:
        return judge(reply, resource=scope.resource, now_ms=now_ms)

    def answer(self, scope: Scope, view: ScopeView, now_ms: int) -> CustomerEntitlements:
        cached = view.cached
        try:
            entitlements = decide_all(merged_entries(cached), cached.customer_exists)
        except UnsupportedEntry:
            return self.fallback(scope)
        return CustomerEntitlements(
            customer_id=scope.customer_id,
            resource_id=scope.resource_id,
            entitlements=entitlements,
            access_denied_reason=cached.access_denied_reason,
            source=view.source,
            timestamp=cached.version,
        )

    def fallback(self, scope: Scope) -> CustomerEntitlements:
        return CustomerEntitlements(
            customer_id=scope.customer_id,
            resource_id=scope.resource_id,
            entitlements=tuple(list_fallback(f, fields) for f, fields in self.fallbacks.items()),
            access_denied_reason=None,
            source="fallback",
            timestamp=None,
        )


@dataclass(frozen=True, slots=True)
class CreditQuery(Query[CreditEntitlement]):
    """A credit balance (``S:credit_<currencyId>``), written by the pipeline only."""

    currency_id: str
    requested_amount: Number = 0
    needs_cache: ClassVar[bool] = True

    def request(self, whole_scope: bool) -> ReadRequest:
        return ReadRequest("credit", self.currency_id)

    def judge(self, reply: DecodedReply, scope: Scope, now_ms: int) -> Verdict:
        return judge(reply, resource=scope.resource, credit=True)

    def answer(self, scope: Scope, view: ScopeView, now_ms: int) -> CreditEntitlement:
        credit = view.cached.usages.get(self.currency_id)
        return decide_credit(
            self.currency_id,
            credit if isinstance(credit, Mapping) else None,
            requested_amount=self.requested_amount,
            customer_exists=view.cached.customer_exists,
        )

    def fallback(self, scope: Scope) -> CreditEntitlement:
        return credit_fallback(self.currency_id, self.requested_amount)
