"""``CustomerEntitlements``: lookup by feature and the Node SDK's JSON."""

from __future__ import annotations

from cache_pipeline.client.answers import BooleanEntitlement, Feature, NumericEntitlement
from cache_pipeline.client.models import CustomerEntitlements


def test_find_and_to_stigg_json() -> None:
    sso = BooleanEntitlement(True, False, feature=Feature({"id": "sso"}, False))
    fallback = NumericEntitlement(False, True, "Unknown", is_unlimited=False)
    result = CustomerEntitlements("cus", None, (fallback, sso), None, "cache", 5)
    assert result.find("sso") is sso
    assert result.find("other") is None
    assert result.to_stigg_json() == [
        {
            "type": "NUMERIC",
            "hasAccess": False,
            "isFallback": True,
            "accessDeniedReason": "Unknown",
            "isUnlimited": False,
        },
        {
            "type": "BOOLEAN",
            "hasAccess": True,
            "isFallback": False,
            "feature": {"id": "sso", "isMetered": False},
        },
    ]
