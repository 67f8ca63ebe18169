"""Waiting for Redis to take writes again: paused consumption, jittered backoff, no hot loop.

When a write finds Redis unable to take it (unreachable, timing out, refusing
the credentials, out of memory, read-only, BUSY, LOADING, ...) the consumer
puts the batch back and calls ``RedisGate.wait``: it backs off with exponential
backoff and equal jitter, then writes the probe key (``Store.probe_write``), and
returns once Redis takes it (consumption resumes) or when the worker is
stopping. A PING would not do: Redis answers it while it refuses every write.
Meanwhile the failure run ``redis_writes_failing`` is open in the health state,
so /readyz goes DOWN after its window and UP again by itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from loguru import logger
from redis.backoff import EqualJitterBackoff

from cache_pipeline.errors import StoreError, StoreUnavailable
from cache_pipeline.ops.health import HealthState, Reason

BACKOFF_BASE = 0.25  # seconds before the first probe (half of it jittered)
BACKOFF_CAP = 5.0  # seconds between probes at most


class RedisGate:
    """Shared by the consumer threads of one worker; each waits and probes on its own."""

    def __init__(
        self,
        probe_write: Callable[[], None],
        health: HealthState,
        stopping: threading.Event,
        *,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_CAP,
    ) -> None:
        self._probe_write = probe_write
        self._health = health
        self._stopping = stopping
        self._backoff = EqualJitterBackoff(cap=cap, base=base)
        self._lock = threading.Lock()
        self._paused = False

    def failed(self, exc: StoreUnavailable) -> None:
        """A write found Redis unable to take it."""
        self._health.failed(Reason.REDIS_WRITES_FAILING, str(exc))
        with self._lock:
            first, self._paused = not self._paused, True
        if first:
            logger.warning("Redis cannot take writes, consumption paused until it does: {}", exc)

    def succeeded(self) -> None:
        """A write (or the probe) went through."""
        self._health.succeeded(Reason.REDIS_WRITES_FAILING)
        if self._paused:
            with self._lock:
                was, self._paused = self._paused, False
            if was:
                logger.info("Redis takes writes again: consumption resumed")

    def wait(self, beat: Callable[[], None]) -> bool:
        """Back off and probe until Redis takes a write: True, or False when stopping."""
        failures = 0
        while not self._stopping.wait(self._backoff.compute(failures)):
            beat()
            if self._writable():
                self.succeeded()
                return True
            failures += 1
        return False

    def _writable(self) -> bool:
        try:
            self._probe_write()
        except StoreUnavailable as exc:
            self._health.failed(Reason.REDIS_WRITES_FAILING, str(exc))
            return False
        except StoreError as exc:  # refused for this key only (an ACL): let real writes tell
            logger.warning("the write probe was refused, resuming anyway: {}", exc)
        return True
