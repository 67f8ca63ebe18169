"""Stigg Edge API entitlement entries → the values Stigg's Node SDK keeps in Redis.

Pure functions, no I/O. They map an entry of ``GET /v1/c/{customerId}/entitlements.json``
(``data.entitlements[]``) exactly as ``@stigg/node-server-sdk`` 3.95.0 maps it in
``utils/CacheMapper.js#mapCachedEntitlement`` (docs/stigg-compat.md §3.1 and §6), so that
what the pipeline and our reader write reads, in Stigg's SDK, as what it writes itself:

* the entitlements map ``{refId: {"calculatedEntitlement": {...}, "featureUsage": {...}}}``;
* one usage value ``{"currentUsage": n, "usagePeriodStart"?: ms, "usagePeriodEnd"?: ms}``
  per metered entry (``NUMBER`` with meter ``Fluctuating`` or ``Incremental``);
* the map's version is ``cache_pipeline.contract.dates.edge_version``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cache_pipeline.contract.dates import epoch_ms

FEATURE_TYPES = ("BOOLEAN", "NUMBER", "ENUM")
METERED = ("Fluctuating", "Incremental")
Entry = Mapping[str, Any]


def entry_problem(entry: Any) -> str | None:
    """Why an entry cannot be cached (no ``feature.refId``, unknown ``featureType``), or None."""
    if not isinstance(entry, Mapping):
        return "is not an object"
    feature = entry.get("feature")
    if not isinstance(feature, Mapping):
        return "has no feature"
    ref_id = feature.get("refId")
    if not isinstance(ref_id, str) or not ref_id:
        return "has no feature.refId"
    if feature.get("featureType") not in FEATURE_TYPES:
        return f"feature {ref_id!r} has featureType {feature.get('featureType')!r}, not one of " + (
            "|".join(FEATURE_TYPES)
        )
    return None


def is_metered(feature: Mapping[str, Any] | None) -> bool:
    """NUMBER with meter Fluctuating or Incremental: the SDK reads its usage key."""
    return (
        feature is not None
        and feature.get("featureType") == "NUMBER"
        and feature.get("meterType") in METERED
    )


def map_entry(entry: Entry) -> tuple[str, dict[str, Any]]:
    """The map field (``feature.refId``) and the cached value of one Edge entry."""
    feature = entry.get("feature")
    calculated: dict[str, Any] = {}
    if isinstance(feature, Mapping):
        calculated["feature"] = _feature(feature)
    _put_if(calculated, "resourceId", entry.get("resourceId"))
    calculated["usageLimit"] = entry.get("usageLimit")
    calculated["hasUnlimitedUsage"] = entry.get("hasUnlimitedUsage")
    calculated["hasSoftLimit"] = bool(entry.get("hasSoftLimit"))
    _put_if(calculated, "accessDeniedReason", entry.get("accessDeniedReason"))
    calculated["enumValues"] = entry.get("enumValues") or []
    _put_if(calculated, "validUntil", epoch_ms(entry.get("validUntil")))
    rate = entry.get("creditRate")
    if isinstance(rate, Mapping):
        calculated["creditRate"] = {
            "amount": rate.get("amount"),
            "currencyId": rate.get("currencyId"),
        }
    usage: dict[str, Any] = {
        "resetPeriod": entry.get("resetPeriod"),
        "resetPeriodConfiguration": entry.get("resetPeriodConfiguration"),
        "currentUsage": entry.get("currentUsage") or 0,
    }
    for name in ("usagePeriodAnchor", "usagePeriodStart", "usagePeriodEnd"):
        _put_if(usage, name, epoch_ms(entry.get(name)))
    field = str(feature.get("refId") or "") if isinstance(feature, Mapping) else ""
    return field, {"calculatedEntitlement": calculated, "featureUsage": usage}


def map_entitlements(entries: Iterable[Entry]) -> dict[str, dict[str, Any]]:
    """The entitlements map of a scope, in response order (a later duplicate id wins)."""
    return dict(map_entry(entry) for entry in entries)


def usage_value(entry: Entry) -> dict[str, Any]:
    """The usage key's value of a metered entry; absent periods are omitted."""
    value: dict[str, Any] = {"currentUsage": entry.get("currentUsage") or 0}
    for name in ("usagePeriodStart", "usagePeriodEnd"):
        _put_if(value, name, epoch_ms(entry.get(name)))
    return value


def metered_usages(entries: Iterable[Entry]) -> dict[str, tuple[dict[str, Any], int | None]]:
    """``{featureId: (usage value, usageUpdatedAt ms or None)}`` for every metered entry."""
    usages: dict[str, tuple[dict[str, Any], int | None]] = {}
    for entry in entries:
        feature = entry.get("feature")
        if isinstance(feature, Mapping) and is_metered(feature) and feature.get("refId"):
            version = epoch_ms(entry.get("usageUpdatedAt"))
            usages[str(feature["refId"])] = (usage_value(entry), version)
    return usages


def _feature(feature: Mapping[str, Any]) -> dict[str, Any]:
    mapped: dict[str, Any] = {"id": feature.get("refId"), "featureType": feature.get("featureType")}
    _put_if(mapped, "meterType", feature.get("meterType"))
    mapped["units"] = feature.get("featureUnits") or ""
    mapped["unitsPlural"] = feature.get("featureUnitsPlural") or ""
    return mapped


def _put_if(target: dict[str, Any], name: str, value: Any) -> None:
    """Set ``name`` only for a truthy value, as the SDK's mapper does."""
    if value:
        target[name] = value
