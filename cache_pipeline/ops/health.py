"""Shared, thread-safe view of this process's health, read by /readyz and /livez.

The worker reports into it; the HTTP surface only reads it.

Readiness (``readiness()``) is DOWN, with a machine-readable ``reason``, while
any of these holds (the first one found, in this order, is the ``reason``):

==========================  ==========================================================
``no_consumers``            no queue consumer runs in this process
``redis_unreachable``       the last readiness PING failed
``schema_refused``          the schema marker forbids writing (another version, unreadable)
``poison_flood``            the poison-flood guard stopped consumption
``redis_writes_failing``    writes have failed for ``window`` seconds without a success
``queue_receives_failing``  receives have failed for ``window`` seconds without a success
``queue_deletes_failing``   deletes have failed for ``window`` seconds without a success
==========================  ==========================================================

A failure run starts at its first failure and ends at the next success, so a
single failed call does not flip readiness, and readiness comes back by itself.

The gauge ``persistent_cache_ready{reason}`` follows readiness: one series per
reason above (``READINESS_REASONS``), 1 for the reason /readyz reports and 0 for
the others, all 0 while it answers UP. It is set whenever the state changes and
whenever readiness is read (each /readyz); a failure run that outlasts ``window``
shows at the next failed call (the retries back off 10 s at most) or /readyz.

Liveness (``liveness()``) only fails in a process that runs consumers
(``supervise``): when none is left (``no_consumers``), or when none has made
progress for ``stall_after`` seconds (``consumers_stalled``). Waiting for Redis
or SQS to come back is progress: a consumer beats on every turn of its loop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from cache_pipeline.ops import metrics


class Reason(StrEnum):
    """Why /readyz or /livez answers DOWN."""

    NO_CONSUMERS = "no_consumers"
    REDIS_UNREACHABLE = "redis_unreachable"
    SCHEMA_REFUSED = "schema_refused"
    POISON_FLOOD = "poison_flood"
    REDIS_WRITES_FAILING = "redis_writes_failing"
    QUEUE_RECEIVES_FAILING = "queue_receives_failing"
    QUEUE_DELETES_FAILING = "queue_deletes_failing"
    CONSUMERS_STALLED = "consumers_stalled"


PAUSES = (Reason.SCHEMA_REFUSED, Reason.POISON_FLOOD)
FAILURE_RUNS = (
    Reason.REDIS_WRITES_FAILING,
    Reason.QUEUE_RECEIVES_FAILING,
    Reason.QUEUE_DELETES_FAILING,
)
# What readiness() reports, in the order it looks (CONSUMERS_STALLED is liveness only).
READINESS_REASONS = (
    Reason.NO_CONSUMERS,
    Reason.REDIS_UNREACHABLE,
    *PAUSES,
    *FAILURE_RUNS,
)
# One series per reason from the start, so that an alert sees 0 rather than nothing.
_READY = {reason: metrics.READY.labels(reason=reason.value) for reason in READINESS_REASONS}
DEFAULT_WINDOW = 5.0
DEFAULT_STALL_AFTER = 120.0


@dataclass
class HealthState:
    """What /readyz and /livez report for this pod."""

    consumers: int = 0
    redis_connected: bool = False
    details: dict[str, str] = field(default_factory=dict)
    window: float = DEFAULT_WINDOW
    stall_after: float = DEFAULT_STALL_AFTER
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _paused: dict[Reason, str] = field(default_factory=dict, repr=False)
    _failing: dict[Reason, tuple[float, str]] = field(default_factory=dict, repr=False)
    _beats: dict[str, float] = field(default_factory=dict, repr=False)
    _supervised: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        with self._lock:
            self._publish()

    def set_consumers(self, count: int) -> None:
        with self._lock:
            self.consumers = count
            self._publish()

    def set_redis(self, connected: bool) -> None:
        with self._lock:
            self.redis_connected = connected
            self._publish()

    def pause(self, reason: Reason, message: str) -> None:
        """Consumption stops on purpose (``reason`` is one of ``PAUSES``)."""
        with self._lock:
            self._paused[reason] = message
            self._publish()

    def resume(self, reason: Reason) -> None:
        with self._lock:
            self._paused.pop(reason, None)
            self._publish()

    def paused(self, reason: Reason) -> str | None:
        with self._lock:
            return self._paused.get(reason)

    def failed(self, reason: Reason, message: str) -> None:
        """A call failed: start a failure run (``reason`` is one of ``FAILURE_RUNS``)."""
        with self._lock:
            since = self._failing.get(reason, (self.clock(), ""))[0]
            self._failing[reason] = (since, message)
            self._publish()

    def succeeded(self, reason: Reason) -> None:
        """A call succeeded: the failure run, if any, is over."""
        if reason in self._failing:  # unlocked peek: the hot path pays nothing when healthy
            with self._lock:
                self._failing.pop(reason, None)
                self._publish()

    def failing_since(self, reason: Reason) -> float | None:
        with self._lock:
            run = self._failing.get(reason)
            return None if run is None else run[0]

    def set_detail(self, name: str, value: str | None) -> None:
        with self._lock:
            if value is None:
                self.details.pop(name, None)
            else:
                self.details[name] = value

    def supervise(self) -> None:
        """From now on, /livez fails when no consumer is left or none makes progress."""
        with self._lock:
            self._supervised = True

    def beat(self, consumer: str) -> None:
        """``consumer`` made progress (one turn of its loop)."""
        self._beats[consumer] = self.clock()  # one dict store: atomic under the GIL

    def forget(self, consumer: str) -> None:
        """``consumer`` ended."""
        with self._lock:
            self._beats.pop(consumer, None)

    @property
    def ready(self) -> bool:
        return self.readiness()["status"] == "UP"

    def readiness(self) -> dict[str, object]:
        """The /readyz body (status first, as the published service answers)."""
        with self._lock:
            down = self._publish()
            body: dict[str, object] = {
                "status": "DOWN" if down else "UP",
                "consumers": self.consumers,
                "redis": "CONNECTED" if self.redis_connected else "DISCONNECTED",
            }
            if down is not None:
                body["reason"], body["message"] = down
            if self.details:
                body["details"] = dict(self.details)
            return body

    def as_dict(self) -> dict[str, object]:
        return self.readiness()

    def liveness(self) -> dict[str, object]:
        """The /livez body: ``{"status": "UP"}``, or DOWN with a reason."""
        with self._lock:
            if not self._supervised:
                return {"status": "UP"}
            if self.consumers <= 0:
                return _down(Reason.NO_CONSUMERS, "every queue consumer has stopped")
            newest = max(self._beats.values(), default=None)
            if newest is not None and self.clock() - newest > self.stall_after:
                stalled = self.clock() - newest
                return _down(
                    Reason.CONSUMERS_STALLED,
                    f"no queue consumer made progress for {stalled:.0f}s"
                    f" (bound {self.stall_after:g}s)",
                )
            return {"status": "UP"}

    def _publish(self) -> tuple[Reason, str] | None:
        """Readiness now (as ``_down``), written into the gauge; called with the lock held."""
        down = self._down()
        holding = None if down is None else down[0]
        for reason, series in _READY.items():
            series.set(1 if reason is holding else 0)
        return down

    def _down(self) -> tuple[Reason, str] | None:
        if self.consumers <= 0:
            return Reason.NO_CONSUMERS, "no queue consumer runs in this process"
        if not self.redis_connected:
            return Reason.REDIS_UNREACHABLE, "Redis does not answer a PING"
        for reason in PAUSES:
            if reason in self._paused:
                return reason, self._paused[reason]
        now = self.clock()
        for reason in FAILURE_RUNS:
            run = self._failing.get(reason)
            if run is not None and now - run[0] >= self.window:
                return reason, f"failing for {now - run[0]:.0f}s: {run[1]}"
        return None


def _down(reason: Reason, message: str) -> dict[str, object]:
    return {"status": "DOWN", "reason": reason.value, "message": message}
