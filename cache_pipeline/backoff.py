"""Waiting for Redis to come back: paused consumption, jittered backoff, no hot loop.

When a write finds Redis unreachable the consumer calls ``RedisGate.wait``: the
pod reports itself paused (``/readyz`` 503 with the reason), Redis is probed
with exponential backoff and equal jitter, and the call returns once Redis
answers (consumption resumes) or when the worker is stopping. Several
consumer threads share one gate: one probes, the others wait for its verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from loguru import logger
from redis.backoff import EqualJitterBackoff

from cache_pipeline import metrics
from cache_pipeline.errors import StoreError, StoreUnavailable
from cache_pipeline.health import HealthState

PAUSE_REASON = "redis unavailable"
BACKOFF_BASE = 0.25  # seconds before the first probe (half of it jittered)
BACKOFF_CAP = 5.0  # seconds between probes at most


class RedisGate:
    """Blocks consumers while Redis is unreachable and tells health what is going on."""

    def __init__(
        self,
        ping: Callable[[], bool],
        health: HealthState,
        stopping: threading.Event,
        *,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_CAP,
    ) -> None:
        self._ping = ping
        self._health = health
        self._stopping = stopping
        self._backoff = EqualJitterBackoff(cap=cap, base=base)
        self._lock = threading.Lock()

    def wait(self) -> bool:
        """Pause until Redis answers; True when it does, False when the worker is stopping."""
        with self._lock:  # one thread probes; the others find Redis back when they get in
            if self._health.paused_reason is None and self.probe():
                return True
            self._pause()
            failures = 0
            while not self._stopping.wait(self._backoff.compute(failures)):
                if self.probe():
                    self._resume()
                    return True
                failures += 1
            return False

    def probe(self) -> bool:
        """Ping Redis once and report the answer to health and metrics."""
        try:
            up = self._ping()
        except (StoreUnavailable, StoreError):
            up = False
        self._health.set_redis(up)
        metrics.REDIS_UP.set(1 if up else 0)
        return up

    def _pause(self) -> None:
        self._health.pause(PAUSE_REASON)
        logger.warning("Redis is unavailable: consumption paused until it answers")

    def _resume(self) -> None:
        self._health.resume()
        logger.info("Redis answers again: consumption resumed")
