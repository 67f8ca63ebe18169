"""Plan and apply in one call, as the worker does: a ``Planner`` beside a ``Store``.

Test code only: the store runs planned writes (``Store.apply_planned``) and never
plans; these tests send it messages, so each plans them first with the planner of
the store's environment, as a task does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.contract.messages import Message
from cache_pipeline.contract.plan import BatchResult, Outcome, Planned, Planner
from cache_pipeline.errors import StoreError
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.writer import RedisClient, Store


@dataclass(frozen=True)
class Applier:
    """A store and the planner of its environment (the same layout and TTL)."""

    store: Store
    planner: Planner

    @classmethod
    def of(
        cls,
        client: RedisClient,
        layout: KeyLayout,
        *,
        ttl: int,
        policy: CacheUpdatePolicy = CacheUpdatePolicy.UPDATE_IF_EXISTS,
    ) -> Applier:
        return cls(Store(client, layout, ttl=ttl), Planner(layout, ttl=ttl, policy=policy))

    @property
    def client(self) -> RedisClient:
        return self.store.client

    @property
    def layout(self) -> KeyLayout:
        return self.store.layout

    def apply(self, message: Message, *, policy: CacheUpdatePolicy | None = None) -> Outcome:
        """One message alone; raises the ``StoreError`` Redis answered for it."""
        [result] = self.store.apply_planned([self.plan(message, policy)])
        if isinstance(result, StoreError):
            raise result
        return result

    def apply_batch(self, messages: Sequence[Message]) -> BatchResult:
        """Messages in order, in one ``apply_planned`` call."""
        return self.store.apply_planned([self.plan(message) for message in messages])

    def plan(self, message: Message, policy: CacheUpdatePolicy | None = None) -> Planned:
        """``message`` planned under the planner's policy, or under ``policy``."""
        planner = self.planner if policy is None else replace(self.planner, policy=policy)
        return planner.plan(message)
