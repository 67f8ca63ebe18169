"""Runs a Stigg SDK call (the dicts ``tests/support/stigg_sdk.py`` sends to the Node SDK) on
our reader SDK and returns the answer as the Node SDK's JSON (dates as ISO strings, the form
of stigg-golden ``sdkReads`` and of ``run_stigg_sdk(..., dates="iso")``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cache_pipeline.client import EntitlementsCache

SINGLE_GETTERS = {
    "getBooleanEntitlement": "get_boolean_entitlement",
    "getNumericEntitlement": "get_numeric_entitlement",
    "getMeteredEntitlement": "get_metered_entitlement",
    "getEnumEntitlement": "get_enum_entitlement",
    "getEntitlement": "get_entitlement",
}
OPTIONS = {"requestedUsage": "requested_usage", "requestedValues": "requested_values"}


def call_ours(cache: EntitlementsCache, call: Mapping[str, Any]) -> Any:
    """Our answer to one Stigg call, as the Node SDK's JSON."""
    getter, customer, resource = call["getter"], call["customerId"], call.get("resourceId")
    if getter == "getEntitlements":
        return cache.get_entitlements(customer, resource).to_stigg_json()
    method = getattr(cache, SINGLE_GETTERS[getter])
    options = {OPTIONS[name]: value for name, value in call.get("options", {}).items()}
    return method(customer, call["featureId"], resource, **options).to_stigg_json()
