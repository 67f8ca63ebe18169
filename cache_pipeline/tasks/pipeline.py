"""One received batch, from bodies to verdicts: the pipeline's algorithm as plain functions.

Routing: a Celery message (``cache_pipeline.contract.envelope``) names its task and
carries its arguments as sent; any other body is a contract message, parsed
once and routed by its ``type`` to the task of that type, whose only argument
is the parsed message. Each task turns its message into ``Planned`` writes.

The consumer runs it around its two kinds of I/O::

    received = queue.receive(...)                          # I/O
    deliveries = prepare(received, parse=..., run=...)     # parse, route, plan: per message
    results = store.apply_planned(planned(deliveries))     # I/O: one Redis round trip
    record_results(deliveries, results)                    # or nothing: Redis unavailable
    settlement = settle(deliveries, has_dlq=...)           # delete, park, leave, release
    queue.delete(...); queue.park(...); queue.release(...)  # I/O

Nothing here does I/O, logs or counts (``cache_pipeline.tasks.outcomes`` does): every
function can be tested with plain data. One message never fails its batch:
whatever handling one message raises makes that message poison
(``unprocessable`` with the exception's type) and nothing else.

========  =================================================================
DELETE    written, or correctly skipped (stale, policy): delete from the queue
PARK      poison and a DLQ is configured: send it there unchanged, then delete
LEAVE     poison without a DLQ (the queue's redrive policy takes it), or a
          write Redis refused (``StoreError``): not deleted, comes back after
          the visibility timeout
RELEASE   not written because Redis could not take writes, or held back by the
          poison-flood guard: made visible again soon
========  =================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cache_pipeline.contract.envelope import task_call
from cache_pipeline.contract.messages import CacheInvalidated, Message
from cache_pipeline.contract.plan import BatchResult, Outcome, Planned
from cache_pipeline.errors import InvalidMessage, StoreError, unprocessable
from cache_pipeline.sqs.queue import Poison, Received

UNKNOWN = "unknown"


# The four per-type tasks, by the message type they take (tasks/handlers.py registers them).
TASK_NAMES = {
    "entitlements.updated": "cache_pipeline.entitlements_updated",
    "usage.updated": "cache_pipeline.usage_updated",
    "credits.updated": "cache_pipeline.credits_updated",
    "cache.invalidated": "cache_pipeline.cache_invalidated",
}

Parse = Callable[[str], Message]


@dataclass(frozen=True, slots=True)
class Call:
    """One message routed to a task: the task's name, an id for the run, its arguments."""

    task: str
    task_id: str
    args: Any
    kwargs: dict[str, Any]
    message: Message | None = None  # the parsed contract message (not for a Celery message)


def route(received: Received, parse: Parse) -> Call:
    """The call that handles ``received``.

    Raises ``InvalidMessage`` (from ``parse`` or ``task_call``) for a body that is
    neither a readable Celery message nor a valid contract message.
    """
    celery = task_call(received.body)
    if celery is not None:
        task_id = celery.task_id or received.message_id
        return Call(celery.task, task_id, celery.args, celery.kwargs)
    message = parse(received.body)
    return Call(TASK_NAMES[message.type], received.message_id, (message,), {}, message)


Run = Callable[[Call], Planned]  # runs the call's task: the message's planned writes


class Action(StrEnum):
    DELETE = "delete"
    PARK = "park"
    LEAVE = "leave"
    RELEASE = "release"


@dataclass(slots=True)
class Delivery:
    """One received message on its way through the batch."""

    received: Received
    received_at: float  # time.perf_counter() when the batch arrived
    call: Call | None = None
    planned: Planned | None = None
    invalid: InvalidMessage | None = None
    held: bool = False  # handed back unparked by the poison-flood guard
    result: Outcome | StoreError | None = None

    @property
    def message(self) -> Message | None:
        if self.planned is not None:
            return self.planned.message
        return self.call.message if self.call is not None else None

    def poison(self) -> Poison:
        assert self.invalid is not None
        return Poison(
            body=self.received.body,
            reason=self.invalid.reason.value,
            detail=self.invalid.detail,
            message_id=self.invalid.message_id,
            sqs_message_id=self.received.message_id,
        )

    def log_fields(self) -> dict[str, Any]:
        """``id``, ``type`` and ``customer`` of the message, as far as they are known."""
        message = self.message
        if message is not None:
            return {"id": message.id, "type": message.type, "customer": customer_of(message)}
        message_id = self.invalid.message_id if self.invalid is not None else None
        return {"id": message_id or self.received.message_id, "type": UNKNOWN, "customer": None}


def customer_of(message: Message) -> str | None:
    """The customer a message is about (``*`` for a whole-environment invalidation)."""
    if isinstance(message, CacheInvalidated):
        if message.data.all:
            return "*"
        return ",".join(ref.customer_id for ref in message.data.customers)
    return message.data.customer_id


def prepare(
    batch: Sequence[Received], *, parse: Parse, run: Run, received_at: float
) -> list[Delivery]:
    """Each message routed to its task and planned, or the reason it is poison."""
    return [
        prepare_one(received, parse=parse, run=run, received_at=received_at) for received in batch
    ]


def prepare_one(received: Received, *, parse: Parse, run: Run, received_at: float) -> Delivery:
    """One message's planned writes; any exception makes it poison, never the batch's."""
    delivery = Delivery(received, received_at)
    try:
        delivery.call = route(received, parse)
        planned = run(delivery.call)
        if not isinstance(planned, Planned):
            raise TypeError(f"task {delivery.call.task} returned {type(planned).__name__}")
        delivery.planned = planned
    except InvalidMessage as exc:
        delivery.invalid = exc
    except Exception as exc:  # one message never fails its batch
        message = delivery.message
        delivery.invalid = unprocessable(exc, message.id if message is not None else None)
    return delivery


def to_write(deliveries: Sequence[Delivery]) -> list[Planned]:
    """The planned writes of the batch, in order (held and poison messages excluded)."""
    return [d.planned for d in deliveries if d.planned is not None and not d.held]


def record_results(deliveries: Sequence[Delivery], results: BatchResult) -> None:
    """Give each written delivery the store's answer (``results`` follows ``to_write``)."""
    written = [d for d in deliveries if d.planned is not None and not d.held]
    for delivery, result in zip(written, results, strict=True):
        delivery.result = result


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


@dataclass(slots=True)
class Settlement:
    """The batch split by verdict, each list in batch order."""

    delete: list[Delivery] = field(default_factory=list)
    park: list[Delivery] = field(default_factory=list)
    leave: list[Delivery] = field(default_factory=list)
    release: list[Delivery] = field(default_factory=list)


def settle(deliveries: Sequence[Delivery], *, has_dlq: bool) -> Settlement:
    """What to do with every message of the batch."""
    settlement = Settlement()
    lists = {
        Action.DELETE: settlement.delete,
        Action.PARK: settlement.park,
        Action.LEAVE: settlement.leave,
        Action.RELEASE: settlement.release,
    }
    for delivery in deliveries:
        lists[decide(delivery, has_dlq=has_dlq)].append(delivery)
    return settlement
