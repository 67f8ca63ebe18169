"""Pure parts of the reader SDK: answers, access rules, the read script's KEYS, the local cache."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cache_pipeline.client.local import LocalCache
from cache_pipeline.client.models import CustomerEntitlements
from cache_pipeline.client.reading import Scope, decode, with_global_version
from cache_pipeline.client.results import credit_access, entitlement, feature_access, from_entries
from cache_pipeline.keys import KeyLayout
from tests.support.servers import wait_until


def answer(*pairs: tuple[dict[str, Any], dict[str, Any] | None]) -> CustomerEntitlements:
    return from_entries("cus", None, pairs, access_denied_reason=None, source="cache", timestamp=5)


def test_credit_limit_comes_from_the_credit_key_when_it_has_one() -> None:
    entry = {"kind": "CREDIT", "id": "ai", "hasAccess": True, "usageLimit": 100}
    newer = entitlement(entry, {"currentUsage": 30, "usageLimit": 250}, None)
    older = entitlement(entry, {"currentUsage": 30, "usageLimit": None}, None)
    assert (newer.usage_limit, newer.remaining) == (250, 220)
    assert (older.usage_limit, older.remaining) == (100, 70)


def test_access_fields_and_reasons() -> None:
    denied = entitlement({"kind": "FEATURE", "id": "a"}, None, "NoActiveSubscription")
    granted = entitlement({"kind": "FEATURE", "id": "b", "isGranted": True}, None, None)
    own = entitlement({"kind": "FEATURE", "id": "c", "accessDeniedReason": "Revoked"}, None, "X")
    assert (denied.has_access, denied.access_denied_reason) == (False, "NoActiveSubscription")
    assert (granted.has_access, granted.access_denied_reason) == (True, None)
    assert own.access_denied_reason == "Revoked"
    assert entitlement({"kind": "FEATURE", "id": "d"}, None, None).access_denied_reason == "Unknown"


@pytest.mark.parametrize(
    ("entry", "used", "requested", "expected"),
    [
        ({"usageLimit": 10}, 9, 1, (True, None)),
        ({"usageLimit": 10}, 9, 2, (False, "RequestedUsageExceedingLimit")),
        ({"usageLimit": 10}, 11, 0, (False, "RequestedUsageExceedingLimit")),
        ({"usageLimit": 10, "hasUnlimitedUsage": True}, 50, 5, (True, None)),
        ({"usageLimit": 10, "hasSoftLimit": True}, 50, 5, (True, None)),
        ({}, 50, 5, (True, None)),
    ],
)
def test_feature_access_with_requested_usage(
    entry: dict[str, Any], used: int, requested: int, expected: tuple[bool, str | None]
) -> None:
    stored = {"kind": "FEATURE", "id": "f", "hasAccess": True, **entry}
    access = feature_access(answer((stored, {"currentUsage": used})), "f", requested)
    assert (access.has_access, access.access_denied_reason) == expected
    assert access.current_usage == used


def test_credit_access_and_missing_entitlements() -> None:
    stored = {"kind": "CREDIT", "id": "ai", "hasAccess": True, "usageLimit": 100}
    result = answer((stored, {"currentUsage": 60, "usageLimit": 100}))
    assert credit_access(result, "ai", 40).has_access
    short = credit_access(result, "ai", 41)
    assert (short.has_access, short.access_denied_reason, short.remaining_balance) == (
        False,
        "InsufficientCredits",
        40,
    )
    missing = feature_access(result, "ai")  # a credit is not a feature
    assert (missing.has_access, missing.access_denied_reason) == (False, "EntitlementNotFound")


def test_read_script_keys() -> None:
    plain, cluster = KeyLayout("P"), KeyLayout("P", cluster=True)
    assert Scope.build(plain, "c:1", None).script_call(cluster=False) == (
        ("P:c_c%3A1", "P:c_c%3A1:metadata", "P:c_c%3A1:keys"),
        ("0",),
    )
    assert Scope.build(plain, "c", "r", ("CREDIT", "ai")).script_call(cluster=False) == (
        ("P:c_c:r_r", "P:c_c:r_r:metadata", "P:c_c:r_r:keys", "P:c_c", "P:c_c:r_r:credit_ai"),
        ("1",),
    )
    assert Scope.build(cluster, "c", "r", ("FEATURE", "f")).script_call(cluster=True) == (
        ("P:{c_c:r_r}", "P:{c_c:r_r}:metadata", "P:{c_c:r_r}:keys", "P:{c_c:r_r}:f_f"),
        ("0",),
    )


def test_decode_judges_resource_scopes_by_their_global_version() -> None:
    scope = Scope.build(KeyLayout("P"), "c", "r")
    entries = json.dumps({"FEATURE:f": {"kind": "FEATURE", "id": "f", "hasAccess": True}})
    usage = json.dumps({"currentUsage": 2})
    reply = [entries, "100", None, "90", "P:c_c:r_r:f_f", usage]
    fresh = decode(reply, scope)
    assert fresh.hit
    assert fresh.result is not None
    assert fresh.result.entitlements[0].current_usage == 2
    assert not decode([entries, "100", None, "101"], scope).hit  # global newer
    missing = decode([entries, "100", None, None], scope)
    assert (missing.hit, missing.global_missing) == (False, True)
    assert decode([None, None, None, None], scope).global_missing
    assert with_global_version(missing, 100).hit


def test_local_cache_expires_and_evicts_the_least_recently_used() -> None:
    cache = LocalCache(ttl=60, max_entries=2)
    first, second, third = (answer() for _ in range(3))
    cache.put(("a", None), first)
    cache.put(("b", None), second)
    assert cache.get(("a", None)) is first  # "a" is now the most recently used
    cache.put(("c", None), third)
    assert (cache.get(("b", None)), len(cache)) == (None, 2)
    short = LocalCache(ttl=0.05, max_entries=10)
    short.put(("a", None), first)
    wait_until(lambda: short.get(("a", None)) is None, timeout=5, what="the entry to expire")
    off = LocalCache(ttl=0, max_entries=10)
    off.put(("a", None), first)
    assert off.get(("a", None)) is None
