"""Message → script calls: the pure half of a write (CONTRACT.md v2, sections 2 and 3).

``plan(message, ...)`` says which Lua script to run with which KEYS and ARGV.
It does no I/O, so its output can be checked against fixed expected values;
``cache_pipeline.store.writer`` runs the calls. ``Planner`` holds what planning depends
on (the environment, the key layout, the TTL, the cache-update policy and the
accepted clock skew): ``parse`` reads a body, ``plan`` returns one message's
``Planned`` calls, already checked to be encodable, so that a message that
cannot be sent to Redis fails alone instead of failing its batch's round trip.
It is what every per-type task does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeAlias

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
from cache_pipeline.contract.writes import (
    ScriptCall,
    ScriptName,
    encode,
    invalidate_call,
    snapshot_call,
    usage_call,
)
from cache_pipeline.errors import StoreError
from cache_pipeline.keys import KeyLayout

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
    "plan",
]


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
