"""Batched SQS calls on received messages through a boto3 client (the CLI's redrive).

SQS takes at most ten entries per batch call. Each function returns the
receipt handles SQS did not accept (the message then comes back after its
visibility timeout, so nothing is lost) and raises ``QueueUnavailable`` when
the call itself fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cache_pipeline.sqs.faults import from_boto3

SQS_BATCH = 10


def delete_batch(client: Any, queue_url: str, receipts: Sequence[str]) -> list[str]:
    """DeleteMessageBatch in chunks of ten; return the receipts that were not deleted."""

    def send(entries: list[dict[str, Any]]) -> Any:
        return client.delete_message_batch(QueueUrl=queue_url, Entries=entries)

    return _batched(send, receipts, {})


def change_visibility_batch(
    client: Any, queue_url: str, receipts: Sequence[str], timeout: int
) -> list[str]:
    """ChangeMessageVisibilityBatch to ``timeout`` seconds; return the receipts refused."""

    def send(entries: list[dict[str, Any]]) -> Any:
        return client.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)

    return _batched(send, receipts, {"VisibilityTimeout": timeout})


def _batched(
    send: Callable[[list[dict[str, Any]]], Any], receipts: Sequence[str], extra: dict[str, Any]
) -> list[str]:
    refused: list[str] = []
    for start in range(0, len(receipts), SQS_BATCH):
        chunk = receipts[start : start + SQS_BATCH]
        entries = [
            {"Id": str(i), "ReceiptHandle": receipt, **extra} for i, receipt in enumerate(chunk)
        ]
        try:
            reply = send(entries)
        except (BotoCoreError, ClientError) as exc:
            raise from_boto3(exc, "batch call") from None
        refused.extend(chunk[int(failed["Id"])] for failed in reply.get("Failed", []))
    return refused
