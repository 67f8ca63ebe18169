"""The raw-queue consumer: the I/O around ``cache_pipeline.tasks.pipeline``, in one thread.

Each turn of a ``QueueConsumer``'s loop:

1. one receive from its ``QueueClient`` (long poll, up to BATCH_SIZE messages);
2. ``batch.prepare``: every message routed to its Celery task, which the
   ``cache_pipeline.tasks.handlers.TaskRunner`` runs: its planned writes, or why it is poison;
3. one ``Store.apply_planned``: every planned write in one Redis round trip;
4. ``batch.settle``: park poison (DLQ), hand what was applied or parked to
   the process's ``DeleteBatcher`` (below) (DeleteMessageBatch, ten at a
   time across consumers, sent while this consumer is already receiving
   again), leave what must wait for the redrive policy, release what must come
   back soon.

When Redis cannot take writes the batch goes back (visible again after
RETRY_VISIBILITY_SECONDS) and the consumer waits on the ``RedisGate`` until a
probe write succeeds. A failed receive or delete backs off with jitter. Every
turn beats the consumer's heartbeat (/livez); failures open failure runs in the
health state (/readyz). Nothing a message or a dependency does ends the loop.

Once ``stopping`` is set (SIGTERM) a consumer receives no more: the turn it is
in ends, a batch that arrives after it is handed back unwritten, and what Redis
could not take is made visible again at once (``cache_pipeline.tasks.shutdown`` bounds the
whole stop). Every consumer and the deleter count what they settle in one
``Tally``, from which the shutdown line tells what a stop left behind.
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
from cache_pipeline.errors import QueueUnavailable, StoreError, StoreUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState, Reason
from cache_pipeline.sqs.queue import QueueClient, Received
from cache_pipeline.store.writer import Store
from cache_pipeline.tasks.backoff import RedisGate
from cache_pipeline.tasks.flood import FloodBrake
from cache_pipeline.tasks.outcomes import (
    record_applied,
    record_dlq_refused,
    record_held,
    record_poison,
    record_store_error,
    record_transient,
)
from cache_pipeline.tasks.pipeline import (
    Delivery,
    Parse,
    Run,
    prepare,
    record_results,
    settle,
    to_write,
)
from cache_pipeline.tasks.schema_watch import SchemaWatch

RETRY_VISIBILITY_SECONDS = 2  # a batch Redis could not take is visible again this soon
LONG_POLL_SECONDS = 5  # receive wait; also bounds how long a shutdown waits for a receive
HALT_POLL = 1.0  # seconds between looks while consumption is halted
TURN_ERROR_PAUSE = 1.0  # after an unexpected error in a turn: no hot loop
QUEUE_BACKOFF = EqualJitterBackoff(cap=10.0, base=0.5)


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


class QueueConsumer:
    """Consumes one queue in the calling thread until ``stopping`` is set."""

    def __init__(
        self,
        *,
        name: str,
        queue: QueueClient,
        store: Store,
        parse: Parse,
        run: Run,
        gate: RedisGate,
        health: HealthState,
        stopping: threading.Event,
        deleter: DeleteBatcher,
        batch_size: int,
        schema: SchemaWatch | None = None,
        flood: FloodBrake | None = None,
        retry_visibility: int = RETRY_VISIBILITY_SECONDS,
        wait_seconds: int = LONG_POLL_SECONDS,
        tally: Tally | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.store = store
        self.parse = parse
        self.run_task = run
        self.gate = gate
        self.health = health
        self.stopping = stopping
        self.deleter = deleter
        self.batch_size = batch_size
        self.schema = schema
        self.flood = flood
        self.retry_visibility = retry_visibility
        self.wait_seconds = wait_seconds
        self.tally = tally or Tally()
        self.holding = 0  # messages received and not yet settled
        self._receive_failures = 0

    def run(self) -> None:
        """Receive and settle batches until asked to stop; never raises."""
        while not self.stopping.is_set():
            self.beat()
            try:
                self._turn()
            except Exception:  # a bug must not end consumption: the batch comes back
                metrics.RECEIVE_ERRORS.inc()
                logger.exception("a turn of the queue consumer failed; its messages come back")
                self.stopping.wait(TURN_ERROR_PAUSE)

    def beat(self) -> None:
        self.health.beat(self.name)

    def _turn(self) -> None:
        if not self._may_consume():
            self.stopping.wait(HALT_POLL)
            return
        if self.deleter.failures:
            self.stopping.wait(QUEUE_BACKOFF.compute(self.deleter.failures))
        if self.stopping.is_set():
            return
        batch = self._receive()
        if not batch:
            return
        self.holding = len(batch)
        try:
            if self.stopping.is_set():  # arrived after SIGTERM: back unwritten, at once
                self._hand_back(batch)
            else:
                self._handle(batch)
        finally:
            self.holding = 0

    def _may_consume(self) -> bool:
        """False during a poison flood, or while the schema marker forbids writing."""
        if self.flood is not None and self.flood.halted():
            return False
        return self.schema is None or self.schema.allows_writes()

    def _receive(self) -> list[Received]:
        try:
            batch = self.queue.receive(self.batch_size, self.wait_seconds)
        except QueueUnavailable as exc:
            self._receive_failures += 1
            _queue_failed("receive", exc, self.health, Reason.QUEUE_RECEIVES_FAILING)
            logger.warning("receiving from the queue failed ({}): {}", exc.fault.value, exc.detail)
            self.stopping.wait(QUEUE_BACKOFF.compute(self._receive_failures))
            return []
        self._receive_failures = 0
        self.health.succeeded(Reason.QUEUE_RECEIVES_FAILING)
        return batch

    def _handle(self, batch: list[Received]) -> None:
        deliveries = prepare(
            batch, parse=self.parse, run=self.run_task, received_at=time.perf_counter()
        )
        self._admit(deliveries)
        written = self._write(deliveries)
        settlement = settle(deliveries, has_dlq=self.queue.has_dead_letter)
        # What was written is handed over first: a slow dead-letter queue never holds it back.
        self.deleter.submit(settlement.delete, [], waiting=self.beat)
        parked = self._park(settlement.park)
        self.deleter.submit([], parked, waiting=self.beat)
        self._leave(settlement.leave)
        self._release(settlement.release)
        if not written:
            self.gate.wait(self.beat)
            if self.schema is not None:
                self.schema.recheck_soon()  # Redis may be back empty

    def _admit(self, deliveries: list[Delivery]) -> None:
        """Count each message in the flood window; hold invalid ones back once it trips."""
        if self.flood is None:
            return
        for delivery in deliveries:
            if not self.flood.admit(invalid=delivery.invalid is not None):
                delivery.held = True

    def _write(self, deliveries: list[Delivery]) -> bool:
        """Apply the planned writes in one round trip; False when Redis could not take them."""
        planned = to_write(deliveries)
        if not planned:
            return True
        started = time.perf_counter()
        try:
            results = self.store.apply_planned(planned)
        except StoreUnavailable as exc:
            metrics.WRITE_ERRORS.inc()
            metrics.REDIS_UP.set(0)
            self.gate.failed(exc)
            logger.warning(
                "Redis unavailable, {} message(s) go back to the queue: {}", len(planned), exc
            )
            return False
        metrics.WRITE_DURATION.observe(time.perf_counter() - started)
        metrics.REDIS_UP.set(1)
        self.gate.succeeded()
        refused = sum(1 for result in results if isinstance(result, StoreError))
        if refused:
            metrics.WRITE_ERRORS.inc(refused)
        record_results(deliveries, results)
        return True

    def _park(self, poison: list[Delivery]) -> list[Delivery]:
        """Send poison to the DLQ; return the ones it took (the others are logged and counted)."""
        if not poison:
            return []
        try:
            refusals = self.queue.park([delivery.poison() for delivery in poison])
        except QueueUnavailable as exc:
            _queue_failed("park", exc)
            for delivery in poison:
                record_dlq_refused(delivery, str(exc))
            return []
        parked = []
        for delivery, why in zip(poison, refusals, strict=True):
            if why is None:
                parked.append(delivery)
            else:
                record_dlq_refused(delivery, why)
        return parked

    def _leave(self, left: list[Delivery]) -> None:
        """Poison without a DLQ, and writes Redis refused: back after the visibility timeout."""
        for delivery in left:
            if delivery.invalid is not None:
                record_poison(delivery, "redrive")
            else:
                record_store_error(delivery)

    def _release(self, deliveries: list[Delivery]) -> None:
        """Make messages visible again soon: not written (Redis), or held (poison flood)."""
        if not deliveries:
            return
        for delivery in deliveries:
            if delivery.held:
                record_held(delivery)
            else:
                record_transient(delivery)
        self._give_back([d.received for d in deliveries])

    def _hand_back(self, batch: list[Received]) -> None:
        """A batch received once stopping: not written, visible again at once."""
        logger.debug("stopping: {} message(s) received meanwhile go back unwritten", len(batch))
        self._give_back(batch)

    def _give_back(self, batch: list[Received]) -> None:
        """Visible again after RETRY_VISIBILITY_SECONDS, or at once while stopping."""
        after = 0 if self.stopping.is_set() else self.retry_visibility
        try:
            refused = set(self.queue.release([r.receipt for r in batch], after))
        except QueueUnavailable as exc:
            _queue_failed("release", exc)
            self.tally.add(Settled.NOT_RELEASED, (r.message_id for r in batch))
            logger.warning(
                "could not hand {} message(s) back early, they come back after the visibility"
                " timeout: {}",
                len(batch),
                exc,
            )
            return
        for received in batch:
            how = Settled.NOT_RELEASED if received.receipt in refused else Settled.RELEASED
            self.tally.add(how, (received.message_id,))


def _queue_failed(
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
            _queue_failed("delete", exc, self.health, Reason.QUEUE_DELETES_FAILING)
            logger.warning(
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
