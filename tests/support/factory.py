"""Builders for contract messages, as dicts (the wire form) or parsed models."""

from __future__ import annotations

import json
import uuid
from typing import Any

from cache_pipeline.contract.messages import Message, parse_message


def envelope(kind: str, timestamp: int, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("id", str(uuid.uuid4())),
        "type": kind,
        "timestamp": timestamp,
        "data": data,
        **extra,
    }


def edge_entry(feature: str, used: int | None = None, **extra: Any) -> dict[str, Any]:
    """A Stigg Edge API entry: metered NUMBER with ``used`` as its usage, else BOOLEAN."""
    if used is None:
        entry: dict[str, Any] = {
            "feature": {"refId": feature, "featureType": "BOOLEAN", "meterType": "None"},
            "hasUnlimitedUsage": False,
            "hasSoftLimit": False,
        }
    else:
        entry = {
            "feature": {
                "refId": feature,
                "featureType": "NUMBER",
                "meterType": "Fluctuating",
                "featureUnits": "seat",
                "featureUnitsPlural": "seats",
            },
            "usageLimit": 10,
            "hasUnlimitedUsage": False,
            "hasSoftLimit": False,
            "currentUsage": used,
            "usagePeriodStart": 1,
            "usagePeriodEnd": 2,
        }
    return {**entry, **extra}


def entitlements(
    customer: str,
    timestamp: int,
    *,
    resource: str | None = None,
    features: dict[str, int | None] | None = None,
    credits: dict[str, int] | None = None,
    denied: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A snapshot: ``features`` maps id -> current usage (None: a boolean feature),
    ``credits`` maps currency id -> current usage (limit 1000)."""
    data: dict[str, Any] = {
        "customerId": customer,
        "resourceId": resource,
        "accessDeniedReason": denied,
        "entitlements": [edge_entry(fid, used) for fid, used in (features or {}).items()],
    }
    if credits:
        data["credits"] = [
            {
                "currencyId": cid,
                "currentUsage": used,
                "usageLimit": 1000,
                "usagePeriodStart": 1,
                "usagePeriodEnd": 2,
            }
            for cid, used in credits.items()
        ]
    return envelope("entitlements.updated", timestamp, data, **extra)


def usage(
    customer: str,
    timestamp: int,
    feature: str,
    current: float,
    *,
    resource: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data = {
        "customerId": customer,
        "resourceId": resource,
        "featureId": feature,
        "currentUsage": current,
        "usagePeriodStart": 1,
        "usagePeriodEnd": 2,
    }
    return envelope("usage.updated", timestamp, data, **extra)


def credits(
    customer: str,
    timestamp: int,
    currency: str,
    current: float,
    *,
    limit: float | None = 1000,
    resource: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data = {
        "customerId": customer,
        "resourceId": resource,
        "currencyId": currency,
        "currentUsage": current,
        "usageLimit": limit,
        "usagePeriodStart": 1,
        "usagePeriodEnd": 2,
    }
    return envelope("credits.updated", timestamp, data, **extra)


def invalidation(
    timestamp: int, *customers: str | tuple[str, str | None], everything: bool = False, **extra: Any
) -> dict[str, Any]:
    if everything:
        return envelope("cache.invalidated", timestamp, {"all": True}, **extra)
    refs = [
        {"customerId": c, "resourceId": None}
        if isinstance(c, str)
        else {"customerId": c[0], "resourceId": c[1]}
        for c in customers
    ]
    return envelope("cache.invalidated", timestamp, {"customers": refs}, **extra)


def parsed(body: dict[str, Any], environment: str = "production") -> Message:
    return parse_message(json.dumps(body), environment)
