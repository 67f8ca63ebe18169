"""Contract v2 cache read, judged as Stigg's SDK 3.95.0 judges it (docs/stigg-compat.md §4.1, §4.3).

``read_call`` gives the KEYS and ARGV of ``lua/v2_read_scope.lua``; ``judge`` turns its reply
into a ``CachedScope`` (a hit) or a ``ScopeMiss``. Pure, no I/O: whatever wrote the keys (the
pipeline, our reader's write-back, Stigg's SDK), the same reply gives the same verdict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cache_pipeline.contract.stigg_map import is_metered
from cache_pipeline.keys import CustomerKeys

UsageKind = Literal["all", "feature", "credit"]
_LEADING_INT = re.compile(r"^\s*([+-]?\d+)")


@dataclass(frozen=True, slots=True)
class CachedScope:
    """A hit: the scope's map entries and the usage values read with them (by id)."""

    entries: Mapping[str, Any]
    usages: Mapping[str, Any]
    version: int | None
    access_denied_reason: str | None

    @property
    def customer_exists(self) -> bool:
        """An empty map is a cached "customer not found"."""
        return bool(self.entries)


@dataclass(frozen=True, slots=True)
class ScopeMiss:
    """A miss; ``global_missing`` asks for the customer's global scope to be fetched too."""

    reason: str
    global_missing: bool = False


def read_call(
    keys: CustomerKeys,
    global_keys: CustomerKeys | None,
    what: UsageKind,
    wanted: str | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """KEYS and ARGV of the read script for a scope (``global_keys`` for a resource scope)."""
    names: tuple[str, ...] = (keys.entitlements, keys.metadata)
    if global_keys is not None:
        names += (global_keys.entitlements,)
    return names, ("1" if global_keys else "0", what, wanted or "")


def parse_timestamp(raw: Any) -> int | None:
    """A ``#timestamp`` value as lodash ``parseInt(value, 10)`` reads it; None = no timestamp."""
    if raw is None:
        return None
    found = _LEADING_INT.match(str(raw))
    return int(found.group(1)) if found else None


@dataclass(frozen=True, slots=True)
class DecodedReply:
    """A read script's reply decoded once (``decode``): what ``judge`` rules on.

    ``entries`` is None when there is no map or it does not parse as the SDK parses it.
    """

    has_map: bool
    entries: Mapping[str, Any] | None
    usages: Mapping[str, Any]
    version: int | None
    global_version: int | None
    access_denied_reason: str | None


def decode(reply: list[Any]) -> DecodedReply:
    """Parse the JSON values and timestamps of a reply (the in-process cache keeps this)."""
    raw_map, raw_version, raw_metadata, raw_global = (list(reply) + [None] * 4)[:4]
    return DecodedReply(
        has_map=raw_map is not None and raw_map != "",
        entries=_entries(raw_map),
        usages={reply[i]: _json(reply[i + 1]) for i in range(4, len(reply) - 1, 2)},
        version=parse_timestamp(raw_version),
        global_version=parse_timestamp(raw_global),
        access_denied_reason=_reason(raw_metadata),
    )


def judge(
    reply: list[Any] | DecodedReply,
    *,
    resource: bool,
    feature_id: str | None = None,
    now_ms: int = 0,
    credit: bool = False,
) -> CachedScope | ScopeMiss:
    """Hit or miss, by Stigg's rules; ``feature_id`` names a single check's feature.

    Without ``feature_id`` the whole scope is judged (``getEntitlements``): every
    metered entry needs its usage key and an expired entry (``validUntil <= now_ms``)
    makes a miss. A ``credit`` read (our SDK's own) needs only the map.
    """
    read = reply if isinstance(reply, DecodedReply) else decode(reply)
    version, global_version = read.version, read.global_version
    if resource and not read.has_map:
        return ScopeMiss("no resource map", global_missing=global_version is None)
    if resource and (version is None or global_version is None or version < global_version):
        return ScopeMiss("resource map older than the global one", global_missing=True)
    if read.entries is None:
        return ScopeMiss("no readable map")
    problem = None if credit else _usage_problem(read.entries, read.usages, feature_id, now_ms)
    if problem is not None:
        return ScopeMiss(problem)
    return CachedScope(read.entries, read.usages, version, read.access_denied_reason)


def _entries(raw_map: Any) -> dict[str, Any] | None:
    """``JSON.parse`` then ``Object.entries``; None where the SDK's read throws."""
    if raw_map is None or raw_map == "":
        return None
    try:
        value = json.loads(raw_map)
    except ValueError:
        return None
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    if isinstance(value, list | str):
        return {str(i): item for i, item in enumerate(value)}
    return {}


def _usage_problem(
    entries: Mapping[str, Any], usages: Mapping[str, Any], feature_id: str | None, now_ms: int
) -> str | None:
    """Why a hit is a miss after all: a metered entry without usage, a malformed or expired one."""
    wanted = entries if feature_id is None else {feature_id: entries.get(feature_id)}
    for field, entry in wanted.items():
        if entry is None:
            continue
        calculated = entry.get("calculatedEntitlement") if isinstance(entry, dict) else None
        if not isinstance(calculated, dict):
            return f"entry {field!r} has no calculatedEntitlement"
        feature = calculated.get("feature")
        usage_id = str(
            feature.get("id") if isinstance(feature, dict) and feature_id is None else field
        )
        if isinstance(feature, dict) and is_metered(feature) and usages.get(usage_id) is None:
            return f"metered feature {field!r} has no usage key"
        if _expired(calculated.get("validUntil"), now_ms):
            return f"entry {field!r} expired (validUntil)"
    return None


def _expired(valid_until: Any, now_ms: int) -> bool:
    """``validUntil ? validUntil <= now : false`` for the number the SDK stores."""
    if isinstance(valid_until, bool) or not isinstance(valid_until, int | float):
        return False
    return bool(valid_until) and valid_until <= now_ms


def _json(raw: Any) -> Any:
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


def _reason(raw_metadata: Any) -> str | None:
    metadata = _json(raw_metadata)
    reason = metadata.get("accessDeniedReason") if isinstance(metadata, dict) else None
    return reason if isinstance(reason, str) else None
