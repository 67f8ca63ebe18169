"""Shared, thread-safe view of this process's health, read by /readyz.

The worker updates it (consumers started and stopped, Redis reachable or not,
consumption paused and why); the HTTP surface only reads it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class HealthState:
    """What /readyz reports for this pod."""

    consumers: int = 0
    redis_connected: bool = False
    paused_reason: str | None = None
    details: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_consumers(self, count: int) -> None:
        with self._lock:
            self.consumers = count

    def set_redis(self, connected: bool) -> None:
        with self._lock:
            self.redis_connected = connected

    def pause(self, reason: str) -> None:
        with self._lock:
            self.paused_reason = reason

    def resume(self) -> None:
        with self._lock:
            self.paused_reason = None

    def set_detail(self, name: str, value: str | None) -> None:
        with self._lock:
            if value is None:
                self.details.pop(name, None)
            else:
                self.details[name] = value

    @property
    def ready(self) -> bool:
        with self._lock:
            return self.consumers > 0 and self.redis_connected and self.paused_reason is None

    def as_dict(self) -> dict[str, object]:
        """The /readyz body (status first, as the published service answers)."""
        with self._lock:
            up = self.consumers > 0 and self.redis_connected and self.paused_reason is None
            body: dict[str, object] = {
                "status": "UP" if up else "DOWN",
                "consumers": self.consumers,
                "redis": "CONNECTED" if self.redis_connected else "DISCONNECTED",
            }
            if self.paused_reason:
                body["reason"] = self.paused_reason
            if self.details:
                body["details"] = dict(self.details)
            return body
