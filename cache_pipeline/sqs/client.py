"""The ``QueueClient`` of an SQS queue (and its dead-letter queue).

Four calls, each batched by ten as SQS allows: ReceiveMessage (long poll,
asking for SentTimestamp and ApproximateReceiveCount, with the visibility
timeout set on every receive), DeleteMessageBatch, ChangeMessageVisibilityBatch
and, to park poison, SendMessageBatch to the dead-letter queue. They go through
``cache_pipeline.sqs.wire``.

Parking never fails silently: the DLQ gets the body unchanged with the
sanitised attributes of ``cache_pipeline.sqs.dlq``; a message the DLQ refuses that
way is sent again with its ``reason`` alone; one it refuses even so is reported
refused (the consumer leaves it for the redrive policy, logs an error and
counts it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cache_pipeline.config import Settings
from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.sqs.dlq import REASON, attributes
from cache_pipeline.sqs.queue import Poison, Received
from cache_pipeline.sqs.wire import SqsCalls, sqs_calls

SQS_BATCH = 10
SYSTEM_ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount"]


class SqsQueue:
    """One SQS queue, and optionally its dead-letter queue, as a ``QueueClient``."""

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
    def from_settings(cls, settings: Settings) -> SqsQueue:
        assert settings.queue_url is not None
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
        reply = self.calls.call(
            "ReceiveMessage",
            {
                "QueueUrl": self.queue_url,
                "MaxNumberOfMessages": max_messages,
                "WaitTimeSeconds": wait_seconds,
                "VisibilityTimeout": self.visibility_timeout,
                "MessageSystemAttributeNames": SYSTEM_ATTRIBUTES,
            },
        )
        return [_received(message) for message in reply.get("Messages") or ()]

    def delete(self, receipts: Sequence[str]) -> list[str]:
        return self._by_receipt("DeleteMessageBatch", receipts, {})

    def release(self, receipts: Sequence[str], after_seconds: int) -> list[str]:
        return self._by_receipt(
            "ChangeMessageVisibilityBatch", receipts, {"VisibilityTimeout": after_seconds}
        )

    def park(self, poison: Sequence[Poison]) -> list[str | None]:
        """Send poison to the DLQ; per message None when it is there, else why it is not.

        Raises ``QueueUnavailable`` when the DLQ cannot be reached at all.
        """
        if self.dead_letter_url is None:
            return ["no dead-letter queue is configured"] * len(poison)
        refused: list[str | None] = []
        for start in range(0, len(poison), SQS_BATCH):
            refused += self._park_chunk(poison[start : start + SQS_BATCH])
        return refused

    def stop_by(self, deadline: float) -> None:
        """Every call from now on ends by ``deadline`` (``time.monotonic()``); see sqs_wire."""
        self.calls.stop_by(deadline)

    def close(self) -> None:
        self.calls.close()

    def _park_chunk(self, chunk: Sequence[Poison]) -> list[str | None]:
        entries = [_entry(str(i), p, attributes(p)) for i, p in enumerate(chunk)]
        try:
            failed = self._send(entries)
        except QueueUnavailable as exc:
            if exc.fault is not QueueFault.REFUSED:
                raise
            # The DLQ refused the whole call (SQS judges some entries per call): one by one.
            return [self._park_one(p) for p in chunk]
        return [self._park_bare(p) if str(i) in failed else None for i, p in enumerate(chunk)]

    def _park_one(self, item: Poison) -> str | None:
        try:
            failed = self._send([_entry("0", item, attributes(item))])
        except QueueUnavailable as exc:
            if exc.fault is not QueueFault.REFUSED:
                raise
            return self._park_bare(item)
        return self._park_bare(item) if failed else None

    def _park_bare(self, item: Poison) -> str | None:
        """The message with its reason as its only attribute (short, and sanitised)."""
        bare = {REASON: attributes(item)[REASON]}
        try:
            failed = self._send([_entry("0", item, bare)])
        except QueueUnavailable as exc:
            if exc.fault is not QueueFault.REFUSED:
                raise
            return exc.detail
        return failed.get("0")

    def _send(self, entries: list[dict[str, Any]]) -> dict[str, str]:
        """SendMessageBatch to the DLQ; the refused entries' ids with SQS's message."""
        reply = self.calls.call(
            "SendMessageBatch", {"QueueUrl": self.dead_letter_url, "Entries": entries}
        )
        return {
            str(entry.get("Id")): f"{entry.get('Code', '')}: {entry.get('Message', '')}"
            for entry in reply.get("Failed") or ()
        }

    def _by_receipt(
        self, operation: str, receipts: Sequence[str], extra: dict[str, Any]
    ) -> list[str]:
        refused: list[str] = []
        for start in range(0, len(receipts), SQS_BATCH):
            chunk = receipts[start : start + SQS_BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": r, **extra} for i, r in enumerate(chunk)]
            reply = self.calls.call(operation, {"QueueUrl": self.queue_url, "Entries": entries})
            refused += [chunk[int(failed["Id"])] for failed in reply.get("Failed") or ()]
        return refused


def _entry(entry_id: str, item: Poison, attrs: dict[str, Any]) -> dict[str, Any]:
    return {"Id": entry_id, "MessageBody": item.body, "MessageAttributes": attrs}


def _received(message: dict[str, Any]) -> Received:
    attributes = message.get("Attributes") or {}
    sent = attributes.get("SentTimestamp")
    count = attributes.get("ApproximateReceiveCount")
    return Received(
        receipt=message["ReceiptHandle"],
        body=message.get("Body", ""),
        message_id=message.get("MessageId", ""),
        sent_at=int(sent) / 1000 if isinstance(sent, str) and sent.isdigit() else None,
        receive_count=int(count) if isinstance(count, str) and count.isdigit() else 1,
    )
