"""A pure, in-memory model of CONTRACT.md v2, written from the text, not from the Lua.

Tests and benchmarks apply the same messages to this model and to Redis and
compare the final states. ``snapshot()`` returns ``{key: value}`` with JSON values
decoded and ``#timestamp`` values as integers, the same shape ``read_state`` (in
``tests.support.snapshot``) returns from Redis. TTLs are not modelled; the
mapping of an Edge entry to Stigg's cache value is ``cache_pipeline.stigg_map``'s
(checked on its own against the values Stigg's SDK wrote).

Rule 4 reads: an invalidation at T deletes the scope's values and their versions,
whoever wrote them, and from then on no write of the scope older than T lands.
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
from cache_pipeline.stigg_map import map_entitlements, metered_usages


class ReferenceCache:
    """The state Redis must end in after the given messages."""

    def __init__(self, layout: KeyLayout, policy: CacheUpdatePolicy) -> None:
        self.layout = layout
        self.policy = policy
        self.values: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.usage_keys: dict[str, set[str]] = {}  # scope -> usage/credit keys written
        self.invalidated_at: dict[str, int] = {}  # scope -> latest invalidation T

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

    def _put(self, key: str, value: Any, version: int) -> bool:
        if self.versions.get(key, 0) > version:  # rule 1
            return False
        self.values[key] = value
        self.versions[key] = version
        return True

    def _entitlements(self, message: EntitlementsUpdated) -> None:
        data = message.data
        keys = self.layout.customer(data.customer_id, data.resource_id)
        scope = keys.entitlements
        if self.policy is CacheUpdatePolicy.UPDATE_IF_EXISTS and scope not in self.values:
            return  # rule 2
        ts = message.timestamp
        if self.invalidated_at.get(scope, 0) > ts:
            return  # rule 4: older than the scope's latest invalidation
        self._put(scope, map_entitlements(data.entitlements), ts)
        self._put(keys.metadata, {"accessDeniedReason": data.access_denied_reason}, ts)
        usages = {
            keys.feature_usage(feature_id): (value, ts if version is None else version)
            for feature_id, (value, version) in metered_usages(data.entitlements).items()
        }
        usages.update(
            {keys.credit(credit.currency_id): (credit.as_stored(), ts) for credit in data.credits}
        )
        for key, (value, version) in usages.items():
            if self._put(key, value, version):
                self.usage_keys.setdefault(scope, set()).add(key)

    def _usage(self, message: UsageUpdated | CreditsUpdated) -> None:
        data = message.data
        keys = self.layout.customer(data.customer_id, data.resource_id)
        scope = keys.entitlements
        if scope not in self.values:
            return  # rule 2: usage without entitlements is never read
        if self.invalidated_at.get(scope, 0) > message.timestamp:
            return  # rule 4
        if isinstance(message, CreditsUpdated):
            key = keys.credit(message.data.currency_id)
        else:
            key = keys.feature_usage(message.data.feature_id)
        if self._put(key, data.as_stored(), message.timestamp):
            self.usage_keys.setdefault(scope, set()).add(key)

    def _invalidate(self, message: CacheInvalidated) -> None:
        if message.data.all:
            self.values.clear()
            self.versions.clear()
            self.usage_keys.clear()
            self.invalidated_at.clear()
            return
        for ref in message.data.customers:
            keys = self.layout.customer(ref.customer_id, ref.resource_id)
            scope = keys.entitlements
            self.invalidated_at[scope] = max(self.invalidated_at.get(scope, 0), message.timestamp)
            features = self.values.get(scope) or {}
            targets = {
                scope,
                keys.metadata,
                *(keys.feature_usage(field) for field in features if isinstance(field, str)),
                *self.usage_keys.pop(scope, set()),
            }
            for key in targets:  # whatever their versions, with their #timestamp siblings
                self.values.pop(key, None)
                self.versions.pop(key, None)
