"""The queue as the pipeline sees it: received messages and what is done with them.

``QueueClient`` is all the consumer needs from a queue: receive a batch, delete
what was applied, release what must come back soon, park poison in the
dead-letter queue. ``Queue`` adds what the operator's commands and the
development tools do: send messages, look at the dead-letter queue without
taking anything out of it (peek), move it back, wholly or by reason (redrive),
and read the approximate depth. ``cache_pipeline.sqs.client`` implements both on
SQS; the test suite has an in-memory one, and one contract suite runs against both.

Every operation raises ``QueueUnavailable`` (with its ``QueueFault``) when the
call itself fails; nothing it was asked to do is then known to be done, and an
undeleted message comes back by itself after its visibility timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """How many messages a queue holds, as it reports them (approximately)."""

    visible: int  # waiting to be received (ApproximateNumberOfMessages)
    in_flight: int  # received, neither deleted nor visible again (...NotVisible)
    delayed: int  # sent with a delay that has not passed yet (...Delayed)

    @property
    def total(self) -> int:
        """Every message the queue holds, whatever its state."""
        return self.visible + self.in_flight + self.delayed

    @property
    def described(self) -> str:
        """``3 visible, 1 in flight, 0 delayed``: how the CLI shows it."""
        return f"{self.visible} visible, {self.in_flight} in flight, {self.delayed} delayed"


@dataclass(frozen=True, slots=True)
class Parked:
    """A message of the dead-letter queue as a listing shows it; it stays in the queue."""

    message_id: str  # the queue's own id (SQS MessageId)
    body: str
    reason: str | None  # why it was parked (the ``reason`` attribute), None when not said
    detail: str | None
    contract_id: str | None  # the contract id the body carried (the ``messageId`` attribute)
    sent_at: float | None  # epoch seconds it entered the dead-letter queue
    receive_count: int  # receives so far, listings included (ApproximateReceiveCount)


@dataclass(slots=True)
class RedriveCounts:
    """What a redrive did."""

    moved: int = 0  # sent to the queue and deleted from the dead-letter queue
    failed: int = 0  # not sent, or sent and not deleted (then in both queues)
    skipped: int = 0  # of another reason than the one asked for: left in the dead-letter queue


class Queue(QueueClient, Protocol):
    """A queue and its dead-letter queue, for the worker, the operator and the dev tools."""

    def send(self, bodies: Iterable[str]) -> int:
        """Send message bodies to the queue, in order; return how many were sent.

        Raises ``QueueUnavailable`` (``REFUSED`` naming the message when the
        queue refuses one; those before it were sent).
        """
        ...

    def peek(self, limit: int, *, reason: str | None = None) -> list[Parked]:
        """Up to ``limit`` distinct messages of the dead-letter queue (only those parked for
        ``reason`` when given), each left in it and visible again when this returns.

        Raises ``QueueUnavailable`` when a call fails, ``ValueError`` without a
        dead-letter queue.
        """
        ...

    def redrive(self, limit: int, *, reason: str | None = None) -> RedriveCounts:
        """Move up to ``limit`` messages from the dead-letter queue back to the queue
        (only those parked for ``reason`` when given; the others stay).

        A message is deleted from the dead-letter queue only once it is sent.
        Raises ``QueueUnavailable`` when a call fails, ``ValueError`` without a
        dead-letter queue.
        """
        ...

    def depth(self, *, dead_letter: bool = False) -> QueueDepth:
        """The queue's approximate depth, or its dead-letter queue's."""
        ...
