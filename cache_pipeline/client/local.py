"""Optional in-process cache in front of Redis: short TTL, bounded size, thread-safe.

It keeps the read script's decoded replies of cache hits, so every call still judges and
decides for itself (its own feature, requested usage and time) exactly as on a Redis read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from cache_pipeline.client.cached_scope import DecodedReply

# (scope map key, what the read took along, the feature or currency it named)
ReadKey = tuple[str, str, str | None]


class LocalCache:
    """Least-recently-used map of read → reply, each entry valid for ``ttl`` seconds.

    With ``ttl`` 0 it is off: ``get`` always misses and ``put`` keeps nothing.
    """

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[ReadKey, tuple[float, DecodedReply]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, key: ReadKey) -> DecodedReply | None:
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

    def put(self, key: ReadKey, reply: DecodedReply) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries[key] = (time.monotonic() + self.ttl, reply)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
