"""A stream through a real worker with a fault in the middle, checked against the model.

``Flow`` seeds one snapshot per customer, sends shuffled streams (unique
versions, some duplicates, some invalidations: the final state does not depend
on delivery order, rule 6), watches the worker's own probes while a fault lasts,
and at the end waits for the queue to be empty (every message deleted, so every
write done) and then compares Redis with the contract model once. The
comparison does not depend on any earlier wait: ``lost`` is computed from that
one reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from tests.support.model import state_differences
from tests.support.servers import SqsServer, wait_until
from tests.support.snapshot import read_state
from tests.support.worker import (
    WorkerProcess,
    queue_depth,
    seed,
    send,
    stream,
)

if TYPE_CHECKING:
    import redis

CUSTOMERS = 6
INVALIDATIONS = 0.05
# Faults show quickly: a 1 s Redis timeout, readiness DOWN after 1 s of failures.
FAST = {"REDIS_TIMEOUT_SECS": "1", "NOT_READY_AFTER_SECS": "1"}


@dataclass
class Flow:
    """One worker, its queue and the messages sent to it."""

    sqs: SqsServer
    queue: str
    admin: redis.Redis  # the test's own connection, for the final reading
    prefix: str
    worker: WorkerProcess
    policy: CacheUpdatePolicy = CacheUpdatePolicy.UPSERT  # the worker's CACHE_UPDATE_POLICY
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, bodies: list[dict[str, Any]]) -> None:
        send(self.sqs, self.queue, bodies)
        self.sent += bodies

    def seed(self, customers: int = CUSTOMERS) -> None:
        """One snapshot per customer, applied before anything else is sent."""
        bodies = seed(customers)
        self.send(bodies)
        self.drained()

    def stream(self, count: int, seed_value: int, customers: int = CUSTOMERS) -> None:
        self.send(stream(customers, count, seed_value=seed_value, invalidations=INVALIDATIONS))

    def readyz(self) -> dict[str, Any]:
        return self.worker.readyz()

    def livez(self) -> httpx.Response:
        return self.worker.http.get("/livez")

    def down_for(self, reason: str, *, timeout: float = 40) -> dict[str, Any]:
        """Wait for /readyz DOWN with ``reason``; the worker is alive meanwhile."""

        def down() -> dict[str, Any] | None:
            body = self.readyz()
            return body if body["status"] == "DOWN" and body.get("reason") == reason else None

        found = wait_until(down, timeout=timeout, what=f"/readyz DOWN with reason {reason}")
        self.assert_alive()
        assert found is not None
        return found

    def up(self, *, timeout: float = 60) -> None:
        wait_until(
            lambda: self.readyz()["status"] == "UP",
            timeout=timeout,
            what=f"/readyz UP (last {self._last()})",
        )
        self.assert_alive()

    def assert_alive(self) -> None:
        assert self.worker.process is not None
        assert self.worker.process.poll() is None, self.worker.output()
        assert self.livez().status_code == 200, self.livez().text

    def drained(self, *, timeout: float = 90) -> None:
        """Wait until the queue holds nothing, visible or in flight."""
        wait_until(
            lambda: queue_depth(self.sqs, self.queue) == 0,
            timeout=timeout,
            what=f"queue drained\n{self.worker.output()[-3000:]}",
        )

    def check(self, *, timeout: float = 90) -> None:
        """Everything sent is applied: the queue is empty and Redis equals the model."""
        self.drained(timeout=timeout)
        actual = read_state(self.admin, KeyLayout(self.prefix))
        differ = state_differences(actual, self.sent, self.prefix, self.policy)
        lost = sorted(key for key, (_, got) in differ.items() if got is None)
        wrong = sorted(key for key, (want, got) in differ.items() if got is not None)
        assert not lost, f"{len(lost)} key(s) of the model lost: {lost[:10]}"
        assert not wrong, f"{len(wrong)} key(s) differ from the model: {wrong[:10]}"

    def _last(self) -> Any:
        try:
            return self.readyz()
        except httpx.HTTPError as exc:
            return exc
