"""Counting and logging what became of each message (the pipeline's verdicts).

Every line about a message carries its ``id``, ``type`` and ``customer``.
"""

from __future__ import annotations

import time
from functools import cache
from typing import Any

from loguru import logger

from cache_pipeline.contract.plan import Outcome
from cache_pipeline.ops import metrics
from cache_pipeline.tasks.delivery import Delivery


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
    sent_at = delivery.received.sent_at
    if sent_at is not None:
        _lag("sqs_sent").observe(max(0.0, now - sent_at))
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
    """Count and log a message not written because Redis could not take writes."""
    metrics.MESSAGES_FAILED.labels("transient").inc()
    logger.bind(**delivery.log_fields()).debug("Redis unavailable, message returned to the queue")


def record_held(delivery: Delivery) -> None:
    """Log an invalid message handed back unparked during a poison flood."""
    logger.bind(**delivery.log_fields()).debug("poison flood: invalid message left on the queue")


def record_dlq_refused(delivery: Delivery, why: str) -> None:
    """Count and log poison the dead-letter queue did not take; it stays for the redrive policy."""
    assert delivery.invalid is not None
    metrics.DLQ_REFUSED.inc()
    record_poison(delivery, "redrive")
    logger.bind(**delivery.log_fields(), reason=delivery.invalid.reason.value).error(
        "the dead-letter queue refused this poison message ({}); it stays on the queue for"
        " the redrive policy",
        why,
    )
