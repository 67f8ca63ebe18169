"""The gates a consumer passes before it receives, named for what each waits for.

Every consumer thread of a worker shares one ``Gates``; before each receive it asks
every gate whether it may go on (``open``), beating its heartbeat while a gate
makes it wait:

* ``RedisGate``: after a write Redis could not take (unreachable, timing out,
  refusing the credentials, out of memory, read-only, BUSY, LOADING...), backs
  off with equal jitter and writes the probe key (``Store.probe_write``) until
  Redis takes it; a PING would not do, Redis answers it while it refuses every
  write. Meanwhile ``redis_writes_failing`` is open in the health state, so
  /readyz goes DOWN after its window and UP again by itself.
* ``FloodGate``: a flood of invalid messages (``flood_window.FloodWindow``)
  stops receiving (/readyz DOWN with reason ``poison_flood``) until its
  cool-down; invalid messages met after the trip go back to the queue unparked.
* ``SchemaGate``: the environment's schema marker (``store.schema.SchemaGuard``)
  is looked at every CHECK_INTERVAL seconds; a data loss becomes the
  ``redis_data`` detail of /readyz and is counted; another key-schema version, or
  a marker Redis cannot read, stops receiving with reason ``schema_refused``
  until a later look passes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from loguru import logger
from redis.backoff import EqualJitterBackoff

from cache_pipeline.errors import SchemaVersionMismatch, StoreError, StoreUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState, Reason
from cache_pipeline.store.schema import SchemaCheck, SchemaGuard, SchemaStatus
from cache_pipeline.tasks.flood_window import FloodWindow

BACKOFF_BASE = 0.25  # seconds before the first probe (half of it jittered)
BACKOFF_CAP = 5.0  # seconds between probes at most
DETAIL = "redis_data"  # name of the /readyz detail about data loss
CHECK_INTERVAL = 5.0  # seconds between a writer's looks at the marker


class Gate(Protocol):
    def open(self, beat: Callable[[], None]) -> bool:
        """True when the consumer may receive now (it may wait first, calling ``beat``)."""


@dataclass
class Gates:
    """The gates of one worker, shared by its consumers, in the order they are asked; the
    process's ``DeleteBatcher`` is one too (it backs the consumers off while deletes fail)."""

    redis: RedisGate
    flood: FloodGate
    schema: SchemaGate
    deletes: Gate | None = None

    def open(self, beat: Callable[[], None]) -> bool:
        gates: tuple[Gate | None, ...] = (self.redis, self.flood, self.schema, self.deletes)
        return all(gate.open(beat) for gate in gates if gate is not None)


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

    def open(self, beat: Callable[[], None]) -> bool:
        """At once while Redis takes writes; else back off and probe until it does (True),
        or until the worker stops (False)."""
        if not self._paused:
            return True
        return self.wait(beat)

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


class FloodGate:
    """Shared by the consumer threads of one worker."""

    def __init__(self, window: FloodWindow, health: HealthState) -> None:
        self.window = window
        self.health = health
        self._halted_for: str | None = None
        self._lock = threading.Lock()

    def open(self, beat: Callable[[], None]) -> bool:
        """False while a flood keeps consumption stopped."""
        return not self.halted()

    def admit(self, *, invalid: bool) -> bool:
        """Count one received message; False when it must go back to the queue unparked."""
        stop = self.window.record(invalid=invalid)
        if stop:
            self.halted()
        return not (stop and invalid)

    def halted(self) -> bool:
        """True while consumption must stay stopped; reports the change of state once."""
        reason = self.window.reason
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


class SchemaGate:
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

    def open(self, beat: Callable[[], None]) -> bool:
        """False while the marker forbids writing."""
        return self.allows_writes()

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
