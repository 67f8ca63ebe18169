"""The Redis half of /readyz: a bounded, cached PING.

At most one PING is in flight; its answer is reused for ``max_age`` seconds so
that probes stay cheap. A PING that has not answered within ``timeout`` counts
as "Redis does not answer" (a hung Redis must not hang the probe). Each fresh
answer is written into the shared ``HealthState`` and the ``redis_up`` gauge.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from cache_pipeline.ops.health import HealthState
from cache_pipeline.ops.metrics import REDIS_UP

DEFAULT_MAX_AGE = 1.0
DEFAULT_TIMEOUT = 1.0


class RedisProbe:
    """``connected()`` tells whether Redis answered a PING within the last ``max_age`` s."""

    def __init__(
        self,
        client: Any,
        health: HealthState,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._health = health
        self._max_age = max_age
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="redis-probe")
        self._pending: Future[bool] | None = None
        self._answer = False
        self._checked_at = float("-inf")

    def connected(self) -> bool:
        """The cached answer, refreshed by a fresh PING when older than ``max_age``."""
        with self._lock:
            if self._clock() - self._checked_at >= self._max_age:
                self._answer = self._check()
                self._checked_at = self._clock()
                self._health.set_redis(self._answer)
                REDIS_UP.set(int(self._answer))
            return self._answer

    def close(self) -> None:
        """Stop the probe thread (a PING still in flight is abandoned)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _check(self) -> bool:
        if self._pending is None or self._pending.done():
            self._pending = self._executor.submit(self._ping)
        try:
            return self._pending.result(timeout=self._timeout)
        except FutureTimeout:
            return False

    def _ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except Exception:  # any failure to answer is "not connected"
            return False
