"""A writer's watch on the environment's schema marker, shown in /readyz.

``SchemaWatch`` looks at the marker (``cache_pipeline.store.schema.SchemaGuard``)
for the consumer threads of one worker: a data loss becomes the ``redis_data``
detail of /readyz and is counted; a version mismatch, or a marker Redis cannot
read, pauses consumption with reason ``schema_refused`` until a later look passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from loguru import logger

from cache_pipeline.errors import SchemaVersionMismatch, StoreError, StoreUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState, Reason
from cache_pipeline.store.schema import SchemaCheck, SchemaGuard, SchemaStatus

DETAIL = "redis_data"  # name of the /readyz detail about data loss
CHECK_INTERVAL = 5.0  # seconds between a writer's looks at the marker


def refresh_health(guard: SchemaGuard, health: HealthState) -> SchemaCheck:
    """Check the marker and show the outcome in /readyz.

    A data loss becomes the ``redis_data`` detail; a version mismatch pauses
    consumption with the reason (readiness DOWN) and is raised again.
    """
    try:
        check = guard.check()
    except SchemaVersionMismatch as exc:
        health.pause(Reason.SCHEMA_REFUSED, str(exc))
        raise
    if check.status is SchemaStatus.DATA_LOST:
        metrics.REDIS_DATA_LOSS.inc()
    health.set_detail(DETAIL, check.detail())
    return check


class SchemaWatch:
    """A writer's periodic look at the marker, shared by its consumer threads.

    ``allows_writes()`` checks at most every ``interval`` seconds (at once after
    ``recheck_soon()``, which the consumer calls when Redis comes back). A version
    mismatch, or a marker Redis cannot read (a key of another type at its name),
    pauses consumption with the reason until a later check passes; an unreachable
    Redis is left to the write path.

    One thread reads the marker at a time, and no lock is held while it does: the
    others go on with the last answer instead of queueing behind a read that a
    hung Redis can hold for seconds (queued, each would then read in turn, and a
    shutdown would wait for all of them). Only the very first answer is waited for:
    nothing is written before the marker was looked at once.
    """

    def __init__(
        self,
        guard: SchemaGuard,
        health: HealthState,
        *,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guard = guard
        self.health = health
        self.interval = interval
        self.clock = clock
        self.mismatch: str | None = None
        self._next = 0.0
        self._checking = False  # a thread is reading the marker
        self._answered = False  # a first check has ended
        self._cond = threading.Condition()

    def allows_writes(self) -> bool:
        if self._claim():
            try:
                self._check()
            finally:
                self._checked()
        return self.mismatch is None

    def recheck_soon(self) -> None:
        with self._cond:
            self._next = 0.0

    def _claim(self) -> bool:
        """True when the calling thread is to read the marker now (no other thread is)."""
        with self._cond:
            self._cond.wait_for(lambda: self._answered or not self._checking)
            if self._checking or self.clock() < self._next:
                return False
            self._checking = True
            self._next = self.clock() + self.interval
            return True

    def _checked(self) -> None:
        with self._cond:
            self._checking = False
            self._answered = True
            self._cond.notify_all()

    def _check(self) -> None:
        try:
            check = refresh_health(self.guard, self.health)
        except SchemaVersionMismatch as exc:
            self._refuse(str(exc))
            return
        except StoreUnavailable:
            return
        except StoreError as exc:
            message = f"{self.guard.key} cannot be read, refusing to write until it can: {exc}"
            self.health.pause(Reason.SCHEMA_REFUSED, message)
            self._refuse(message)
            return
        if self.mismatch is not None:
            self.health.resume(Reason.SCHEMA_REFUSED)
            self.mismatch = None
            logger.warning("the schema marker allows writing again: consumption resumed")
        if check.status is SchemaStatus.DATA_LOST:
            logger.error("{}", check.detail())

    def _refuse(self, message: str) -> None:
        if self.mismatch is None:
            logger.error("{}", message)
        self.mismatch = message
