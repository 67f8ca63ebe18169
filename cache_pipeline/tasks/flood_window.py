"""The poison-flood window: has the share of invalid messages among the latest ones tripped?

One bad message is parked (DLQ or redrive). A flood of them, for example after
an upstream schema change, means the fault is not in the messages: parking the
whole queue would only move the backlog into the DLQ. The window keeps the
outcomes of the last POISON_FLOOD_WINDOW messages; once at least
POISON_FLOOD_MIN_MESSAGES are in the window and the invalid share reaches
POISON_FLOOD_RATIO, it trips: the consumer stops, leaves the invalid message
that tripped it (and every later one) on the queue, and /readyz says why.

It resumes on its own after POISON_FLOOD_COOLDOWN_SECS with an empty window (if
the flood goes on it trips again after at most ``ratio * window`` more invalid
messages); with a cool-down of 0 it stays paused until the worker restarts.

Pure: no I/O; the clock is injected.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cache_pipeline.config import Settings


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """When the guard trips, and for how long."""

    ratio: float = 0.5  # 0 turns the guard off
    window: int = 100
    min_messages: int = 20
    cooldown: float = 300.0  # seconds; 0 = until restart

    def __post_init__(self) -> None:
        if not 0 <= self.ratio <= 1 or self.window < 1 or self.min_messages < 1:
            raise ValueError("ratio must be 0..1, window and min_messages at least 1")
        if self.cooldown < 0:
            raise ValueError("cooldown must be >= 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> FloodLimits:
        return cls(
            ratio=settings.poison_flood_ratio,
            window=settings.poison_flood_window,
            min_messages=settings.poison_flood_min_messages,
            cooldown=float(settings.poison_flood_cooldown_secs),
        )

    @property
    def enabled(self) -> bool:
        return self.ratio > 0


class FloodWindow:
    """Sliding window of message outcomes; thread-safe."""

    def __init__(self, limits: FloodLimits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = limits
        self._clock = clock
        self._outcomes: deque[bool] = deque(maxlen=limits.window)  # True = invalid
        self._invalid = 0
        self._tripped_at: float | None = None
        self._reason: str | None = None
        self._lock = threading.Lock()

    def record(self, *, invalid: bool) -> bool:
        """Count one message; True when consumption must stop (now or already).

        Call it before parking an invalid message: when it answers True, leave
        the message on the queue instead.
        """
        with self._lock:
            if self._paused_locked():
                return True
            self._push(invalid)
            if self._flooded():
                self._tripped_at = self._clock()
                self._reason = self._describe()
                return True
            return False

    @property
    def paused(self) -> bool:
        """True while tripped; False again once the cool-down has passed."""
        with self._lock:
            return self._paused_locked()

    @property
    def reason(self) -> str | None:
        """Why consumption stopped, for /readyz and the log; None when not paused."""
        with self._lock:
            return self._reason if self._paused_locked() else None

    def seconds_left(self) -> float | None:
        """Time until the automatic resume; None when not paused or paused until restart."""
        with self._lock:
            if not self._paused_locked() or self.bound.cooldown == 0:
                return None
            assert self._tripped_at is not None
            return max(0.0, self._tripped_at + self.bound.cooldown - self._clock())

    def _push(self, invalid: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._invalid -= 1
        self._outcomes.append(invalid)
        self._invalid += invalid

    def _flooded(self) -> bool:
        seen = len(self._outcomes)
        return (
            self.bound.enabled
            and seen >= self.bound.min_messages
            and self._invalid >= self.bound.ratio * seen
        )

    def _paused_locked(self) -> bool:
        if self._tripped_at is None:
            return False
        if self.bound.cooldown and self._clock() - self._tripped_at >= self.bound.cooldown:
            self._tripped_at, self._reason = None, None
            self._outcomes.clear()
            self._invalid = 0
            return False
        return True

    def _describe(self) -> str:
        seen = len(self._outcomes)
        resume = (
            f"resumes after {self.bound.cooldown:g}s"
            if self.bound.cooldown
            else "restart the worker to resume"
        )
        return (
            f"poison flood: {self._invalid} of the last {seen} messages were invalid"
            f" (bound POISON_FLOOD_RATIO={self.bound.ratio:g} over"
            f" POISON_FLOOD_WINDOW={self.bound.window}); consumption stopped and invalid"
            f" messages stay on the queue; {resume}"
        )
