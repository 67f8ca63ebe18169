"""The reader's write-back of an Edge API answer, as Stigg's SDK writes it: pure, no I/O.

The map, the metadata and one usage key per metered entry go through
``lua/v2_write_scope.lua`` (CONTRACT.md §3): monotonic per key, the map versioned by
the answer's first valid ``entitlementUpdatedAt`` (``dates.edge_version``, as Stigg's
SDK does), usage keys by their ``usageUpdatedAt``, under policy UPSERT, and gated by
the time the Edge request started, so that a write-back whose request started after
an invalidation lands and one that started before it does not (rule 3.4).
"""

from __future__ import annotations

from cache_pipeline.client.upstream import EdgeAnswer
from cache_pipeline.contract.dates import edge_version
from cache_pipeline.contract.plan import ScriptCall, snapshot_call
from cache_pipeline.contract.stigg_map import metered_usages
from cache_pipeline.keys import CustomerKeys, unsafe_id_problem


def write_back_problem(answer: EdgeAnswer) -> str | None:
    """Why an answer is not written: a metered feature id that would name another key."""
    for feature_id in metered_usages(answer.entitlements):
        problem = unsafe_id_problem(feature_id)
        if problem is not None:
            return f"feature {problem}"
    return None


def write_back_call(
    keys: CustomerKeys,
    answer: EdgeAnswer,
    *,
    ttl: int,
    environment_gate: str | None = None,
    now: int | None = None,
) -> ScriptCall:
    """The script call that writes ``answer`` to the scope of ``keys``
    (``environment_gate``: ``KeyLayout.environment_gate``; ``now``: the version of entries
    without a valid ``entitlementUpdatedAt``, the current time by default)."""
    entries = answer.entitlements
    return snapshot_call(
        keys,
        entries,
        version=edge_version(entries, now=now),
        gate=answer.requested_at_ms,
        ttl=ttl,
        only_if_exists=False,
        environment_gate=environment_gate,
    )
