"""Builders for contract messages, as dicts (the wire form) or parsed models."""

from __future__ import annotations

import json
import uuid
from typing import Any

from cache_pipeline.messages import Message, parse_message


def envelope(kind: str, timestamp: int, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": extra.pop("id", str(uuid.uuid4())),
        "type": kind,
        "timestamp": timestamp,
        "data": data,
        **extra,
    }


def entitlements(
    customer: str,
    timestamp: int,
    *,
    resource: str | None = None,
    features: dict[str, int | None] | None = None,
    credits: dict[str, int | None] | None = None,
    denied: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A snapshot: ``features``/``credits`` map id -> current usage (None: no usage)."""
    items: list[dict[str, Any]] = []
    for fid, used in (features or {}).items():
        item: dict[str, Any] = {"kind": "FEATURE", "id": fid, "hasAccess": True, "usageLimit": 10}
        if used is not None:
            item["usage"] = {"currentUsage": used, "usagePeriodStart": 1, "usagePeriodEnd": 2}
        items.append(item)
    for cid, used in (credits or {}).items():
        item = {"kind": "CREDIT", "id": cid, "hasAccess": True, "usageLimit": 1000}
        if used is not None:
            item["usage"] = {"currentUsage": used, "usagePeriodStart": 1, "usagePeriodEnd": 2}
        items.append(item)
    data = {
        "customerId": customer,
        "resourceId": resource,
        "accessDeniedReason": denied,
        "entitlements": items,
    }
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
