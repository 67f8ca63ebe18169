"""The dead-letter queue: what a parked message carries.

A parked message keeps its body byte for byte; why it was parked travels in
SQS message attributes (``reason``, and ``messageId``, ``detail``,
``sourceMessageId`` when known), so an operator can read the DLQ and
``redrive`` can send the same bodies back once the cause is fixed. Parking and
redrive are calls of ``cache_pipeline.sqs.client``.
"""

from __future__ import annotations

import re
from typing import Any

from cache_pipeline.sqs.queue import Poison

REASON = "reason"
MESSAGE_ID = "messageId"
DETAIL = "detail"
SOURCE_MESSAGE_ID = "sourceMessageId"
MAX_ATTRIBUTE = 1024  # attribute values are kept short; the body is what matters
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
