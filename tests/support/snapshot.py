"""Read an environment's whole cache state from Redis, in the contract model's shape."""

from __future__ import annotations

import json
from typing import Any

from cache_pipeline.keys import TIMESTAMP_SUFFIX, KeyLayout, is_private
from cache_pipeline.store.writer import RedisClient


def read_state(client: RedisClient, layout: KeyLayout) -> dict[str, Any]:
    """``{key: decoded JSON}`` for value keys and ``{key#timestamp: int}`` for versions.

    Internal keys (the per-customer index, its invalidation time, the schema
    marker and the write probe) are left out.
    """
    state: dict[str, Any] = {}
    keys = sorted(client.scan_iter(match=layout.environment_pattern, count=1000))
    keys = [k for k in keys if not _internal(k, layout)]
    if not keys:
        return state
    for key in keys:
        raw = client.get(key)
        if raw is None:
            continue
        state[key] = int(raw) if key.endswith(TIMESTAMP_SUFFIX) else json.loads(raw)
    return state


def _internal(key: str, layout: KeyLayout) -> bool:
    return (
        is_private(key)
        or is_private(key.removesuffix(TIMESTAMP_SUFFIX))
        or key in (layout.schema_marker, layout.write_probe, layout.environment_invalidated)
    )
