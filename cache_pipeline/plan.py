"""Message → script calls: the pure half of a write.

``plan(message, ...)`` says which Lua script to run with which KEYS and ARGV.
It does no I/O, so its output can be checked against fixed expected values;
``cache_pipeline.store`` runs the calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from cache_pipeline.config import NO_EXPIRY, CacheUpdatePolicy
from cache_pipeline.keys import CustomerKeys, KeyLayout
from cache_pipeline.messages import (
    CacheInvalidated,
    CreditsData,
    CreditsUpdated,
    EntitlementsData,
    EntitlementsUpdated,
    Message,
    UsageData,
    UsageUpdated,
)

ScriptName = Literal[
    "write_entitlements",
    "write_usage",
    "invalidate_customer",
    "v2_write_scope",
    "v2_write_usage",
    "v2_invalidate_scope",
]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One atomic script invocation."""

    script: ScriptName
    keys: tuple[str, ...]
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InvalidateAll:
    """Drop every key of the environment (SCAN + UNLINK in bounded batches)."""


Step = ScriptCall | InvalidateAll


def plan(
    message: Message,
    layout: KeyLayout,
    *,
    ttl: int,
    policy: CacheUpdatePolicy,
) -> list[Step]:
    """The script calls that apply ``message`` under the write rules."""
    ts = str(message.timestamp)
    ttl_arg = str(ttl if ttl > 0 else NO_EXPIRY)
    if isinstance(message, EntitlementsUpdated):
        return [_entitlements(message.data, layout, ts, ttl_arg, policy)]
    if isinstance(message, UsageUpdated | CreditsUpdated):
        return [_usage(message.data, layout, ts, ttl_arg)]
    return _invalidation(message, layout, ts, ttl_arg)


def encode(value: Any) -> str:
    """Compact JSON, the form every value is stored in."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _entitlements(
    data: EntitlementsData, layout: KeyLayout, ts: str, ttl: str, policy: CacheUpdatePolicy
) -> ScriptCall:
    keys = layout.customer(data.customer_id, data.resource_id)
    entries: dict[str, Any] = {}
    usages: dict[str, str] = {}
    for entitlement in data.entitlements:
        stored = entitlement.as_stored()
        entries[layout.entitlement_field(entitlement.kind, entitlement.id)] = stored
        if entitlement.usage is not None:
            value: dict[str, Any] = {"currentUsage": entitlement.usage.current_usage}
            if entitlement.kind == "CREDIT":
                value["usageLimit"] = stored.get("usageLimit")
            value["usagePeriodStart"] = entitlement.usage.usage_period_start
            value["usagePeriodEnd"] = entitlement.usage.usage_period_end
            usages[keys.usage_for(entitlement.kind, entitlement.id)] = encode(value)
    only_if_exists = "1" if policy is CacheUpdatePolicy.UPDATE_IF_EXISTS else "0"
    metadata = encode({"accessDeniedReason": data.access_denied_reason})
    return ScriptCall(
        script="write_entitlements",
        keys=(keys.entitlements, keys.metadata, keys.index, *usages),
        args=(ts, ttl, only_if_exists, encode(entries), metadata, *usages.values()),
    )


def _usage(data: UsageData | CreditsData, layout: KeyLayout, ts: str, ttl: str) -> ScriptCall:
    keys = layout.customer(data.customer_id, data.resource_id)
    if isinstance(data, CreditsData):
        key = keys.credit(data.currency_id)
        value = {
            "currentUsage": data.current_usage,
            "usageLimit": data.usage_limit,
            "usagePeriodStart": data.usage_period_start,
            "usagePeriodEnd": data.usage_period_end,
        }
    else:
        key = keys.feature_usage(data.feature_id)
        value = {
            "currentUsage": data.current_usage,
            "usagePeriodStart": data.usage_period_start,
            "usagePeriodEnd": data.usage_period_end,
        }
    return ScriptCall(
        script="write_usage",
        keys=(keys.entitlements, key, keys.index),
        args=(ts, ttl, encode(value)),
    )


def _invalidation(message: CacheInvalidated, layout: KeyLayout, ts: str, ttl: str) -> list[Step]:
    if message.data.all:
        return [InvalidateAll()]
    calls: list[Step] = []
    for ref in message.data.customers:
        keys: CustomerKeys = layout.customer(ref.customer_id, ref.resource_id)
        calls.append(
            ScriptCall(
                script="invalidate_customer",
                keys=(keys.entitlements, keys.metadata, keys.index),
                args=(ts, ttl),
            )
        )
    return calls
