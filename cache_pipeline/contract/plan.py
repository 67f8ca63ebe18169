"""Message → script calls: the pure half of a write (CONTRACT.md v2.1, sections 2 and 3).

``plan(message, ...)`` says which Lua script to run with which KEYS and ARGV; the
builders below it (``snapshot_call``, ``usage_call``, ``invalidate_call``, and the two
steps of ``{"all": true}``) say it for one scope, and the reader SDK's write-back and
``cache-pipeline resync`` use them too. A scope's calls take its ``CustomerKeys``: every
key name comes from ``cache_pipeline.keys``, its private keys included.
It does no I/O, so its output can be checked against fixed expected values;
``cache_pipeline.store.writer`` runs the calls. ``Planner`` holds what planning depends
on (the environment, the key layout, the TTL, the cache-update policy and the
accepted clock skew): ``parse`` reads a body, ``plan`` returns one message's
``Planned`` calls, already checked to be encodable, so that a message that
cannot be sent to Redis fails alone instead of failing its batch's round trip.
It is what every per-type task does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypeAlias

from cache_pipeline.config import CacheUpdatePolicy, Settings
from cache_pipeline.contract.messages import (
    CacheInvalidated,
    CreditsData,
    CreditsUpdated,
    Decoder,
    EntitlementsUpdated,
    Message,
    UsageUpdated,
)
from cache_pipeline.contract.stigg_map import Entry, map_entitlements, metered_usages
from cache_pipeline.errors import StoreError
from cache_pipeline.keys import CustomerKeys, KeyLayout

__all__ = [
    "BatchResult",
    "InvalidateAll",
    "Outcome",
    "Planned",
    "Planner",
    "ScriptCall",
    "ScriptName",
    "Step",
    "encode",
    "invalidate_call",
    "invalidate_environment_call",
    "invalidate_key_call",
    "plan",
    "snapshot_call",
    "usage_call",
]


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


@dataclass(frozen=True, slots=True)
class InvalidateAll:
    """Invalidate the whole environment at ``at`` (``Store.invalidate_environment``)."""

    at: int


Step = ScriptCall | InvalidateAll


class Outcome(StrEnum):
    """What applying one message did."""

    WRITTEN = "written"
    STALE = "stale"  # every key held a newer version (rule 1)
    POLICY = "policy"  # skipped by CACHE_UPDATE_POLICY=UPDATE_IF_EXISTS: no map (rule 2)
    INVALIDATED = "invalidated"


# One entry per message of a batch: its outcome, or the error Redis answered for it alone.
BatchResult: TypeAlias = "list[Outcome | StoreError]"


@dataclass(frozen=True, slots=True)
class Planned:
    """One message and the script calls that apply it: what a task returns."""

    message: Message
    steps: tuple[Step, ...]

    def __repr__(self) -> str:  # Celery's tracer formats every result: keep it short
        return f"<Planned {self.message.type} {self.message.id[:40]!r}: {len(self.steps)} step(s)>"


def plan(
    message: Message,
    layout: KeyLayout,
    *,
    ttl: int,
    policy: CacheUpdatePolicy,
) -> list[Step]:
    """The script calls that apply ``message`` under the write rules."""
    ts = message.timestamp
    if isinstance(message, EntitlementsUpdated):
        data = message.data
        return [
            snapshot_call(
                layout.customer(data.customer_id, data.resource_id),
                data.entitlements,
                version=ts,
                gate=ts,
                ttl=ttl,
                only_if_exists=policy is CacheUpdatePolicy.UPDATE_IF_EXISTS,
                access_denied_reason=data.access_denied_reason,
                credits={credit.currency_id: credit.as_stored() for credit in data.credits},
                environment_gate=layout.environment_gate,
            )
        ]
    if isinstance(message, UsageUpdated | CreditsUpdated):
        usage = message.data
        keys = layout.customer(usage.customer_id, usage.resource_id)
        if isinstance(usage, CreditsData):
            value_key = keys.credit(usage.currency_id)
        else:
            value_key = keys.feature_usage(usage.feature_id)
        only_if_exists = policy is CacheUpdatePolicy.UPDATE_IF_EXISTS
        return [
            usage_call(
                keys,
                value_key,
                usage.as_stored(),
                version=ts,
                ttl=ttl,
                only_if_exists=only_if_exists,
                environment_gate=layout.environment_gate,
            )
        ]
    return _invalidation(message, layout, ts, ttl)


def _invalidation(message: CacheInvalidated, layout: KeyLayout, ts: int, ttl: int) -> list[Step]:
    if message.data.all:
        return [InvalidateAll(ts)]
    return [
        invalidate_call(layout.customer(ref.customer_id, ref.resource_id), at=ts, ttl=ttl)
        for ref in message.data.customers
    ]


@dataclass(frozen=True)
class Planner:
    """Parses and plans messages for one environment."""

    layout: KeyLayout
    ttl: int
    policy: CacheUpdatePolicy
    max_future_skew_secs: int = 300
    clock: Callable[[], float] = field(default=time.time, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Planner:
        return cls(
            KeyLayout(settings.environment_prefix, settings.redis_cluster),
            ttl=settings.keys_ttl_in_secs,
            policy=settings.cache_update_policy,
            max_future_skew_secs=settings.max_future_skew_secs,
        )

    @property
    def environment(self) -> str:
        return self.layout.prefix

    @property
    def decoder(self) -> Decoder:
        """The decoder of this environment's queue bodies."""
        return Decoder(self.environment, self.max_future_skew_secs, self.clock)

    def parse(self, body: str | bytes) -> Message:
        """A body as a message of this environment, its timestamp within the clock skew.

        Raises ``InvalidMessage``.
        """
        return self.decoder.message(body)

    def plan(self, message: Message) -> Planned:
        """The script calls that apply ``message``.

        Raises ``UnicodeEncodeError`` for an argument Redis could not be sent.
        """
        steps = tuple(plan(message, self.layout, ttl=self.ttl, policy=self.policy))
        for step in steps:
            if isinstance(step, ScriptCall):
                for arg in step.args:
                    arg.encode()
        return Planned(message, steps)
