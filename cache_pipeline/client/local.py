"""Optional in-process cache in front of Redis: short TTL, bounded size, thread-safe."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import replace

from cache_pipeline.client.models import CustomerEntitlements

ScopeKey = tuple[str, str | None]


class LocalCache:
    """Least-recently-used map of scope → answer, each entry valid for ``ttl`` seconds.

    With ``ttl`` 0 it is off: ``get`` always misses and ``put`` keeps nothing.
    An answer served from here says ``source="cache"``, wherever it first came from.
    """

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[ScopeKey, tuple[float, CustomerEntitlements]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, key: ScopeKey) -> CustomerEntitlements | None:
        if not self.enabled:
            return None
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[0] <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found[1]

    def put(self, key: ScopeKey, value: CustomerEntitlements) -> None:
        if not self.enabled:
            return
        with self._lock:
            kept = value if value.source == "cache" else replace(value, source="cache")
            self._entries[key] = (time.monotonic() + self.ttl, kept)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
