"""Script calls: which write script, with which KEYS and ARGV.

Pure, no I/O: ``cache_pipeline/store/lua/v2_*.lua`` run them
(``cache_pipeline.store.writer`` for the pipeline, the reader SDK for its write-back).
A scope's calls take its ``CustomerKeys``: every key name comes from
``cache_pipeline.keys``, its private keys (``S#invalidated``, ``S#keys``, ``S#deleted``)
included.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cache_pipeline.contract.stigg_map import Entry, map_entitlements, metered_usages
from cache_pipeline.keys import CustomerKeys

ScriptName = Literal[
    "v2_write_scope",
    "v2_write_usage",
    "v2_invalidate_scope",
    "v2_invalidate_key",
    "v2_invalidate_environment",
]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One atomic script invocation."""

    script: ScriptName
    keys: tuple[str, ...]
    args: tuple[str, ...]


def encode(value: Any) -> str:
    """Compact JSON, the form every value is stored in."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def snapshot_call(
    keys: CustomerKeys,
    entries: Sequence[Entry],
    *,
    version: int,
    gate: int,
    ttl: int,
    only_if_exists: bool,
    access_denied_reason: str | None = None,
    credits: Mapping[str, Mapping[str, Any]] | None = None,
    environment_gate: str | None = None,
) -> ScriptCall:
    """Write a scope's Edge entries: the map, the metadata, a usage key per metered entry.

    ``version`` versions the map and metadata; a usage key takes its entry's
    ``usageUpdatedAt``, else ``version``; credit values (``{currencyId: value}``) take
    ``version``. ``gate`` is compared with the scope's invalidation time and the
    environment's (``environment_gate``, ``KeyLayout.environment_gate``; None: not checked):
    the message timestamp, or the time a reader's upstream request started.
    """
    names = [*_scope_keys(keys), _gate(keys, environment_gate)]
    args = [
        str(version),
        str(gate),
        _ttl(ttl),
        _flag(only_if_exists),
        encode(map_entitlements(entries)),
        encode({"accessDeniedReason": access_denied_reason}),
    ]
    for feature_id, (value, usage_version) in metered_usages(entries).items():
        names.append(keys.feature_usage(feature_id))
        args += [encode(value), str(usage_version if usage_version is not None else version)]
    for currency_id, credit in (credits or {}).items():
        names.append(keys.credit(currency_id))
        args += [encode(credit), str(version)]
    return ScriptCall("v2_write_scope", tuple(names), tuple(args))


def usage_call(
    keys: CustomerKeys,
    value_key: str,
    value: Any,
    *,
    version: int,
    ttl: int,
    only_if_exists: bool,
    environment_gate: str | None = None,
) -> ScriptCall:
    """Write one usage or credit value of a scope (``only_if_exists``: only if its map exists)."""
    names = (
        keys.entitlements,
        value_key,
        keys.invalidated,
        keys.index,
        _gate(keys, environment_gate),
    )
    args = (str(version), _ttl(ttl), encode(value), _flag(only_if_exists))
    return ScriptCall("v2_write_usage", names, args)


def invalidate_call(keys: CustomerKeys, *, at: int, ttl: int, force: bool = False) -> ScriptCall:
    """Drop a scope's values of version <= ``at`` with their #timestamp siblings; refuse
    later writes whose gate is not newer than ``at``.

    ``force`` drops every value whatever its version and sets the invalidation time to
    ``at`` even when a later one is kept (the operator's repair after a producer's clock
    ran ahead).
    """
    return ScriptCall("v2_invalidate_scope", _scope_keys(keys), (str(at), _ttl(ttl), _flag(force)))


def invalidate_environment_call(environment_invalidated: str, *, at: int, ttl: int) -> ScriptCall:
    """Set the environment's invalidation time (``KeyLayout.environment_invalidated``) to
    ``at`` unless a later one is kept: the first step of ``{"all": true}``."""
    return ScriptCall("v2_invalidate_environment", (environment_invalidated,), (str(at), _ttl(ttl)))


def invalidate_key_call(
    value_key: str, owner: CustomerKeys | None, *, at: int, ttl: int
) -> ScriptCall:
    """Drop one value key with its #timestamp sibling when its version is <= ``at``: a step of
    ``{"all": true}``. ``owner`` is the scope of a usage or credit key (``KeyLayout.usage_owner``),
    whose tombstones and index the script keeps; None for any other key."""
    names = (value_key,) if owner is None else (value_key, owner.deleted, owner.index)
    return ScriptCall("v2_invalidate_key", names, (str(at), _ttl(ttl)))


def _scope_keys(keys: CustomerKeys) -> tuple[str, ...]:
    """The KEYS the scope scripts start with: map, metadata, invalidation time, index,
    tombstones."""
    return (keys.entitlements, keys.metadata, keys.invalidated, keys.index, keys.deleted)


def _gate(keys: CustomerKeys, environment_gate: str | None) -> str:
    """The environment's invalidation-time key, or (not checked) the scope's own again."""
    return environment_gate or keys.invalidated


def _ttl(ttl: int) -> str:
    return str(ttl if ttl > 0 else -1)


def _flag(on: bool) -> str:
    return "1" if on else "0"
