"""Turning one message into its planned writes: what every per-type task does (pure).

``Planner`` holds what planning depends on (the environment, the key layout,
the TTL, the cache-update policy and the accepted clock skew). ``parse`` reads a
body; ``plan`` returns the script calls of one message, already checked to be
encodable, so that a message that cannot be sent to Redis fails alone instead
of failing the round trip of its batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cache_pipeline.config import CacheUpdatePolicy, Settings
from cache_pipeline.keys import KeyLayout
from cache_pipeline.messages import Message, parse_message
from cache_pipeline.plan import Planned, ScriptCall, plan


@dataclass(frozen=True)
class Planner:
    """Parses and plans messages for one environment."""

    layout: KeyLayout
    ttl: int
    policy: CacheUpdatePolicy
    max_future_skew_secs: int = 300
    clock: Callable[[], float] = field(default=time.time, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Planner:
        return cls(
            KeyLayout(settings.environment_prefix, settings.redis_cluster),
            ttl=settings.keys_ttl_in_secs,
            policy=settings.cache_update_policy,
            max_future_skew_secs=settings.max_future_skew_secs,
        )

    @property
    def environment(self) -> str:
        return self.layout.prefix

    def parse(self, body: str | bytes) -> Message:
        """A body as a message of this environment, its timestamp within the clock skew.

        Raises ``InvalidMessage``.
        """
        latest = int(self.clock() * 1000) + self.max_future_skew_secs * 1000
        return parse_message(body, self.environment, latest_ms=latest)

    def plan(self, message: Message) -> Planned:
        """The script calls that apply ``message``.

        Raises ``UnicodeEncodeError`` for an argument Redis could not be sent.
        """
        steps = tuple(plan(message, self.layout, ttl=self.ttl, policy=self.policy))
        for step in steps:
            if isinstance(step, ScriptCall):
                for arg in step.args:
                    arg.encode()
        return Planned(message, steps)
