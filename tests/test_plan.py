"""plan(): message → script KEYS and ARGV, compared with fixed expected values (no Redis)."""

from __future__ import annotations

import pytest

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from cache_pipeline.plan import InvalidateAll, ScriptCall, encode, plan
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
    [call] = plan(parsed(body), PLAIN, ttl=604800, policy=IF_EXISTS)
    assert call == ScriptCall(
        script="write_entitlements",
        keys=(
            "prod:c_cus-42",
            "prod:c_cus-42:metadata",
            "prod:c_cus-42:keys",
            "prod:c_cus-42:f_seats",
            "prod:c_cus-42:credit_ai",
        ),
        args=(
            "1764300000123",
            "604800",
            "1",
            '{"FEATURE:seats":{"kind":"FEATURE","id":"seats","hasAccess":true,"usageLimit":10},'
            '"FEATURE:sso":{"kind":"FEATURE","id":"sso","hasAccess":true,"usageLimit":10},'
            '"CREDIT:ai":{"kind":"CREDIT","id":"ai","hasAccess":true,"usageLimit":1000}}',
            '{"accessDeniedReason":null}',
            '{"currentUsage":3,"usagePeriodStart":1,"usagePeriodEnd":2}',
            '{"currentUsage":25,"usageLimit":1000,"usagePeriodStart":1,"usagePeriodEnd":2}',
        ),
    )


def test_entitlements_upsert_no_expiry_resource_in_cluster() -> None:
    body = factory.entitlements("cus:1", 7, resource="r{1}", denied="CUSTOMER_NOT_FOUND")
    [call] = plan(parsed(body), CLUSTER, ttl=-1, policy=UPSERT)
    assert call == ScriptCall(
        script="write_entitlements",
        keys=(
            "prod:{c_cus%3A1:r_r%7B1%7D}",
            "prod:{c_cus%3A1:r_r%7B1%7D}:metadata",
            "prod:{c_cus%3A1:r_r%7B1%7D}:keys",
        ),
        args=("7", "-1", "0", "{}", '{"accessDeniedReason":"CUSTOMER_NOT_FOUND"}'),
    )


def test_unknown_entitlement_fields_are_kept_as_given() -> None:
    body = factory.entitlements("c", 1)
    body["data"]["entitlements"] = [
        {"kind": "FEATURE", "id": "f", "hasAccess": False, "custom": {"nested": [1, "é"]}}
    ]
    [call] = plan(parsed(body), PLAIN, ttl=60, policy=UPSERT)
    assert isinstance(call, ScriptCall)
    expected = {
        "FEATURE:f": {
            "kind": "FEATURE",
            "id": "f",
            "hasAccess": False,
            "custom": {"nested": [1, "é"]},
        }
    }
    assert call.args[3] == encode(expected)
    assert call.keys[3:] == ()


@pytest.mark.parametrize("policy", [IF_EXISTS, UPSERT])
def test_usage(policy: CacheUpdatePolicy) -> None:
    body = factory.usage("cus-42", 1764300000123, "feature-seats", 4)
    assert plan(parsed(body), PLAIN, ttl=604800, policy=policy) == [
        ScriptCall(
            script="write_usage",
            keys=("prod:c_cus-42", "prod:c_cus-42:f_feature-seats", "prod:c_cus-42:keys"),
            args=(
                "1764300000123",
                "604800",
                '{"currentUsage":4,"usagePeriodStart":1,"usagePeriodEnd":2}',
            ),
        )
    ]


def test_credits_in_cluster() -> None:
    body = factory.credits("cus-42", 99, "ai#tokens", 2.5, limit=None, resource="r1")
    assert plan(parsed(body), CLUSTER, ttl=-1, policy=IF_EXISTS) == [
        ScriptCall(
            script="write_usage",
            keys=(
                "prod:{c_cus-42:r_r1}",
                "prod:{c_cus-42:r_r1}:credit_ai%23tokens",
                "prod:{c_cus-42:r_r1}:keys",
            ),
            args=(
                "99",
                "-1",
                '{"currentUsage":2.5,"usageLimit":null,"usagePeriodStart":1,"usagePeriodEnd":2}',
            ),
        )
    ]


def test_invalidation_of_customers() -> None:
    body = factory.invalidation(500, "cus-1", ("cus-2", "r%1"))
    assert plan(parsed(body), PLAIN, ttl=3600, policy=IF_EXISTS) == [
        ScriptCall(
            script="invalidate_customer",
            keys=("prod:c_cus-1", "prod:c_cus-1:metadata", "prod:c_cus-1:keys"),
            args=("500", "3600"),
        ),
        ScriptCall(
            script="invalidate_customer",
            keys=(
                "prod:c_cus-2:r_r%251",
                "prod:c_cus-2:r_r%251:metadata",
                "prod:c_cus-2:r_r%251:keys",
            ),
            args=("500", "3600"),
        ),
    ]


def test_invalidation_of_everything() -> None:
    body = factory.invalidation(500, everything=True)
    assert plan(parsed(body), CLUSTER, ttl=3600, policy=UPSERT) == [InvalidateAll()]
