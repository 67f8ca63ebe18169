"""Contract v2.1 restated from its text: the oracle of every state and order test.

It shares nothing with the product code but the policy's name: the key layout
(CONTRACT.md §2), the mapping of an Edge API entry to Stigg's cache values
(docs/stigg-compat.md §6, "Mapping into the cache", for entries as the Edge API
returns them) and the write rules (§3) are written out again here, and it reads
wire bodies (the JSON objects a producer sends), not the product's parsed models.

``ContractModel.apply`` applies one body in the order it is given; ``replay``
applies bodies in timestamp order, the order rule 6 compares every delivery
order with (a write and an invalidation at the same time: the write first, then
the invalidation, which removes it). ``state()`` is ``{key: decoded value,
key#timestamp: version}``, the shape ``tests.support.snapshot.read_state`` reads
from Redis. ``rule6_differences`` compares a Redis state with the replay, allowing
only what rule 6 allows: a usage key older than its scope's invalidation that a
newer snapshot wrote may be missing.

The rules, as the model states them:
1. a value key is written when its stored version is absent or <= the incoming one;
2. UPDATE_IF_EXISTS writes a message's keys only when the scope's map exists;
   UPSERT always writes them;
3. (TTLs are not modelled);
4. an invalidation at T removes every key of the scope whose version is <= T, with
   its version; T (the largest seen) is kept, and a later write whose timestamp is
   not newer than T is refused; ``{"all": true}`` at T does the same for every scope
   of the environment, those it has not seen yet included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cache_pipeline.config import CacheUpdatePolicy

VERSION = "#timestamp"
METERED = ("Fluctuating", "Incremental")
INVALIDATION = "cache.invalidated"


def ms(value: Any) -> int | None:
    """An Edge date (ISO-8601 string or epoch ms) as epoch ms; None when absent."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return round(parsed.timestamp() * 1000)


def cached_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One Edge entry as Stigg's SDK 3.95.0 caches it (docs/stigg-compat.md §3.1, §6)."""
    wire = entry["feature"]
    feature = {
        "id": wire["refId"],
        "featureType": wire["featureType"],
        "units": wire.get("featureUnits") or "",
        "unitsPlural": wire.get("featureUnitsPlural") or "",
    }
    if wire.get("meterType"):
        feature["meterType"] = wire["meterType"]
    calculated: dict[str, Any] = {
        "feature": feature,
        "usageLimit": entry.get("usageLimit"),
        "hasUnlimitedUsage": entry.get("hasUnlimitedUsage"),
        "hasSoftLimit": bool(entry.get("hasSoftLimit")),
        "enumValues": entry.get("enumValues") or [],
    }
    for name in ("resourceId", "accessDeniedReason"):
        if entry.get(name):
            calculated[name] = entry[name]
    if ms(entry.get("validUntil")):
        calculated["validUntil"] = ms(entry.get("validUntil"))
    rate = entry.get("creditRate")
    if rate:
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
        if ms(entry.get(name)):
            usage[name] = ms(entry.get(name))
    return {"calculatedEntitlement": calculated, "featureUsage": usage}


def is_metered(entry: Mapping[str, Any]) -> bool:
    feature = entry["feature"]
    return bool(feature["featureType"] == "NUMBER" and feature.get("meterType") in METERED)


def usage_value(current: Any, start: Any, end: Any, *, omit_zero: bool) -> dict[str, Any]:
    """``{"currentUsage", "usagePeriodStart"?, "usagePeriodEnd"?}`` (absent periods omitted)."""
    value: dict[str, Any] = {"currentUsage": current}
    for name, date in (("usagePeriodStart", start), ("usagePeriodEnd", end)):
        stamp = ms(date)
        if stamp is not None and (stamp or not omit_zero):
            value[name] = stamp
    return value


def credit_value(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "currentUsage": data["currentUsage"],
        "usageLimit": data.get("usageLimit"),
        "usagePeriodStart": ms(data.get("usagePeriodStart")),
        "usagePeriodEnd": ms(data.get("usagePeriodEnd")),
    }


@dataclass
class ContractModel:
    """The cache a contract v2.1 writer leaves after the bodies it was given."""

    prefix: str
    policy: CacheUpdatePolicy
    cluster: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    owned: dict[str, set[str]] = field(default_factory=dict)  # scope -> its value keys
    invalidated: dict[str, int] = field(default_factory=dict)  # scope -> latest T
    everything: int = 0  # T of the latest {"all": true}
    # every (version -> value) any body offered a key, admitted or not
    offered: dict[str, dict[int, Any]] = field(default_factory=dict)
    scope_of: dict[str, str] = field(default_factory=dict)  # value key -> its scope

    def scope(self, customer: str, resource: str | None) -> str:
        name = f"c_{customer}" + ("" if resource is None else f":r_{resource}")
        return f"{self.prefix}:{{{name}}}" if self.cluster else f"{self.prefix}:{name}"

    def apply_all(self, bodies: Iterable[Mapping[str, Any]]) -> ContractModel:
        for body in bodies:
            self.apply(body)
        return self

    def replay(self, bodies: Iterable[Mapping[str, Any]]) -> ContractModel:
        """Apply the bodies in timestamp order (a write before an invalidation at its time)."""
        ordered = sorted(bodies, key=lambda b: (int(b["timestamp"]), b["type"] == INVALIDATION))
        return self.apply_all(ordered)

    def apply(self, body: Mapping[str, Any]) -> None:
        kind, at, data = body["type"], int(body["timestamp"]), body["data"]
        if kind == INVALIDATION:
            self._invalidation(data, at)
            return
        scope = self.scope(data["customerId"], data.get("resourceId"))
        if not self._admits(scope, at):
            self._offer(scope, kind, data, at)
            return
        if kind == "entitlements.updated":
            self._snapshot(scope, data, at)
        elif kind == "usage.updated":
            value = usage_value(
                data["currentUsage"],
                data.get("usagePeriodStart"),
                data.get("usagePeriodEnd"),
                omit_zero=False,
            )
            self._put(scope, f"{scope}:f_{data['featureId']}", value, at)
        else:
            self._put(scope, f"{scope}:credit_{data['currencyId']}", credit_value(data), at)

    def _offer(self, scope: str, kind: str, data: Mapping[str, Any], at: int) -> None:
        """Record what a refused body offered (it may land in another delivery order)."""
        shadow = ContractModel(self.prefix, CacheUpdatePolicy.UPSERT, self.cluster)
        shadow.apply({"type": kind, "timestamp": at, "data": data})
        for key, offers in shadow.offered.items():
            self.offered.setdefault(key, {}).update(offers)
            self.scope_of[key] = scope

    def state(self) -> dict[str, Any]:
        state = dict(self.values)
        state.update({key + VERSION: version for key, version in self.versions.items()})
        return state

    def _admits(self, scope: str, at: int) -> bool:
        if self.policy is CacheUpdatePolicy.UPDATE_IF_EXISTS and scope not in self.values:
            return False  # rule 2
        return at > self.invalidated_at(scope)  # rule 4

    def invalidated_at(self, scope: str) -> int:
        """The latest invalidation that covers ``scope`` (its own or ``{"all": true}``)."""
        return max(self.invalidated.get(scope, 0), self.everything)

    def _snapshot(self, scope: str, data: Mapping[str, Any], at: int) -> None:
        entries = data["entitlements"]
        self._put(scope, scope, {e["feature"]["refId"]: cached_entry(e) for e in entries}, at)
        self._put(
            scope, f"{scope}:metadata", {"accessDeniedReason": data.get("accessDeniedReason")}, at
        )
        for entry in filter(is_metered, entries):
            value = usage_value(
                entry.get("currentUsage") or 0,
                entry.get("usagePeriodStart"),
                entry.get("usagePeriodEnd"),
                omit_zero=True,
            )
            updated = ms(entry.get("usageUpdatedAt"))
            version = at if updated is None else updated
            self._put(scope, f"{scope}:f_{entry['feature']['refId']}", value, version)
        for credit in data.get("credits") or []:
            self._put(scope, f"{scope}:credit_{credit['currencyId']}", credit_value(credit), at)

    def _put(self, scope: str, key: str, value: Any, version: int) -> None:
        self.offered.setdefault(key, {})[version] = value
        self.scope_of[key] = scope
        if self.versions.get(key, 0) > version:  # rule 1
            return
        self.values[key], self.versions[key] = value, version
        self.owned.setdefault(scope, set()).add(key)

    def _invalidation(self, data: Mapping[str, Any], at: int) -> None:
        if data.get("all"):
            self.everything = max(self.everything, at)
            scopes = list(self.owned)
        else:
            scopes = [self.scope(r["customerId"], r.get("resourceId")) for r in data["customers"]]
        for scope in scopes:
            keys = self.owned.get(scope, set())
            for key in [key for key in keys if self.versions[key] <= at]:
                del self.values[key], self.versions[key]
                keys.discard(key)
            self.invalidated[scope] = max(self.invalidated.get(scope, 0), at)


def rule6_differences(actual: Mapping[str, Any], model: ContractModel) -> dict[str, Any]:
    """``{key: (expected, actual)}`` for every key where Redis and the timestamp-order replay
    differ, except the miss rule 6 allows (a usage key, with its version, no newer than its
    scope's latest invalidation)."""
    expected = model.state()
    differ = {
        key: (expected.get(key), actual.get(key))
        for key in expected.keys() | actual.keys()
        if expected.get(key) != actual.get(key)
    }
    for key in [k for k in differ if not k.endswith(VERSION)]:
        if _allowed_miss(key, expected, actual, model):
            differ.pop(key)
            differ.pop(key + VERSION, None)
    return differ


def _allowed_miss(
    key: str, expected: Mapping[str, Any], actual: Mapping[str, Any], model: ContractModel
) -> bool:
    if key in actual or key + VERSION in actual or key not in expected:
        return False
    scope = model.scope_of.get(key)
    return (
        scope is not None
        and key.startswith(scope + ":f_")
        and expected[key + VERSION] <= model.invalidated_at(scope)
    )


def state_differences(
    actual: Mapping[str, Any],
    bodies: Iterable[Mapping[str, Any]],
    prefix: str,
    policy: CacheUpdatePolicy,
    *,
    cluster: bool = False,
) -> dict[str, Any]:
    """How a Redis state differs from what contract v2.1 allows after ``bodies`` delivered in
    any order ({} when it is allowed).

    UPSERT: rule 6, the timestamp-order replay up to its allowed misses. UPDATE_IF_EXISTS
    (bodies that create a scope applied first, as a warm cache is): a scope whose map is
    present had it all along, so every message of the scope was admitted as under UPSERT
    and rule 6 holds for the scope; a scope whose map is gone (an invalidation removed it,
    and only a reader refills it) may keep keys newer than its invalidation, each holding
    a value some body offered it at that version, and nothing else.
    """
    model = ContractModel(prefix, CacheUpdatePolicy.UPSERT, cluster).replay(list(bodies))
    differ = rule6_differences(actual, model)
    if policy is CacheUpdatePolicy.UPSERT:
        return differ
    for key in list(differ):
        value_key = key.removesuffix(VERSION)
        scope = model.scope_of.get(value_key)
        if (
            scope is not None
            and scope not in actual
            and _left_over(value_key, scope, actual, model)
        ):
            differ.pop(key)
    return differ


def _left_over(key: str, scope: str, actual: Mapping[str, Any], model: ContractModel) -> bool:
    """Absent, or a value a body offered at a version newer than the scope's invalidation."""
    if key not in actual and key + VERSION not in actual:
        return True
    version = actual.get(key + VERSION)
    offered = model.offered.get(key, {})
    return (
        isinstance(version, int)
        and version > model.invalidated_at(scope)
        and version in offered
        and offered[version] == actual.get(key)
    )
