"""Edge API answers for tests, shaped like the golden ``edgeResponses`` (Stigg's
``EntitlementFragment``): ``answer(boolean("f"), metered("g", 10, 3))``."""

from __future__ import annotations

from typing import Any

ENTITLEMENT_UPDATED = "2026-11-20T10:00:00.000Z"  # 1795168800000
USAGE_UPDATED = "2026-11-30T08:15:00.000Z"  # 1796026500000


def entry(ref: str, feature_type: str, meter: str | None = "None", **fields: Any) -> dict[str, Any]:
    """One entitlement; ``fields`` override the defaults (camelCase, as the API spells them)."""
    base: dict[str, Any] = {
        "__typename": "Entitlement",
        "isGranted": True,
        "accessDeniedReason": None,
        "resourceId": None,
        "usageLimit": None,
        "hasUnlimitedUsage": False,
        "hasSoftLimit": False,
        "currentUsage": None,
        "requestedUsage": None,
        "requestedValues": None,
        "enumValues": None,
        "entitlementUpdatedAt": ENTITLEMENT_UPDATED,
        "usageUpdatedAt": None,
        "usagePeriodAnchor": None,
        "usagePeriodStart": None,
        "usagePeriodEnd": None,
        "nextResetDate": None,
        "resetPeriod": None,
        "validUntil": None,
        "resetPeriodConfiguration": None,
        "feature": {
            "__typename": "EntitlementFeature",
            "featureType": feature_type,
            "meterType": meter,
            "featureUnits": None,
            "featureUnitsPlural": None,
            "description": None,
            "displayName": ref,
            "refId": ref,
            "unitTransformation": None,
        },
        "creditRate": None,
    }
    return base | fields


def boolean(ref: str, **fields: Any) -> dict[str, Any]:
    return entry(ref, "BOOLEAN", **fields)


def numeric(ref: str, limit: int | None, **fields: Any) -> dict[str, Any]:
    return entry(ref, "NUMBER", usageLimit=limit, **fields)


def metered(
    ref: str, limit: int | None, usage: int, meter: str = "Fluctuating", **fields: Any
) -> dict[str, Any]:
    values = {"usageLimit": limit, "currentUsage": usage, "usageUpdatedAt": USAGE_UPDATED}
    return entry(ref, "NUMBER", meter, **(values | fields))


def enum(ref: str, values: list[str], **fields: Any) -> dict[str, Any]:
    return entry(ref, "ENUM", None, enumValues=values, **fields)


def answer(*entries: dict[str, Any]) -> dict[str, Any]:
    """The response body ``{"data": {"entitlements": [...]}}``."""
    return {"data": {"entitlements": list(entries)}}


def request_line(customer: str, resource: str | None = None) -> str:
    """The request Stigg's SDK (and ours) sends for a scope, as RecordingEdge records it."""
    line = f"GET /v1/c/{customer}/entitlements.json"
    return line + (f"?resourceId={resource}" if resource is not None else "")
