"""Script calls for one scope: which write script, with which KEYS and ARGV.

Pure, no I/O: ``cache_pipeline/store/lua/v2_*.lua`` run them
(``cache_pipeline.store.writer`` for the pipeline, the reader SDK for its write-back).
``scope`` is the scope's map key (``P:c_<C>`` or ``P:c_<C>:r_<R>``, ids raw); its
private keys are ``S#invalidated`` (time of the latest invalidation), ``S#keys`` (the
usage and credit keys written) and ``S#deleted`` (the versions invalidations deleted
them at), names no Stigg reader reads and no id can produce (ids never hold ``#``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cache_pipeline.contract.stigg_map import Entry, map_entitlements, metered_usages
from cache_pipeline.keys import DELETED_SUFFIX, INDEX_SUFFIX, INVALIDATED_SUFFIX

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


def private_keys(scope: str) -> tuple[str, str]:
    """The scope's invalidation-time key and usage-key index."""
    return scope + INVALIDATED_SUFFIX, scope + INDEX_SUFFIX


def snapshot_call(
    scope: str,
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
    keys = [
        scope,
        f"{scope}:metadata",
        *private_keys(scope),
        scope + DELETED_SUFFIX,
        _gate(scope, environment_gate),
    ]
    args = [
        str(version),
        str(gate),
        _ttl(ttl),
        "1" if only_if_exists else "0",
        encode(map_entitlements(entries)),
        encode({"accessDeniedReason": access_denied_reason}),
    ]
    for feature_id, (value, usage_version) in metered_usages(entries).items():
        keys.append(f"{scope}:f_{feature_id}")
        args += [encode(value), str(usage_version if usage_version is not None else version)]
    for currency_id, credit in (credits or {}).items():
        keys.append(f"{scope}:credit_{currency_id}")
        args += [encode(credit), str(version)]
    return ScriptCall("v2_write_scope", tuple(keys), tuple(args))


def usage_call(
    scope: str,
    value_key: str,
    value: Any,
    *,
    version: int,
    ttl: int,
    only_if_exists: bool,
    environment_gate: str | None = None,
) -> ScriptCall:
    """Write one usage or credit value of a scope (``only_if_exists``: only if its map exists)."""
    keys = (scope, value_key, *private_keys(scope), _gate(scope, environment_gate))
    args = (str(version), _ttl(ttl), encode(value), "1" if only_if_exists else "0")
    return ScriptCall("v2_write_usage", keys, args)


def invalidate_call(scope: str, *, at: int, ttl: int, force: bool = False) -> ScriptCall:
    """Drop a scope's values of version <= ``at`` with their #timestamp siblings; refuse
    later writes whose gate is not newer than ``at``.

    ``force`` drops every value whatever its version and sets the invalidation time to
    ``at`` even when a later one is kept (the operator's repair after a producer's clock
    ran ahead).
    """
    keys = (scope, f"{scope}:metadata", *private_keys(scope), scope + DELETED_SUFFIX)
    return ScriptCall("v2_invalidate_scope", keys, (str(at), _ttl(ttl), "1" if force else "0"))


def _gate(scope: str, environment_gate: str | None) -> str:
    """The environment's invalidation-time key, or (not checked) the scope's own again."""
    return environment_gate or scope + INVALIDATED_SUFFIX


def _ttl(ttl: int) -> str:
    return str(ttl if ttl > 0 else -1)
