"""The dead-letter queue: what a parked message carries, and moving messages back.

A parked message keeps its body byte for byte; why it was parked travels in
SQS message attributes (``reason``, and ``messageId``, ``detail``,
``sourceMessageId`` when known), so an operator can read the DLQ and
``redrive`` can send the same bodies back once the cause is fixed. The
consumer parks through ``cache_pipeline.sqs.client``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cache_pipeline.sqs.batch import SQS_BATCH, delete_batch
from cache_pipeline.sqs.queue import Poison

__all__ = ["Poison", "RedriveCounts", "attributes", "redrive", "sqs_text"]

REASON = "reason"
MESSAGE_ID = "messageId"
DETAIL = "detail"
SOURCE_MESSAGE_ID = "sourceMessageId"
MAX_ATTRIBUTE = 1024  # attribute values are kept short; the body is what matters
REDRIVE_WAIT_SECONDS = 1
# What SQS refuses in a message attribute (a whole send fails on one such character):
# anything outside #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_text(value: str) -> str:
    """``value`` with every character SQS refuses in an attribute replaced by U+FFFD."""
    return _NOT_SQS_TEXT.sub("\ufffd", value)


def attributes(poison: Poison) -> dict[str, Any]:
    """The SQS message attributes that say why a message was parked."""
    values = {
        REASON: poison.reason,
        DETAIL: poison.detail,
        MESSAGE_ID: poison.message_id,
        SOURCE_MESSAGE_ID: poison.sqs_message_id,
    }
    return {
        name: {"DataType": "String", "StringValue": sqs_text(value[:MAX_ATTRIBUTE])}
        for name, value in values.items()
        if value
    }


@dataclass(slots=True)
class RedriveCounts:
    """What a redrive did."""

    moved: int = 0
    failed: int = 0


def redrive(client: Any, source_url: str, target_url: str, *, limit: int) -> RedriveCounts:
    """Move up to ``limit`` messages from ``source_url`` to ``target_url``.

    Each message is sent first and deleted from the source only once sent, so a
    failure leaves it in the source (it may then exist in both: every write is
    idempotent). Stops when the source answers empty or ``limit`` is reached.
    """
    counts = RedriveCounts()
    while counts.moved + counts.failed < limit:
        want = min(SQS_BATCH, limit - counts.moved - counts.failed)
        reply = client.receive_message(
            QueueUrl=source_url, MaxNumberOfMessages=want, WaitTimeSeconds=REDRIVE_WAIT_SECONDS
        )
        messages = reply.get("Messages", [])
        if not messages:
            break
        entries = [{"Id": str(i), "MessageBody": m["Body"]} for i, m in enumerate(messages)]
        sent = client.send_message_batch(QueueUrl=target_url, Entries=entries)
        ok = sorted(int(entry["Id"]) for entry in sent.get("Successful", []))
        not_deleted = delete_batch(client, source_url, [messages[i]["ReceiptHandle"] for i in ok])
        counts.moved += len(ok) - len(not_deleted)
        counts.failed += len(messages) - len(ok) + len(not_deleted)
    return counts
