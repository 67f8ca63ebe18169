"""One received message on its way through the pipeline: an immutable record each step extends.

A step never changes a ``Delivery``: it hands the next step a new one
(``dataclasses.replace``) with what it learnt: the task call the body routes to,
the planned writes, why the message is poison, whether the flood gate held it
back, the store's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cache_pipeline.contract.messages import CacheInvalidated, Message
from cache_pipeline.contract.plan import Outcome, Planned
from cache_pipeline.errors import InvalidMessage, StoreError
from cache_pipeline.sqs.queue import Poison, Received

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Call:
    """One message routed to a task: the task's name, an id for the run, its arguments."""

    task: str
    task_id: str
    args: Any
    kwargs: dict[str, Any]
    message: Message | None = None  # the parsed contract message (not for a Celery message)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message and what the steps so far made of it."""

    received: Received
    received_at: float  # time.perf_counter() when the batch arrived
    call: Call | None = None
    planned: Planned | None = None
    invalid: InvalidMessage | None = None
    held: bool = False  # handed back unparked by the poison-flood gate
    result: Outcome | StoreError | None = None  # the store's answer; None: not written

    @property
    def message(self) -> Message | None:
        if self.planned is not None:
            return self.planned.message
        return self.call.message if self.call is not None else None

    @property
    def writable(self) -> bool:
        """Planned, and not held back: goes to the store."""
        return self.planned is not None and not self.held

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


Batch = tuple[Delivery, ...]


def customer_of(message: Message) -> str | None:
    """The customer a message is about (``*`` for a whole-environment invalidation)."""
    if isinstance(message, CacheInvalidated):
        if message.data.all:
            return "*"
        return ",".join(ref.customer_id for ref in message.data.customers)
    return message.data.customer_id
