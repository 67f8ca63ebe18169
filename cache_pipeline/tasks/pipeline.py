"""One batch, receive to delete: the worker's pipeline as one chain of small steps.

``build_pipeline`` reads top to bottom::

    Receive       one long poll of the queue, up to BATCH_SIZE messages      (I/O)
    decode        body → the call of its task: a Celery message names it, a
                  contract message is parsed and routed by ``type`` (the one
                  table, ``TASK_NAMES``), or why it is poison                 (pure)
    run_tasks     Celery runs each message's task (its tracer, signals):
                  the message's planned writes                               (pure)
    hold_floods   the poison-flood gate counts each message; once tripped,
                  invalid ones go back to the queue unparked
    Write         every planned write of the batch in one Redis round trip   (I/O)
    Settle        delete (by the process's DeleteBatcher), park, leave or
                  release each message, by the table below                   (I/O)

Each step takes the batch (a tuple of immutable ``Delivery`` records) and hands
a new one to the next. One message never fails its batch: whatever handling one
message raises makes that message poison (``unprocessable`` with the exception's
type) and nothing else.

========  =================================================================
DELETE    written, or correctly skipped (stale, policy): delete from the queue
PARK      poison and a DLQ is configured: send it there unchanged, then delete
LEAVE     poison without a DLQ (the queue's redrive policy takes it), or a
          write Redis refused (``StoreError``): not deleted, comes back after
          the visibility timeout
RELEASE   not written because Redis could not take writes, or held back by the
          poison-flood gate: made visible again soon (at once while stopping)
========  =================================================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TypeVar

from loguru import logger
from redis.backoff import EqualJitterBackoff

from cache_pipeline.contract.messages import Message, TaskCall
from cache_pipeline.contract.plan import Outcome, Planned
from cache_pipeline.errors import (
    InvalidMessage,
    QueueUnavailable,
    StoreError,
    StoreUnavailable,
    unprocessable,
)
from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState, Reason
from cache_pipeline.ops.repeated import RepeatedWarning
from cache_pipeline.sqs.queue import QueueClient, Received
from cache_pipeline.store.writer import Store
from cache_pipeline.tasks.deleter import DeleteBatcher, Settled, Tally, queue_failed
from cache_pipeline.tasks.delivery import Batch, Call, Delivery
from cache_pipeline.tasks.gates import Gates
from cache_pipeline.tasks.outcomes import (
    record_dlq_refused,
    record_held,
    record_poison,
    record_store_error,
    record_transient,
)

# The four per-type tasks, by the message type they take (tasks/handlers.py registers them).
TASK_NAMES = {
    "entitlements.updated": "cache_pipeline.entitlements_updated",
    "usage.updated": "cache_pipeline.usage_updated",
    "credits.updated": "cache_pipeline.credits_updated",
    "cache.invalidated": "cache_pipeline.cache_invalidated",
}
RETRY_VISIBILITY_SECONDS = 2  # a batch Redis could not take is visible again this soon
LONG_POLL_SECONDS = 5  # receive wait; also bounds how long a shutdown waits for a receive
QUEUE_BACKOFF = EqualJitterBackoff(cap=10.0, base=0.5)
# Every consumer meets the same dead endpoint: one line per window, with a count.
RECEIVE_FAILED = RepeatedWarning()
REDIS_UNAVAILABLE = RepeatedWarning()

T = TypeVar("T")
Decode = Callable[[str], Message | TaskCall]  # contract.messages.Decoder
Run = Callable[[Call], Planned]  # runs the call's task: the message's planned writes
Step = Callable[[Batch], Batch]


class Action(StrEnum):
    DELETE = "delete"
    PARK = "park"
    LEAVE = "leave"
    RELEASE = "release"


@dataclass
class Pipeline:
    """The chain: a source of batches, then the steps each batch goes through in order."""

    receive: Receive
    steps: tuple[Step, ...]

    @property
    def holding(self) -> int:
        """Messages received and not yet settled (the shutdown line counts them)."""
        return self.receive.holding

    def turn(self) -> None:
        """One batch through every step (nothing when the receive brought none)."""
        batch = self.receive()
        if not batch:
            return
        try:
            for step in self.steps:
                batch = step(batch)
        finally:
            self.receive.holding = 0


def build_pipeline(
    receive: Receive, reader: Decode, run: Run, gates: Gates, store: Store, settle: Settle
) -> Pipeline:
    """The worker's pipeline, in the order a batch goes through it."""
    return Pipeline(
        receive,
        (decode(reader), run_tasks(run), hold_floods(gates), Write(store, gates), settle),
    )


# Receive (I/O)


@dataclass
class Receive:
    """One long poll of the queue; a batch that arrives once stopping goes back at once."""

    queue: QueueClient
    batch_size: int
    health: HealthState
    stopping: threading.Event
    give_back: GiveBack
    wait_seconds: int = LONG_POLL_SECONDS
    holding: int = 0
    failures: int = 0

    def __call__(self) -> Batch:
        if self.stopping.is_set():
            return ()
        try:
            received = self.queue.receive(self.batch_size, self.wait_seconds)
        except QueueUnavailable as exc:
            self._failed(exc)
            return ()
        self.failures = 0
        self.health.succeeded(Reason.QUEUE_RECEIVES_FAILING)
        self.holding = len(received)
        if received and self.stopping.is_set():  # arrived after SIGTERM: back unwritten
            logger.debug("stopping: {} message(s) received meanwhile go back", len(received))
            self.give_back(received)
            self.holding = 0
            return ()
        started = time.perf_counter()
        return tuple(Delivery(message, started) for message in received)

    def _failed(self, exc: QueueUnavailable) -> None:
        self.failures += 1
        queue_failed("receive", exc, self.health, Reason.QUEUE_RECEIVES_FAILING)
        RECEIVE_FAILED.warning(
            exc.fault.value, "receiving from the queue failed ({}): {}", exc.fault.value, exc.detail
        )
        self.stopping.wait(QUEUE_BACKOFF.compute(self.failures))


# decode, run_tasks, hold_floods (no I/O)


def decode(reader: Decode) -> Step:
    """Each body routed to the call of its task, or why it is poison."""

    def step(batch: Batch) -> Batch:
        return tuple(_isolated(delivery, _routed, reader) for delivery in batch)

    return step


def _routed(delivery: Delivery, reader: Decode) -> Delivery:
    received = delivery.received
    decoded = reader(received.body)
    if isinstance(decoded, TaskCall):  # a Celery message names its task
        task_id = decoded.task_id or received.message_id
        return replace(delivery, call=Call(decoded.task, task_id, decoded.args, decoded.kwargs))
    call = Call(TASK_NAMES[decoded.type], received.message_id, (decoded,), {}, decoded)
    return replace(delivery, call=call)


def run_tasks(run: Run) -> Step:
    """Each routed message's task run: its planned writes, or why it is poison."""

    def step(batch: Batch) -> Batch:
        return tuple(
            _isolated(delivery, _ran, run) if delivery.call is not None else delivery
            for delivery in batch
        )

    return step


def _ran(delivery: Delivery, run: Run) -> Delivery:
    assert delivery.call is not None
    planned = run(delivery.call)
    if not isinstance(planned, Planned):
        raise TypeError(f"task {delivery.call.task} returned {type(planned).__name__}")
    return replace(delivery, planned=planned)


def _isolated(delivery: Delivery, step: Callable[[Delivery, T], Delivery], arg: T) -> Delivery:
    """``step`` of one message; what it raises makes that message poison, never the batch."""
    if delivery.invalid is not None:
        return delivery
    try:
        return step(delivery, arg)
    except InvalidMessage as exc:
        return replace(delivery, invalid=exc)
    except Exception as exc:  # one message never fails its batch
        message = delivery.message
        return replace(delivery, invalid=unprocessable(exc, message.id if message else None))


def hold_floods(gates: Gates) -> Step:
    """Count each message in the flood window; hold invalid ones back once it trips."""

    def step(batch: Batch) -> Batch:
        return tuple(
            delivery
            if gates.flood.admit(invalid=delivery.invalid is not None)
            else replace(delivery, held=True)
            for delivery in batch
        )

    return step


# Write (I/O)


@dataclass
class Write:
    """Every planned write of the batch in one Redis round trip."""

    store: Store
    gates: Gates

    def __call__(self, batch: Batch) -> Batch:
        planned = [d.planned for d in batch if d.writable and d.planned is not None]
        if not planned:
            return batch
        started = time.perf_counter()
        try:
            results = self.store.apply_planned(planned)
        except StoreUnavailable as exc:
            return self._unavailable(batch, exc, len(planned))
        metrics.WRITE_DURATION.observe(time.perf_counter() - started)
        metrics.REDIS_UP.set(1)
        self.gates.redis.succeeded()
        answered = with_answers(batch, results)
        refused = sum(1 for d in answered if isinstance(d.result, StoreError))
        if refused:
            metrics.WRITE_ERRORS.inc(refused)
        return answered

    def _unavailable(self, batch: Batch, exc: StoreUnavailable, count: int) -> Batch:
        metrics.WRITE_ERRORS.inc()
        metrics.REDIS_UP.set(0)
        self.gates.redis.failed(exc)
        self.gates.schema.recheck_soon()  # Redis may come back empty
        REDIS_UNAVAILABLE.warning(
            "write", "Redis unavailable, {} message(s) go back to the queue: {}", count, exc
        )
        return batch


def with_answers(batch: Batch, results: Sequence[Outcome | StoreError]) -> Batch:
    """Each written delivery with the store's answer (``results`` follows the writable ones)."""
    answers = iter(results)
    return tuple(replace(d, result=next(answers)) if d.writable else d for d in batch)


# Settle (I/O)


def decide(delivery: Delivery, *, has_dlq: bool) -> Action:
    """The verdict for one delivery once the write (if any) is done."""
    if delivery.held:
        return Action.RELEASE
    if delivery.invalid is not None:
        return Action.PARK if has_dlq else Action.LEAVE
    if delivery.result is None:
        return Action.RELEASE
    if isinstance(delivery.result, StoreError):
        return Action.LEAVE
    return Action.DELETE


def verdicts(batch: Batch, *, has_dlq: bool) -> dict[Action, list[Delivery]]:
    """The batch split by verdict, each list in batch order."""
    split: dict[Action, list[Delivery]] = {action: [] for action in Action}
    for delivery in batch:
        split[decide(delivery, has_dlq=has_dlq)].append(delivery)
    return split


@dataclass
class GiveBack:
    """Makes messages visible again after ``after`` seconds, or at once while stopping."""

    queue: QueueClient
    stopping: threading.Event
    tally: Tally
    after: int = RETRY_VISIBILITY_SECONDS

    def __call__(self, received: list[Received]) -> None:
        after = 0 if self.stopping.is_set() else self.after
        try:
            refused = set(self.queue.release([r.receipt for r in received], after))
        except QueueUnavailable as exc:
            queue_failed("release", exc)
            self.tally.add(Settled.NOT_RELEASED, (r.message_id for r in received))
            logger.warning(
                "could not hand {} message(s) back early, they come back after the visibility"
                " timeout: {}",
                len(received),
                exc,
            )
            return
        for message in received:
            how = Settled.NOT_RELEASED if message.receipt in refused else Settled.RELEASED
            self.tally.add(how, (message.message_id,))


@dataclass
class Settle:
    """Deletes what was applied (the written first), parks poison, leaves or releases the rest."""

    queue: QueueClient
    deleter: DeleteBatcher
    give_back: GiveBack
    beat: Callable[[], None]

    def __call__(self, batch: Batch) -> Batch:
        split = verdicts(batch, has_dlq=self.queue.has_dead_letter)
        # What was written is handed over first: a slow dead-letter queue never holds it back.
        self.deleter.submit(split[Action.DELETE], [], waiting=self.beat)
        self.deleter.submit([], self._park(split[Action.PARK]), waiting=self.beat)
        for delivery in split[Action.LEAVE]:
            if delivery.invalid is not None:
                record_poison(delivery, "redrive")
            else:
                record_store_error(delivery)
        self._release(split[Action.RELEASE])
        return batch

    def _park(self, poison: list[Delivery]) -> list[Delivery]:
        """Send poison to the DLQ; the ones it took (the others are logged and counted)."""
        if not poison:
            return []
        try:
            refusals = self.queue.park([delivery.poison() for delivery in poison])
        except QueueUnavailable as exc:
            queue_failed("park", exc)
            refusals = [str(exc)] * len(poison)
        parked = []
        for delivery, why in zip(poison, refusals, strict=True):
            if why is None:
                parked.append(delivery)
            else:
                record_dlq_refused(delivery, why)
        return parked

    def _release(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        for delivery in deliveries:
            (record_held if delivery.held else record_transient)(delivery)
        self.give_back([d.received for d in deliveries])
