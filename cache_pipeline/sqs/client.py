"""The SQS client: every SQS call of the worker, the operator's commands and the dev tools.

``SqsQueue`` is one queue and, optionally, its dead-letter queue. What it does:

* ``receive``: ReceiveMessage (long poll, asking for SentTimestamp and
  ApproximateReceiveCount, with the visibility timeout set on every receive);
* ``delete`` and ``release``: DeleteMessageBatch and ChangeMessageVisibilityBatch;
* ``park``: SendMessageBatch of poison to the dead-letter queue;
* ``send``: SendMessageBatch of bodies to the queue (``publish``, the edge stub);
* ``redrive``: the dead-letter queue's messages sent back to the queue, then deleted;
* ``depth``: GetQueueAttributes, the approximate number of messages visible, in
  flight and delayed.

Batches hold at most ``SQS_BATCH_LIMIT`` entries. The calls go through
``cache_pipeline.sqs.wire`` (signed keep-alive calls, or the boto3 fallback);
``stop_by`` and ``close`` bound a stopping worker's calls.

A batch SQS refuses as a whole (it judges some limits per call, such as the
total size) is sent again one message at a time. Parking never fails silently:
the DLQ gets the body unchanged with the sanitised attributes of
``cache_pipeline.sqs.dlq``; a message the DLQ refuses that way is sent again
with its ``reason`` alone; one it refuses even so is reported refused (the
consumer leaves it for the redrive policy, logs an error and counts it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

from cache_pipeline.config import SQS_BATCH_LIMIT, WorkerSettings
from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.sqs.dlq import REASON, attributes
from cache_pipeline.sqs.queue import Poison, QueueDepth, Received, RedriveCounts
from cache_pipeline.sqs.wire import SqsCalls, sqs_calls

SYSTEM_ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount"]
DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
REDRIVE_WAIT_SECONDS = 1  # a dead-letter queue that answers empty this long is drained
NO_DEAD_LETTER = "no dead-letter queue is configured"

T = TypeVar("T")
Entry = dict[str, Any]


class SqsQueue:
    """One SQS queue, and optionally its dead-letter queue (a ``Queue``)."""

    def __init__(
        self,
        calls: SqsCalls,
        queue_url: str,
        *,
        dead_letter_url: str | None = None,
        visibility_timeout: int = 30,
    ) -> None:
        self.calls = calls
        self.queue_url = queue_url
        self.dead_letter_url = dead_letter_url
        self.visibility_timeout = visibility_timeout

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> SqsQueue:
        """QUEUE_URL and DEAD_LETTER_QUEUE_URL on the configured endpoint."""
        return cls(
            sqs_calls(settings),
            settings.queue_url,
            dead_letter_url=settings.dead_letter_queue_url,
            visibility_timeout=settings.visibility_timeout,
        )

    @property
    def has_dead_letter(self) -> bool:
        return self.dead_letter_url is not None

    def receive(self, max_messages: int, wait_seconds: int) -> list[Received]:
        return self._receive(self.queue_url, max_messages, wait_seconds)

    def delete(self, receipts: Sequence[str]) -> list[str]:
        return self._by_receipt("DeleteMessageBatch", self.queue_url, receipts, {})

    def release(self, receipts: Sequence[str], after_seconds: int) -> list[str]:
        return self._by_receipt(
            "ChangeMessageVisibilityBatch",
            self.queue_url,
            receipts,
            {"VisibilityTimeout": after_seconds},
        )

    def park(self, poison: Sequence[Poison]) -> list[str | None]:
        """Send poison to the DLQ; per message None when it is there, else why it is not.

        Raises ``QueueUnavailable`` when the DLQ cannot be reached at all.
        """
        if self.dead_letter_url is None:
            return [NO_DEAD_LETTER] * len(poison)
        refused: list[str | None] = []
        for chunk in _batches(poison):
            refused += self._park_chunk(self.dead_letter_url, chunk)
        return refused

    def send(self, bodies: Iterable[str]) -> int:
        """Send bodies to the queue, in order; return how many were sent.

        Raises ``QueueUnavailable``: ``REFUSED`` naming the first message the
        queue refused (the ones before it were sent, and others of its batch
        may have been).
        """
        sent = 0
        for chunk in _batches(bodies):
            refused = self._send_entries(self.queue_url, _body_entries(chunk))
            if refused:
                first = min(refused, key=int)
                position = sent + int(first) + 1
                raise QueueUnavailable(
                    QueueFault.REFUSED, f"message {position} was refused: {refused[first]}"
                )
            sent += len(chunk)
        return sent

    def redrive(self, limit: int) -> RedriveCounts:
        """Move up to ``limit`` messages from the dead-letter queue back to the queue.

        Each message is sent first and deleted from the dead-letter queue only
        once sent, so a failure leaves it there (it may then be in both: every
        write is idempotent). Stops when the dead-letter queue answers empty or
        ``limit`` is reached. Raises ``ValueError`` without a dead-letter queue,
        ``QueueUnavailable`` when a call fails.
        """
        source = self._dead_letter()
        counts = RedriveCounts()
        while counts.moved + counts.failed < limit:
            want = min(SQS_BATCH_LIMIT, limit - counts.moved - counts.failed)
            messages = self._receive(source, want, REDRIVE_WAIT_SECONDS)
            if not messages:
                break
            moved = self._move_back(source, messages)
            counts.moved += moved
            counts.failed += len(messages) - moved
        return counts

    def depth(self, *, dead_letter: bool = False) -> QueueDepth:
        """The approximate depth of the queue, or of its dead-letter queue.

        Raises ``ValueError`` for a dead-letter queue that is not configured.
        """
        url = self._dead_letter() if dead_letter else self.queue_url
        reply = self.calls.call(
            "GetQueueAttributes", {"QueueUrl": url, "AttributeNames": DEPTH_ATTRIBUTES}
        )
        values = [_count(reply.get("Attributes") or {}, name) for name in DEPTH_ATTRIBUTES]
        return QueueDepth(*values)

    def stop_by(self, deadline: float) -> None:
        """Every call from now on ends by ``deadline`` (``time.monotonic()``); see sqs.wire."""
        self.calls.stop_by(deadline)

    def close(self) -> None:
        """Let go of connections; a call still waiting on one ends at once with an error."""
        self.calls.close()

    # -- the calls -----------------------------------------------------------------------------

    def _receive(self, url: str, max_messages: int, wait_seconds: int) -> list[Received]:
        reply = self.calls.call(
            "ReceiveMessage",
            {
                "QueueUrl": url,
                "MaxNumberOfMessages": max_messages,
                "WaitTimeSeconds": wait_seconds,
                "VisibilityTimeout": self.visibility_timeout,
                "MessageSystemAttributeNames": SYSTEM_ATTRIBUTES,
            },
        )
        return [_received(message) for message in reply.get("Messages") or ()]

    def _by_receipt(
        self, operation: str, url: str, receipts: Sequence[str], extra: Entry
    ) -> list[str]:
        """A batch call on received messages; the receipts it refused."""
        refused: list[str] = []
        for chunk in _batches(receipts):
            entries = [{"Id": str(i), "ReceiptHandle": r, **extra} for i, r in enumerate(chunk)]
            reply = self.calls.call(operation, {"QueueUrl": url, "Entries": entries})
            refused += [chunk[int(failed["Id"])] for failed in reply.get("Failed") or ()]
        return refused

    def _send_entries(self, url: str, entries: list[Entry]) -> dict[str, str]:
        """SendMessageBatch; the ids of the entries refused, with why.

        A batch refused as a whole is sent again one entry at a time. Raises
        ``QueueUnavailable`` for any other failure.
        """
        try:
            reply = self.calls.call("SendMessageBatch", {"QueueUrl": url, "Entries": entries})
        except QueueUnavailable as exc:
            if exc.fault is not QueueFault.REFUSED:
                raise
            if len(entries) == 1:
                return {str(entries[0]["Id"]): exc.detail}
            refused: dict[str, str] = {}
            for entry in entries:
                refused |= self._send_entries(url, [entry])
            return refused
        return {
            str(entry.get("Id")): f"{entry.get('Code', '')}: {entry.get('Message', '')}"
            for entry in reply.get("Failed") or ()
        }

    def _park_chunk(self, url: str, chunk: Sequence[Poison]) -> list[str | None]:
        entries = [_poison_entry(str(i), p, attributes(p)) for i, p in enumerate(chunk)]
        refused = self._send_entries(url, entries)
        return [self._park_bare(url, p) if str(i) in refused else None for i, p in enumerate(chunk)]

    def _park_bare(self, url: str, item: Poison) -> str | None:
        """The message with its reason as its only attribute (short, and sanitised)."""
        bare = {REASON: attributes(item)[REASON]}
        return self._send_entries(url, [_poison_entry("0", item, bare)]).get("0")

    def _move_back(self, source: str, messages: list[Received]) -> int:
        """Send messages of ``source`` to the queue, delete those sent; how many moved."""
        refused = self._send_entries(self.queue_url, _body_entries([m.body for m in messages]))
        sent = [m.receipt for i, m in enumerate(messages) if str(i) not in refused]
        return len(sent) - len(self._by_receipt("DeleteMessageBatch", source, sent, {}))

    def _dead_letter(self) -> str:
        if self.dead_letter_url is None:
            raise ValueError(NO_DEAD_LETTER)
        return self.dead_letter_url


def _batches(items: Iterable[T]) -> Iterator[list[T]]:
    """``items`` in lists of at most ``SQS_BATCH_LIMIT``, in order."""
    iterator = iter(items)
    while chunk := list(islice(iterator, SQS_BATCH_LIMIT)):
        yield chunk


def _body_entries(bodies: Sequence[str]) -> list[Entry]:
    return [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]


def _poison_entry(entry_id: str, item: Poison, attrs: Entry) -> Entry:
    return {"Id": entry_id, "MessageBody": item.body, "MessageAttributes": attrs}


def _count(values: dict[str, Any], name: str) -> int:
    value = values.get(name)
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def _received(message: dict[str, Any]) -> Received:
    attrs = message.get("Attributes") or {}
    sent = attrs.get("SentTimestamp")
    count = attrs.get("ApproximateReceiveCount")
    return Received(
        receipt=message["ReceiptHandle"],
        body=message.get("Body", ""),
        message_id=message.get("MessageId", ""),
        sent_at=int(sent) / 1000 if isinstance(sent, str) and sent.isdigit() else None,
        receive_count=int(count) if isinstance(count, str) and count.isdigit() else 1,
    )
