"""SQS clients from settings, and the few queue operations the tools share.

Credentials always come from boto3's default chain (IAM role, web identity,
environment); SQS_ENDPOINT_URL points at LocalStack or moto.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from cache_pipeline.config import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

SEND_BATCH = 10  # SendMessageBatch takes at most ten entries


def sqs_client(settings: Settings) -> SQSClient:
    """A boto3 SQS client for the configured region and endpoint."""
    config = Config(
        retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=30
    )
    client: SQSClient = boto3.client(
        "sqs",
        region_name=settings.aws_region,
        endpoint_url=settings.sqs_endpoint_url,
        config=config,
    )
    return client


def send_bodies(client: SQSClient, queue_url: str, bodies: Iterable[str]) -> int:
    """Send message bodies in batches of ten; return how many were sent.

    Raises ``RuntimeError`` naming the first entry SQS refused.
    """
    sent = 0
    for chunk in _chunks(bodies, SEND_BATCH):
        entries: list[Any] = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)]
        reply = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        failed = reply.get("Failed", [])
        if failed:
            raise RuntimeError(f"SQS refused a message: {failed[0].get('Message', failed[0])}")
        sent += len(reply.get("Successful", []))
    return sent


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
