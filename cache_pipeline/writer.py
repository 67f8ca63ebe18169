"""Writes contract messages to the store, alone or staged into one round trip.

The queue consumer opens a batch for the messages of one receive; every write
made in that thread while the batch is open is staged, and ``flush`` applies
them all with one pipelined ``Store.apply_batch``. Outside a batch (a task
called on its own) ``write`` applies the message at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from cache_pipeline import metrics
from cache_pipeline.errors import StoreError, StoreUnavailable
from cache_pipeline.messages import Message, parse_message
from cache_pipeline.store import BatchResult, Outcome, Store


class StagedBatch:
    """The messages staged by one thread, in the order they were written."""

    def __init__(self) -> None:
        self.messages: list[Message] = []


class Writer:
    """The store seen by the per-type tasks."""

    def __init__(self, store: Store, environment: str, max_future_skew_secs: int = 300) -> None:
        self.store = store
        self.environment = environment
        self.max_future_skew_ms = max_future_skew_secs * 1000
        self._local = threading.local()

    def parse(self, body: bytes | str) -> Message:
        """A queue body as a message of this environment, its timestamp within the clock skew.

        Raises ``InvalidMessage``.
        """
        latest = int(time.time() * 1000) + self.max_future_skew_ms
        return parse_message(body, self.environment, latest_ms=latest)

    @contextmanager
    def batch(self) -> Iterator[StagedBatch]:
        """Stage every ``write`` of this thread until the block ends (nothing is flushed here)."""
        staged = StagedBatch()
        self._local.batch = staged
        try:
            yield staged
        finally:
            self._local.batch = None

    def write(self, message: Message) -> Outcome | None:
        """Stage the message in the open batch (returns None) or apply it now.

        Applied now: raises ``StoreUnavailable`` or ``StoreError`` as the store does.
        """
        staged: StagedBatch | None = getattr(self._local, "batch", None)
        if staged is not None:
            staged.messages.append(message)
            return None
        result = self.flush([message])[0]
        if isinstance(result, StoreError):
            raise result
        return result

    def flush(self, messages: list[Message]) -> BatchResult:
        """Apply messages in one round trip, timed and counted.

        Raises ``StoreUnavailable`` (nothing is known to be written).
        """
        if not messages:
            return []
        started = time.perf_counter()
        try:
            results = self.store.apply_batch(messages)
        except StoreUnavailable:
            metrics.WRITE_ERRORS.inc()
            metrics.REDIS_UP.set(0)
            raise
        metrics.WRITE_DURATION.observe(time.perf_counter() - started)
        metrics.REDIS_UP.set(1)
        failures = sum(1 for result in results if isinstance(result, StoreError))
        if failures:
            metrics.WRITE_ERRORS.inc(failures)
        return results
