"""The poison-flood guard wired to the worker: readiness, metric and log.

``cache_pipeline.tasks.poison_guard`` decides; this says so. While the guard is
tripped the consumers do not receive, /readyz is DOWN with the guard's reason,
and invalid messages met after the trip are handed back to the queue instead
of being parked.
"""

from __future__ import annotations

import threading

from loguru import logger

from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState, Reason
from cache_pipeline.tasks.poison_guard import PoisonGuard


class FloodBrake:
    """Shared by the consumer threads of one worker."""

    def __init__(self, guard: PoisonGuard, health: HealthState) -> None:
        self.guard = guard
        self.health = health
        self._halted_for: str | None = None
        self._lock = threading.Lock()

    def admit(self, *, invalid: bool) -> bool:
        """Count one received message; False when it must go back to the queue unparked."""
        stop = self.guard.record(invalid=invalid)
        if stop:
            self.halted()
        return not (stop and invalid)

    def halted(self) -> bool:
        """True while consumption must stay stopped; reports the change of state once."""
        reason = self.guard.reason
        with self._lock:
            if reason is not None:
                if self._halted_for is None:
                    metrics.POISON_FLOOD_PAUSES.inc()
                    logger.error("{}", reason)
                if self._halted_for != reason:
                    self.health.pause(Reason.POISON_FLOOD, reason)
                self._halted_for = reason
                return True
            if self._halted_for is not None:
                self.health.resume(Reason.POISON_FLOOD)
                self._halted_for = None
                logger.warning("poison flood cool-down over: consumption resumed")
            return False
