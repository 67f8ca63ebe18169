"""A pure, in-memory model of CONTRACT.md, written from the text, not from the Lua.

Tests and benchmarks apply the same messages to this model and to Redis and
compare the final states. ``snapshot()`` returns ``{key: value}`` with JSON values
decoded and ``#timestamp`` values as integers, the same shape ``read_state`` (in
``cache_pipeline.snapshot``) returns from Redis. TTLs are not modelled.

Rule 4 reads: a message older than an invalidation at T "cannot bring the old
state back", so after an invalidation no usage or credit key of the scope takes
a write older than T, including keys the cache had not seen before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout, timestamp_key
from cache_pipeline.messages import (
    CacheInvalidated,
    CreditsUpdated,
    EntitlementsUpdated,
    Message,
    UsageUpdated,
)


class ReferenceCache:
    """The state Redis must end in after the given messages."""

    def __init__(self, layout: KeyLayout, policy: CacheUpdatePolicy) -> None:
        self.layout = layout
        self.policy = policy
        self.values: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.usage_keys: dict[str, set[str]] = {}  # entitlements key -> usage/credit keys seen
        self.invalidated_at: dict[str, int] = {}  # entitlements key -> latest invalidation T

    def apply_all(self, messages: Iterable[Message]) -> ReferenceCache:
        for message in messages:
            self.apply(message)
        return self

    def apply(self, message: Message) -> None:
        if isinstance(message, EntitlementsUpdated):
            self._entitlements(message)
        elif isinstance(message, UsageUpdated | CreditsUpdated):
            self._usage(message)
        else:
            self._invalidate(message)

    def snapshot(self) -> dict[str, Any]:
        state = dict(self.values)
        state.update({timestamp_key(k): v for k, v in self.versions.items()})
        return state

    def _put(self, key: str, value: Any, ts: int) -> bool:
        if self.versions.get(key, 0) > ts:  # rule 1
            return False
        self.values[key] = value
        self.versions[key] = ts
        return True

    def _entitlements(self, message: EntitlementsUpdated) -> None:
        data = message.data
        keys = self.layout.customer(data.customer_id, data.resource_id)
        if (
            self.policy is CacheUpdatePolicy.UPDATE_IF_EXISTS
            and keys.entitlements not in self.values
        ):
            return  # rule 2
        entries = {}
        for item in data.entitlements:
            entries[f"{item.kind}:{item.id}"] = {
                k: v
                for k, v in item.model_dump(by_alias=True, exclude_unset=True).items()
                if k != "usage"
            }
        ts = message.timestamp
        self._put(keys.entitlements, entries, ts)
        self._put(keys.metadata, {"accessDeniedReason": data.access_denied_reason}, ts)
        for item in data.entitlements:
            if item.usage is None:
                continue
            key = keys.usage_for(item.kind, item.id)
            value: dict[str, Any] = {"currentUsage": item.usage.current_usage}
            if item.kind == "CREDIT":
                value["usageLimit"] = entries[f"CREDIT:{item.id}"].get("usageLimit")
            value["usagePeriodStart"] = item.usage.usage_period_start
            value["usagePeriodEnd"] = item.usage.usage_period_end
            if self._put_usage(keys.entitlements, key, value, ts):
                self.usage_keys.setdefault(keys.entitlements, set()).add(key)

    def _put_usage(self, scope: str, key: str, value: Any, ts: int) -> bool:
        if self.invalidated_at.get(scope, 0) > ts:  # rule 4: older than the invalidation
            return False
        return self._put(key, value, ts)

    def _usage(self, message: UsageUpdated | CreditsUpdated) -> None:
        data = message.data
        keys = self.layout.customer(data.customer_id, data.resource_id)
        if keys.entitlements not in self.values:
            return  # rule 2: usage without entitlements is never read
        if isinstance(message, CreditsUpdated):
            key = keys.credit(message.data.currency_id)
            value = {
                "currentUsage": message.data.current_usage,
                "usageLimit": message.data.usage_limit,
                "usagePeriodStart": message.data.usage_period_start,
                "usagePeriodEnd": message.data.usage_period_end,
            }
        else:
            key = keys.feature_usage(message.data.feature_id)
            value = {
                "currentUsage": message.data.current_usage,
                "usagePeriodStart": message.data.usage_period_start,
                "usagePeriodEnd": message.data.usage_period_end,
            }
        if self._put_usage(keys.entitlements, key, value, message.timestamp):
            self.usage_keys.setdefault(keys.entitlements, set()).add(key)

    def _invalidate(self, message: CacheInvalidated) -> None:
        ts = message.timestamp
        if message.data.all:
            self.values.clear()
            self.versions.clear()
            self.usage_keys.clear()
            self.invalidated_at.clear()
            return
        for ref in message.data.customers:
            keys = self.layout.customer(ref.customer_id, ref.resource_id)
            latest = max(self.invalidated_at.get(keys.entitlements, 0), ts)
            self.invalidated_at[keys.entitlements] = latest
            targets = [
                keys.entitlements,
                keys.metadata,
                *self.usage_keys.get(keys.entitlements, ()),
            ]
            for key in targets:
                if self.versions.get(key, 0) > ts:
                    continue  # written after the invalidation: kept
                self.values.pop(key, None)
                self.versions[key] = ts  # tombstone (rule 4)
