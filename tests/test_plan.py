"""plan(): message → script KEYS and ARGV, compared with fixed expected values (no Redis)."""

from __future__ import annotations

import pytest

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.contract.plan import (
    InvalidateAll,
    ScriptCall,
    invalidate_environment_call,
    invalidate_key_call,
    plan,
)
from cache_pipeline.keys import KeyLayout
from tests.support import factory
from tests.support.factory import parsed

PLAIN = KeyLayout("prod")
CLUSTER = KeyLayout("prod", cluster=True)
IF_EXISTS = CacheUpdatePolicy.UPDATE_IF_EXISTS
UPSERT = CacheUpdatePolicy.UPSERT


def test_entitlements_snapshot() -> None:
    body = factory.entitlements(
        "cus-42", 1764300000123, features={"seats": 3, "sso": None}, credits={"ai": 25}
    )
    body["data"]["entitlements"][0]["usageUpdatedAt"] = "2025-11-30T08:15:00.000Z"
    [call] = plan(parsed(body), PLAIN, ttl=604800, policy=IF_EXISTS)
    assert call == ScriptCall(
        script="v2_write_scope",
        keys=(
            "prod:c_cus-42",
            "prod:c_cus-42:metadata",
            "prod:c_cus-42#invalidated",
            "prod:c_cus-42#keys",
            "prod:c_cus-42#deleted",
            "prod:__invalidated__",
            "prod:c_cus-42:f_seats",
            "prod:c_cus-42:credit_ai",
        ),
        args=(
            "1764300000123",
            "1764300000123",
            "604800",
            "1",
            '{"seats":{"calculatedEntitlement":{"feature":{"id":"seats","featureType":"NUMBER",'
            '"meterType":"Fluctuating","units":"seat","unitsPlural":"seats"},"usageLimit":10,'
            '"hasUnlimitedUsage":false,"hasSoftLimit":false,"enumValues":[]},'
            '"featureUsage":{"resetPeriod":null,"resetPeriodConfiguration":null,'
            '"currentUsage":3,"usagePeriodStart":1,"usagePeriodEnd":2}},'
            '"sso":{"calculatedEntitlement":{"feature":{"id":"sso","featureType":"BOOLEAN",'
            '"meterType":"None","units":"","unitsPlural":""},"usageLimit":null,'
            '"hasUnlimitedUsage":false,"hasSoftLimit":false,"enumValues":[]},'
            '"featureUsage":{"resetPeriod":null,"resetPeriodConfiguration":null,'
            '"currentUsage":0}}}',
            '{"accessDeniedReason":null}',
            '{"currentUsage":3,"usagePeriodStart":1,"usagePeriodEnd":2}',
            "1764490500000",
            '{"currentUsage":25,"usageLimit":1000,"usagePeriodStart":1,"usagePeriodEnd":2}',
            "1764300000123",
        ),
    )


def test_entitlements_upsert_no_expiry_resource_in_cluster() -> None:
    body = factory.entitlements("cus:1", 7, resource="r@1", denied="CUSTOMER_NOT_FOUND")
    [call] = plan(parsed(body), CLUSTER, ttl=-1, policy=UPSERT)
    assert call == ScriptCall(
        script="v2_write_scope",
        keys=(
            "prod:{c_cus:1:r_r@1}",
            "prod:{c_cus:1:r_r@1}:metadata",
            "prod:{c_cus:1:r_r@1}#invalidated",
            "prod:{c_cus:1:r_r@1}#keys",
            "prod:{c_cus:1:r_r@1}#deleted",
            "prod:{c_cus:1:r_r@1}#invalidated",
        ),
        args=("7", "7", "-1", "0", "{}", '{"accessDeniedReason":"CUSTOMER_NOT_FOUND"}'),
    )


def test_only_metered_entries_get_a_usage_key() -> None:
    body = factory.entitlements("c", 1)
    body["data"]["entitlements"] = [
        {"feature": {"refId": "api", "featureType": "NUMBER", "meterType": "Incremental"}},
        {"feature": {"refId": "cap", "featureType": "NUMBER", "meterType": "None"}},
        {"feature": {"refId": "tier", "featureType": "ENUM"}, "enumValues": ["a", "b"]},
    ]
    [call] = plan(parsed(body), PLAIN, ttl=60, policy=UPSERT)
    assert isinstance(call, ScriptCall)
    assert call.keys[6:] == ("prod:c_c:f_api",)
    assert call.args[6:] == ('{"currentUsage":0}', "1")


@pytest.mark.parametrize(("policy", "only_if_exists"), [(IF_EXISTS, "1"), (UPSERT, "0")])
def test_usage(policy: CacheUpdatePolicy, only_if_exists: str) -> None:
    body = factory.usage("cus-42", 1764300000123, "feature-seats", 4)
    del body["data"]["usagePeriodEnd"]
    assert plan(parsed(body), PLAIN, ttl=604800, policy=policy) == [
        ScriptCall(
            script="v2_write_usage",
            keys=(
                "prod:c_cus-42",
                "prod:c_cus-42:f_feature-seats",
                "prod:c_cus-42#invalidated",
                "prod:c_cus-42#keys",
                "prod:__invalidated__",
            ),
            args=(
                "1764300000123",
                "604800",
                '{"currentUsage":4,"usagePeriodStart":1}',
                only_if_exists,
            ),
        )
    ]


def test_credits_in_cluster() -> None:
    body = factory.credits("acme:eu", 99, "ai-tokens", 2.5, limit=None, resource="r1")
    assert plan(parsed(body), CLUSTER, ttl=-1, policy=IF_EXISTS) == [
        ScriptCall(
            script="v2_write_usage",
            keys=(
                "prod:{c_acme:eu:r_r1}",
                "prod:{c_acme:eu:r_r1}:credit_ai-tokens",
                "prod:{c_acme:eu:r_r1}#invalidated",
                "prod:{c_acme:eu:r_r1}#keys",
                "prod:{c_acme:eu:r_r1}#invalidated",
            ),
            args=(
                "99",
                "-1",
                '{"currentUsage":2.5,"usageLimit":null,"usagePeriodStart":1,"usagePeriodEnd":2}',
                "1",
            ),
        )
    ]


def test_invalidation_of_customers() -> None:
    body = factory.invalidation(500, "cus-1", ("user@example.com", "r%1"))
    assert plan(parsed(body), PLAIN, ttl=3600, policy=IF_EXISTS) == [
        ScriptCall(
            script="v2_invalidate_scope",
            keys=(
                "prod:c_cus-1",
                "prod:c_cus-1:metadata",
                "prod:c_cus-1#invalidated",
                "prod:c_cus-1#keys",
                "prod:c_cus-1#deleted",
            ),
            args=("500", "3600", "0"),
        ),
        ScriptCall(
            script="v2_invalidate_scope",
            keys=(
                "prod:c_user@example.com:r_r%1",
                "prod:c_user@example.com:r_r%1:metadata",
                "prod:c_user@example.com:r_r%1#invalidated",
                "prod:c_user@example.com:r_r%1#keys",
                "prod:c_user@example.com:r_r%1#deleted",
            ),
            args=("500", "3600", "0"),
        ),
    ]


def test_invalidation_of_everything() -> None:
    body = factory.invalidation(500, everything=True)
    assert plan(parsed(body), CLUSTER, ttl=3600, policy=UPSERT) == [
        InvalidateAll(body["timestamp"])
    ]


@pytest.mark.parametrize("layout", [PLAIN, CLUSTER], ids=["plain", "cluster"])
def test_the_steps_of_invalidating_everything(layout: KeyLayout) -> None:
    """What ``Store.invalidate_environment`` runs: the environment's time, then each key."""
    keys = layout.customer("cus-1")
    assert invalidate_environment_call(layout.environment_invalidated, at=500, ttl=-5) == (
        ScriptCall("v2_invalidate_environment", ("prod:__invalidated__",), ("500", "-1"))
    )
    usage = keys.feature_usage("seats")
    assert invalidate_key_call(usage, layout.usage_owner(usage), at=500, ttl=60) == ScriptCall(
        "v2_invalidate_key", (usage, keys.deleted, keys.index), ("500", "60")
    )
    assert invalidate_key_call(keys.metadata, None, at=500, ttl=60) == ScriptCall(
        "v2_invalidate_key", (keys.metadata,), ("500", "60")
    )
