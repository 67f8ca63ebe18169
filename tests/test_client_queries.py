"""The getter calls as values: what they read, their views of a hit or an Edge answer."""

from __future__ import annotations

from typing import Any

import pytest

from cache_pipeline.client.answers import MeteredEntitlement
from cache_pipeline.client.cached_scope import CachedScope
from cache_pipeline.client.queries import (
    CreditQuery,
    FeatureQuery,
    ScopeQuery,
    ScopeView,
    edge_view,
    entry_for,
    merged_entries,
)
from cache_pipeline.client.reading import ReadRequest, Scope
from cache_pipeline.client.upstream import EdgeAnswer
from cache_pipeline.contract.stigg_map import map_entry
from cache_pipeline.errors import InvalidArgument
from cache_pipeline.keys import KeyLayout
from tests.support.edge_answers import boolean, metered

SCOPE = Scope.build(KeyLayout("P"), "cus", None)
SEATS = map_entry(metered("seats", 10, 3))[1]
SSO = map_entry(boolean("sso"))[1]


def hit(usages: dict[str, Any], **entries: Any) -> CachedScope:
    return CachedScope(entries, usages, 7, None)


def test_requests() -> None:
    feature = FeatureQuery("METERED", "seats")
    assert feature.request(whole_scope=False) == ReadRequest("feature", "seats")
    assert feature.request(whole_scope=True) == ReadRequest("all")
    assert ScopeQuery({}).request(whole_scope=False) == ReadRequest("all")
    assert CreditQuery("ai").request(whole_scope=True) == ReadRequest("credit", "ai")


def test_a_metered_entry_takes_its_usage_key_a_boolean_one_does_not() -> None:
    cached = hit({"seats": {"currentUsage": 9}, "sso": {"currentUsage": 4}}, seats=SEATS, sso=SSO)
    assert entry_for(cached, "seats")["featureUsage"]["currentUsage"] == 9  # type: ignore[index]
    assert entry_for(cached, "sso") == SSO
    assert entry_for(cached, "nope") is None
    assert merged_entries(cached)["seats"]["featureUsage"]["currentUsage"] == 9
    assert merged_entries(cached)["sso"]["featureUsage"]["currentUsage"] == 4  # as Stigg merges


def test_edge_view_is_the_mapped_answer_at_its_version() -> None:
    view = edge_view(EdgeAnswer([metered("seats", 10, 3), boolean("sso")], requested_at_ms=1))
    assert view.source == "upstream"
    assert view.cached.entries == {"seats": SEATS, "sso": SSO}
    assert (view.cached.usages, view.cached.version) == ({}, 1795168800000)
    answer = FeatureQuery("METERED", "seats", requested_usage=7).answer(SCOPE, view, 0)
    assert isinstance(answer, MeteredEntitlement)
    assert (answer.has_access, answer.current_usage) == (True, 3)
    assert edge_view(EdgeAnswer([], 1)).cached.customer_exists is False


def test_a_fallback_that_does_not_fit_the_getter_is_refused_at_once() -> None:
    with pytest.raises(InvalidArgument, match="BOOLEAN"):
        FeatureQuery("BOOLEAN", "f", fallback_fields={"value": 5})
    numeric = FeatureQuery("ENTITLEMENT", "f", fallback_fields={"value": 5}).fallback(SCOPE)
    assert numeric.to_stigg_json()["type"] == "NUMERIC"


def test_scope_query_answers_and_falls_back() -> None:
    query = ScopeQuery({"sso": {"has_access": True}})
    result = query.answer(SCOPE, ScopeView(hit({}, sso=SSO), "cache"), 0)
    assert (result.source, result.timestamp, len(result.entitlements)) == ("cache", 7, 1)
    broken = query.answer(SCOPE, ScopeView(hit({}, sso={"featureUsage": {}}), "cache"), 0)
    assert broken == query.fallback(SCOPE)
    assert (broken.source, broken.timestamp) == ("fallback", None)
    assert [e.has_access for e in broken.entitlements] == [True]


def test_credit_query_reads_the_credit_key() -> None:
    cached = hit({"ai": {"currentUsage": 2, "usageLimit": 5}}, sso=SSO)
    answer = CreditQuery("ai", 3).answer(SCOPE, ScopeView(cached, "cache"), 0)
    assert (answer.has_access, answer.remaining_balance) == (True, 3)
    corrupt = hit({"ai": 5}, sso=SSO)
    missing = CreditQuery("ai").answer(SCOPE, ScopeView(corrupt, "cache"), 0)
    assert missing.access_denied_reason == "NoFeatureEntitlementInSubscription"
    assert CreditQuery.needs_cache is True
    assert FeatureQuery.needs_cache is False
