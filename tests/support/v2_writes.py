"""Writes the contract-v2 way (``contract.writes`` + ``lua/v2_*.lua``), as the v2 pipeline does,
so reader tests can seed Redis without the worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.commands.core import Script

from cache_pipeline.client.reading import script_source
from cache_pipeline.contract.dates import edge_version
from cache_pipeline.contract.plan import ScriptCall, invalidate_call, snapshot_call, usage_call
from cache_pipeline.keys import KeyLayout

TTL = 604800


def run(client: Any, call: ScriptCall) -> int:
    """Run one planned script call (plain or cluster client)."""
    script: Script = client.register_script(script_source(call.script))
    return int(script(keys=call.keys, args=call.args))


def write_scope(
    client: Any,
    layout: KeyLayout,
    customer: str,
    entries: Sequence[Mapping[str, Any]],
    *,
    resource: str | None = None,
    version: int | None = None,
    credits: Mapping[str, Mapping[str, Any]] | None = None,
    access_denied_reason: str | None = None,
    ttl: int = TTL,
) -> int:
    """An entitlements snapshot (Edge-shaped entries) under UPSERT; returns keys written."""
    at = edge_version(entries) if version is None else version
    call = snapshot_call(
        layout.customer(customer, resource),
        entries,
        version=at,
        gate=at,
        ttl=ttl,
        only_if_exists=False,
        access_denied_reason=access_denied_reason,
        credits=credits,
    )
    return run(client, call)


def write_usage(
    client: Any,
    layout: KeyLayout,
    customer: str,
    key: str,
    value: Mapping[str, Any],
    *,
    version: int,
    resource: str | None = None,
    only_if_exists: bool = True,
) -> int:
    """One usage or credit value (``key`` from ``layout.customer(...)``); by default, as under
    UPDATE_IF_EXISTS, only into an existing scope."""
    scope = layout.customer(customer, resource)
    call = usage_call(scope, key, value, version=version, ttl=TTL, only_if_exists=only_if_exists)
    return run(client, call)


def invalidate(
    client: Any, layout: KeyLayout, customer: str, at: int, resource: str | None = None
) -> int:
    """Invalidate a scope at ``at`` (epoch ms)."""
    return run(client, invalidate_call(layout.customer(customer, resource), at=at, ttl=TTL))


def credit(used: int, limit: int | None) -> dict[str, Any]:
    """A credit key's value."""
    return {
        "currentUsage": used,
        "usageLimit": limit,
        "usagePeriodStart": 1761955200000,
        "usagePeriodEnd": 1764547200000,
    }
