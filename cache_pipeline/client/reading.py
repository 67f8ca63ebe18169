"""The cache read: KEYS for ``read_customer.lua`` and the pure decoding of its reply."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from cache_pipeline import scripts
from cache_pipeline.client.models import CustomerEntitlements, Kind
from cache_pipeline.client.results import Entry, from_entries
from cache_pipeline.errors import EntitlementsUnavailable
from cache_pipeline.keys import CustomerKeys, KeyLayout

logger = logging.getLogger(__name__)

# What a cache read, lock or write-back may raise and the SDK never passes on: the
# promise is an answer whenever the upstream can give one, so any failure of the
# Redis side (redis-py errors, cluster client errors that are not RedisError, a
# corrupt value that the next write-back replaces) is logged and routed around.
CACHE_TROUBLE: tuple[type[Exception], ...] = (Exception,)


def script_source(name: str) -> str:
    """The text of one of the package's Lua scripts (the write scripts with their prelude)."""
    return scripts.script_source(name)


@dataclass(frozen=True, slots=True)
class Scope:
    """One (customer, resource) scope with its key names, built before any I/O.

    ``only`` names the one entitlement a single check needs: a cache hit then
    builds just that entry (the answer's other entitlements are left out).
    """

    customer_id: str
    resource_id: str | None
    keys: CustomerKeys
    global_keys: CustomerKeys | None  # the customer's global scope, for a resource scope
    only: tuple[Kind, str] | None = None

    @classmethod
    def build(
        cls,
        layout: KeyLayout,
        customer_id: str,
        resource_id: str | None,
        only: tuple[Kind, str] | None = None,
    ) -> Scope:
        global_keys = layout.customer(customer_id) if resource_id is not None else None
        keys = layout.customer(customer_id, resource_id)
        return cls(customer_id, resource_id, keys, global_keys, only)

    def script_call(self, *, cluster: bool) -> tuple[tuple[str, ...], tuple[str]]:
        """KEYS and ARGV of the read script.

        The global map goes along only where it shares the node; a single check
        reads only its own usage or credit key instead of the whole index.
        """
        keys = [self.keys.entitlements, self.keys.metadata, self.keys.index]
        with_global = self.global_keys is not None and not cluster
        if with_global and self.global_keys is not None:
            keys.append(self.global_keys.entitlements)
        if self.only is not None:
            keys.append(self.keys.usage_for(*self.only))
        return tuple(keys), ("1" if with_global else "0",)


@dataclass(frozen=True, slots=True)
class CachedRead:
    """What the cache holds for a scope.

    ``result`` is None on a plain miss. ``fresh`` is False when a resource
    entry exists but its global entry is missing or newer: that counts as a
    miss, yet the entry is still worth serving if the upstream API is down.
    """

    result: CustomerEntitlements | None
    fresh: bool
    global_missing: bool = False  # a resource scope whose global entry is not cached

    @property
    def hit(self) -> bool:
        return self.result is not None and self.fresh


def decode(reply: list[Any], scope: Scope) -> CachedRead:
    """Turn the read script's reply into a ``CachedRead``.

    A resource scope is fresh when reply[4] (the global map's version) is
    present and not newer than the resource entry; in Redis Cluster mode the
    caller reads that version separately and applies ``with_global_version``.
    """
    if not reply or reply[0] is None:
        missing = scope.resource_id is not None and (len(reply) < 4 or reply[3] is None)
        return CachedRead(None, False, missing)
    entries: dict[str, Any] = json.loads(reply[0])
    timestamp = int(reply[1]) if reply[1] is not None else 0
    metadata = json.loads(reply[2]) if reply[2] is not None else {}
    values = {reply[i]: reply[i + 1] for i in range(4, len(reply) - 1, 2)}
    if scope.only is not None:
        wanted = entries.get(KeyLayout.entitlement_field(*scope.only))
        entries = {} if wanted is None else {"": wanted}
    pairs = [(entry, _usage(scope.keys, entry, values)) for entry in entries.values()]
    result = from_entries(
        scope.customer_id,
        scope.resource_id,
        pairs,
        access_denied_reason=metadata.get("accessDeniedReason"),
        source="cache",
        timestamp=timestamp,
    )
    if scope.resource_id is None:
        return CachedRead(result, True)
    return with_global_version(CachedRead(result, False), _int(reply[3]))


def with_global_version(read: CachedRead, version: int | None) -> CachedRead:
    """Judge a resource-scoped read by its global entry's version (None: missing)."""
    if read.result is None:
        return CachedRead(None, False, version is None)
    fresh = version is not None and version <= (read.result.timestamp or 0)
    return CachedRead(read.result, fresh, version is None)


def global_version(exists: Any, version: Any) -> int | None:
    """The global entry's version from EXISTS and GET of its timestamp (None: missing)."""
    return int(version or 0) if exists else None


def hit_result(read: CachedRead | None) -> CustomerEntitlements | None:
    """The answer of a read that is a hit; None for no read, a miss, or a stale entry."""
    if read is not None and read.hit and read.result is not None:
        return read.result
    return None


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _usage(keys: CustomerKeys, entry: Entry, values: dict[str, str]) -> Entry | None:
    raw = values.get(keys.usage_for(str(entry.get("kind")), str(entry.get("id"))))
    return json.loads(raw) if raw is not None else None


def stale_or_unavailable(
    scope: Scope, cached: CachedRead | None, exc: Exception
) -> CustomerEntitlements:
    """The upstream failed: serve an out-of-date cache entry if there is one, else raise."""
    if cached is not None and cached.result is not None:
        logger.warning("upstream API failed, serving the cached entry: %r", exc)
        return replace(cached.result, stale=True)
    raise EntitlementsUnavailable(
        f"entitlements of customer {scope.customer_id!r} (resource {scope.resource_id!r}) are "
        f"neither cached nor available upstream: {exc}"
    ) from exc
