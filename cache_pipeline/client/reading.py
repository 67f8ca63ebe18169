"""The cache read of one scope: its key names and the KEYS/ARGV of ``lua/v2_read_scope.lua``.

Pure, no I/O. One EVALSHA reads the scope's map, its ``#timestamp``, its metadata, the
global map's ``#timestamp`` (for a resource scope) and the usage or credit keys asked
for; ``cached_scope.judge`` then gives Stigg's hit/miss verdict on the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cache_pipeline.client.cached_scope import UsageKind, read_call
from cache_pipeline.keys import CustomerKeys, KeyLayout, timestamp_key
from cache_pipeline.store import scripts

# What a cache read, lock or write-back may raise and the SDK never passes on: the
# promise is an answer whenever the Edge API can give one, so any failure of the
# Redis side (redis-py errors, cluster client errors that are not RedisError, a
# corrupt value that the next write-back replaces) is logged and routed around.
CACHE_TROUBLE: tuple[type[Exception], ...] = (Exception,)


def script_source(name: str) -> str:
    """The text of one of the package's Lua scripts (the write scripts with their prelude)."""
    return scripts.script_source(name)


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """Which usage keys a read takes along: every metered one (``all``), or one
    feature's usage key or one credit key (``wanted`` names it)."""

    what: UsageKind
    wanted: str | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """One (customer, resource) scope with its key names, built before any I/O."""

    customer_id: str
    resource_id: str | None
    keys: CustomerKeys
    global_keys: CustomerKeys | None  # the customer's global scope, for a resource scope

    @classmethod
    def build(cls, layout: KeyLayout, customer_id: str, resource_id: str | None) -> Scope:
        """The scope of already checked ids."""
        global_keys = layout.customer(customer_id) if resource_id is not None else None
        return cls(customer_id, resource_id, layout.customer(customer_id, resource_id), global_keys)

    @property
    def resource(self) -> bool:
        return self.resource_id is not None

    def read_call(
        self, request: ReadRequest, *, cluster: bool
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """KEYS and ARGV of the read script.

        In Redis Cluster mode the global map lives in another slot: it is left out
        here and its ``#timestamp`` read apart (``global_timestamp_key``).
        """
        global_keys = None if cluster else self.global_keys
        return read_call(self.keys, global_keys, request.what, request.wanted)

    def global_timestamp_key(self, *, cluster: bool) -> str | None:
        """The key a cluster-mode resource read GETs apart, else None."""
        if not cluster or self.global_keys is None:
            return None
        return timestamp_key(self.global_keys.entitlements)


def with_global_timestamp(reply: list[Any], raw: Any) -> list[Any]:
    """A cluster-mode read's reply with the global map's ``#timestamp`` (read apart) in place."""
    padded = list(reply) + [None] * max(0, 4 - len(reply))
    return [*padded[:3], raw, *padded[4:]]
