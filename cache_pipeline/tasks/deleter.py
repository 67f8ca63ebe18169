"""The deletes of a worker process, ten per call across its consumers; what each stop left.

``DeleteBatcher`` takes what the consumers settled (written, or parked in the
dead-letter queue) and deletes it from the queue in DeleteMessageBatch calls;
``Tally`` counts what became of each message once the worker is stopping, for
the shutdown line (``cache_pipeline.tasks.shutdown``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from loguru import logger
from redis.backoff import EqualJitterBackoff

from cache_pipeline.config import SQS_BATCH_LIMIT
from cache_pipeline.errors import QueueUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState, Reason
from cache_pipeline.ops.repeated import RepeatedWarning
from cache_pipeline.sqs.queue import QueueClient
from cache_pipeline.tasks.delivery import Delivery
from cache_pipeline.tasks.outcomes import record_applied, record_poison


class Settled(StrEnum):
    """How a message left a consumer's hands (what a ``Tally`` counts)."""

    DELETED = "deleted"  # the delete went through (written, or parked in the DLQ)
    DELETE_FAILED = "delete_failed"  # the delete call failed or was refused: back after the VT
    DELETE_UNSENT = "delete_unsent"  # still pending when the deleter was closed
    RELEASED = "released"  # handed back: visible again (at once while stopping)
    NOT_RELEASED = "not_released"  # the hand-back failed: back after the visibility timeout


class Tally:
    """What became of each message while the worker stops, by SQS message id (thread-safe).

    Nothing is kept until ``watch()`` (the stop calls it at SIGTERM); from then on
    each message's last ``Settled`` is kept, so a message handed back twice (two
    consumers received it in turn) counts once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, Settled] | None = None

    def watch(self) -> None:
        with self._lock:
            self._last = {}

    def add(self, how: Settled, message_ids: Iterable[str]) -> None:
        if self._last is None:
            return
        with self._lock:
            if self._last is not None:
                for message_id in message_ids:
                    self._last[message_id] = how

    def counts(self) -> Counter[Settled]:
        """Messages by their last ``Settled`` since ``watch()``."""
        with self._lock:
            return Counter((self._last or {}).values())


def queue_failed(
    operation: str,
    exc: QueueUnavailable,
    health: HealthState | None = None,
    reason: Reason | None = None,
) -> None:
    metrics.QUEUE_ERRORS.labels(operation, exc.fault.value).inc()
    if operation in ("receive", "delete"):
        metrics.RECEIVE_ERRORS.inc()
    if health is not None and reason is not None:
        health.failed(reason, str(exc))


DELETE_BACKOFF = EqualJitterBackoff(cap=10.0, base=0.5)
DELETE_FAILED = RepeatedWarning()  # the senders meet the same dead endpoint: one line a window


@dataclass(frozen=True, slots=True)
class Done:
    """A settled message waiting for its delete: applied, or parked in the DLQ."""

    delivery: Delivery
    parked: bool


class DeleteBatcher:
    """Sends the deletes of every consumer of a process, up to ten per call.

    At BATCH_SIZE=1 every receive hands over one message; deleting each one on its
    own would cost a request (and a round trip in a thread) per message. The
    consumers hand what they settled to one ``DeleteBatcher`` instead and go on
    receiving; its sender threads each take up to ten pending receipts and send
    them in one call. Nothing lingers: a sender that is free sends what is pending
    at once, so at low rates a message is deleted as soon as it was written, and at
    high rates the deletes queue up while the senders are busy and leave in full
    batches.

    A failed call counts, logs and marks readiness like any queue failure; its
    messages come back after their visibility timeout (their writes are done, so
    applying them again changes nothing). ``failures`` tells the consumers to back
    off while deletes keep failing. ``submit`` blocks while ``max_pending``
    receipts wait, so a slow queue slows receiving rather than piling up receipts.

    ``close`` sends what is pending within its timeout and drops the rest (counted
    ``Settled.DELETE_UNSENT`` in the ``tally``: those messages come back after their
    visibility timeout, already written); ``unconfirmed`` tells how many deletes
    are pending or in a call that has not answered.
    """

    def __init__(
        self,
        queue: QueueClient,
        health: HealthState,
        *,
        senders: int,
        max_pending: int = 1000,
        name: str = "deleter",
        tally: Tally | None = None,
    ) -> None:
        self.queue = queue
        self.health = health
        self.max_pending = max_pending
        self.tally = tally or Tally()
        self.failures = 0  # calls failed in a row
        self._pending: deque[Done] = deque()
        self._busy = 0
        self._sending = 0  # deletes in calls that have not answered yet
        self._closing = False
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._send_loop, name=f"{name}-{i}", daemon=True)
            for i in range(senders)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self,
        applied: list[Delivery],
        parked: list[Delivery],
        waiting: Callable[[], None] | None = None,
    ) -> None:
        """Queue the deletes of one settled batch.

        Waits while ``max_pending`` receipts are pending, calling ``waiting`` every
        half second meanwhile (a consumer beats its heartbeat: waiting for SQS is
        not a stall).
        """
        if not applied and not parked:
            return
        with self._cond:
            while len(self._pending) >= self.max_pending and not self._closing:
                if waiting is not None:
                    waiting()
                self._cond.wait(0.5)
            self._pending.extend(Done(d, parked=False) for d in applied)
            self._pending.extend(Done(d, parked=True) for d in parked)
            self._cond.notify_all()

    def open(self, beat: Callable[[], None]) -> bool:
        """A gate for the consumers: while deletes keep failing, wait a jittered backoff
        before the next receive (a closing deleter ends the wait)."""
        if self.failures:
            with self._cond:
                self._cond.wait(DELETE_BACKOFF.compute(self.failures))
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until nothing is pending or being sent; False if that took too long."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    @property
    def unconfirmed(self) -> int:
        """Deletes pending, or sent in a call that has not answered."""
        with self._cond:
            return len(self._pending) + self._sending

    @property
    def threads(self) -> list[threading.Thread]:
        """The sender threads."""
        return list(self._threads)

    def alive(self) -> int:
        """Sender threads still running."""
        return sum(1 for thread in self._threads if thread.is_alive())

    def close(self, timeout: float = 30.0) -> None:
        """Send what is pending, then stop the senders; after ``timeout`` seconds drop the rest.

        A sender still waiting for an answer then is left to it (closing the queue's
        connections wakes it).
        """
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            dropped = list(self._pending)
            self._pending.clear()
        self.tally.add(Settled.DELETE_UNSENT, _ids(dropped))

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                size = min(SQS_BATCH_LIMIT, len(self._pending))
                chunk = [self._pending.popleft() for _ in range(size)]
                self._busy += 1
                self._sending += size
                self._cond.notify_all()
            try:
                self._send(chunk)
            except Exception:  # a bug here must not end deleting: the messages come back
                self.tally.add(Settled.DELETE_FAILED, _ids(chunk))
                logger.exception("deleting {} message(s) failed, they will come back", len(chunk))
            finally:
                with self._cond:
                    self._busy -= 1
                    self._sending -= size
                    self._cond.notify_all()

    def _send(self, chunk: list[Done]) -> None:
        try:
            refused = set(self.queue.delete([done.delivery.received.receipt for done in chunk]))
        except QueueUnavailable as exc:
            self.failures += 1
            self.tally.add(Settled.DELETE_FAILED, _ids(chunk))
            queue_failed("delete", exc, self.health, Reason.QUEUE_DELETES_FAILING)
            DELETE_FAILED.warning(
                exc.fault.value,
                "deleting {} message(s) failed ({}), they will come back: {}",
                len(chunk),
                exc.fault.value,
                exc.detail,
            )
            return
        self.failures = 0
        self.health.succeeded(Reason.QUEUE_DELETES_FAILING)
        if refused:
            metrics.RECEIVE_ERRORS.inc()
        for done in chunk:
            received = done.delivery.received
            deleted = received.receipt not in refused
            self.tally.add(
                Settled.DELETED if deleted else Settled.DELETE_FAILED, (received.message_id,)
            )
            if not deleted:
                continue
            if done.parked:
                record_poison(done.delivery, "dlq")
            else:
                record_applied(done.delivery)


def _ids(done: Iterable[Done]) -> list[str]:
    return [item.delivery.received.message_id for item in done]
