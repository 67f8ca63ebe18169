"""What becomes of each received message (CONTRACT.md section 4), decided in one place.

The consumer fills a ``Delivery`` per SQS message (parsed model or the reason
it is poison, then the store's answer) and asks ``decide`` what to do with it:

========  =================================================================
DELETE    written, or correctly skipped (stale, policy): delete from the queue
PARK      poison and a DLQ is configured: send it there unchanged, then delete
LEAVE     poison without a DLQ (the queue's redrive policy takes it), or a
          write Redis refused (``StoreError``): not deleted, comes back after
          the visibility timeout
RETRY     not written because Redis was unreachable: made visible again soon
========  =================================================================

``record`` counts and logs the verdict: every line about a message carries its
``id``, ``type`` and ``customer``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from loguru import logger

from cache_pipeline import metrics
from cache_pipeline.dlq import Poison
from cache_pipeline.errors import InvalidMessage, StoreError
from cache_pipeline.messages import CacheInvalidated, Message
from cache_pipeline.store import Outcome

UNKNOWN = "unknown"


class Action(StrEnum):
    DELETE = "delete"
    PARK = "park"
    LEAVE = "leave"
    RETRY = "retry"


@dataclass(slots=True)
class Delivery:
    """One received SQS message on its way through the consumer."""

    receipt: str
    body: str
    sqs_id: str
    received_at: float  # time.perf_counter() at receipt
    sent_at: float | None = None  # SQS SentTimestamp (epoch seconds), when the receive has it
    message: Message | None = None
    invalid: InvalidMessage | None = None
    result: Outcome | StoreError | None = None

    def poison(self) -> Poison:
        assert self.invalid is not None
        return Poison(
            body=self.body,
            reason=self.invalid.reason.value,
            detail=self.invalid.detail,
            message_id=self.invalid.message_id,
            sqs_message_id=self.sqs_id,
        )

    def log_fields(self) -> dict[str, Any]:
        """``id``, ``type`` and ``customer`` of the message, as far as they are known."""
        if self.message is not None:
            return {
                "id": self.message.id,
                "type": self.message.type,
                "customer": customer_of(self.message),
            }
        message_id = self.invalid.message_id if self.invalid is not None else None
        return {"id": message_id or self.sqs_id, "type": UNKNOWN, "customer": None}


def customer_of(message: Message) -> str | None:
    """The customer a message is about (``*`` for a whole-environment invalidation)."""
    if isinstance(message, CacheInvalidated):
        if message.data.all:
            return "*"
        return ",".join(ref.customer_id for ref in message.data.customers)
    return message.data.customer_id


def decide(delivery: Delivery, *, has_dlq: bool) -> Action:
    """The verdict for one delivery once the write (if any) is done."""
    if delivery.invalid is not None:
        return Action.PARK if has_dlq else Action.LEAVE
    if delivery.result is None:
        return Action.RETRY
    if isinstance(delivery.result, StoreError):
        return Action.LEAVE
    return Action.DELETE


def record_applied(delivery: Delivery) -> None:
    """Count and log a message that was written or correctly skipped, now deleted."""
    message, result = delivery.message, delivery.result
    assert message is not None
    assert isinstance(result, Outcome)
    _processed(message.type).inc()
    if result in (Outcome.STALE, Outcome.POLICY):
        _skipped(message.type, result.value).inc()
    metrics.MESSAGE_HANDLING_DURATION.observe(time.perf_counter() - delivery.received_at)
    now = time.time()
    if delivery.sent_at is not None:
        _lag("sqs_sent").observe(max(0.0, now - delivery.sent_at))
    _lag("message").observe(max(0.0, now - message.timestamp / 1000))
    # Keyword arguments land in the record's extra fields, like bind(); no new logger per message.
    logger.debug("message applied: {}", result.value, **delivery.log_fields())


@cache
def _processed(kind: str) -> Any:
    """The processed counter of one message type (the labelled child, looked up once)."""
    return metrics.MESSAGES_PROCESSED.labels(kind)


@cache
def _lag(basis: str) -> Any:
    """The apply-lag histogram of one basis (clock skew is clamped to 0)."""
    return metrics.APPLY_LAG.labels(basis)


@cache
def _skipped(kind: str, reason: str) -> Any:
    return metrics.MESSAGES_SKIPPED.labels(kind, reason)


def record_poison(delivery: Delivery, destination: str) -> None:
    """Count and log a poison message parked in the DLQ or left for the redrive policy."""
    assert delivery.invalid is not None
    metrics.MESSAGES_FAILED.labels(delivery.invalid.reason.value).inc()
    metrics.MESSAGES_PARKED.labels(destination).inc()
    if destination == "dlq":
        metrics.MESSAGE_HANDLING_DURATION.observe(time.perf_counter() - delivery.received_at)
    logger.bind(**delivery.log_fields(), reason=delivery.invalid.reason.value).warning(
        "poison message parked ({}): {}", destination, delivery.invalid.detail
    )


def record_store_error(delivery: Delivery) -> None:
    """Count and log a write Redis refused; the message stays on the queue."""
    metrics.MESSAGES_FAILED.labels("store_error").inc()
    logger.bind(**delivery.log_fields(), reason="store_error").error(
        "Redis refused the write, message left on the queue: {}", delivery.result
    )


def record_transient(delivery: Delivery) -> None:
    """Count and log a message not written because Redis was unreachable."""
    metrics.MESSAGES_FAILED.labels("transient").inc()
    logger.bind(**delivery.log_fields()).debug("Redis unavailable, message returned to the queue")
