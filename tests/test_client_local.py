"""The in-process cache: expiry, least-recently-used eviction, off by default."""

from __future__ import annotations

from cache_pipeline.client.cached_scope import decode
from cache_pipeline.client.local import LocalCache
from tests.support.servers import wait_until

A = ("P:c_a", "all", None)
B = ("P:c_b", "all", None)
C = ("P:c_c", "credit", "ai")


def test_local_cache_expires_and_evicts_the_least_recently_used() -> None:
    a, b, c = (decode(["{}", version, None, None]) for version in ("1", "2", "3"))
    cache = LocalCache(ttl=60, max_entries=2)
    cache.put(A, a)
    cache.put(B, b)
    assert cache.get(A) is a  # "a" is now the most recently used
    cache.put(C, c)
    assert (cache.get(B), len(cache)) == (None, 2)
    assert cache.get(C) is c
    short = LocalCache(ttl=0.05, max_entries=10)
    short.put(A, a)
    wait_until(lambda: short.get(A) is None, timeout=5, what="the entry to expire")
    off = LocalCache(ttl=0, max_entries=10)
    off.put(A, a)
    assert (off.enabled, off.get(A), len(off)) == (False, None, 0)
