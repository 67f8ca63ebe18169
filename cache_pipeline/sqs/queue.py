"""The queue as the pipeline sees it: received messages and four operations.

``QueueClient`` is all the consumer needs from a queue: receive a batch, delete
what was applied, release what must come back soon, park poison in the
dead-letter queue. ``cache_pipeline.sqs.client`` implements it on SQS; the test
suite has an in-memory one, and one contract suite runs against both.

Every operation raises ``QueueUnavailable`` (with its ``QueueFault``) when the
call itself fails; nothing it was asked to do is then known to be done, and an
undeleted message comes back by itself after its visibility timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the queue handed it over."""

    receipt: str  # what delete and release name it by (SQS ReceiptHandle)
    body: str
    message_id: str  # the queue's own id (SQS MessageId)
    sent_at: float | None = None  # epoch seconds the queue accepted it (SQS SentTimestamp)
    receive_count: int = 1


@dataclass(frozen=True, slots=True)
class Poison:
    """A message that can never be applied, and why (what ``park`` sends to the DLQ)."""

    body: str
    reason: str
    detail: str
    message_id: str | None  # the contract id, when the body had one
    sqs_message_id: str


class QueueClient(Protocol):
    """What the consumer does with its queue."""

    @property
    def has_dead_letter(self) -> bool:
        """True when ``park`` has a dead-letter queue to send to."""
        ...

    def receive(self, max_messages: int, wait_seconds: int) -> list[Received]:
        """Up to ``max_messages`` messages, waiting at most ``wait_seconds`` for the first."""
        ...

    def delete(self, receipts: Sequence[str]) -> list[str]:
        """Delete received messages; return the receipts the queue did not delete."""
        ...

    def release(self, receipts: Sequence[str], after_seconds: int) -> list[str]:
        """Make received messages visible again after ``after_seconds``; return those refused."""
        ...

    def park(self, poison: Sequence[Poison]) -> list[str | None]:
        """Send poison to the dead-letter queue, body unchanged.

        One entry per message: None when the DLQ took it, else why it did not.
        """
        ...

    def close(self) -> None:
        """Let go of connections."""
        ...
