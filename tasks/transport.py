"""kombu's SQS transport, tuned for a queue of raw JSON applied in batches.

Three changes to ``kombu.transport.SQS``, nothing else:

* every ReceiveMessage asks for the configured ``visibility_timeout`` (kombu
  ignores it for predefined queues, and we never create or alter queues);
* a body that is not a kombu envelope is wrapped without being JSON-decoded a
  first time (the consumer parses it once, with the contract models);
* acks are batched: ``delete_many`` sends one DeleteMessageBatch for a whole
  receive instead of kombu's DeleteMessage per message, ``release_many`` makes
  messages visible again soon, ``forget_many`` frees the prefetch slots of
  settled messages (deleted, released or left on the queue on purpose);
* the consumer threads of a process share one boto3 client;
* the two calls of every batch, ReceiveMessage and DeleteMessageBatch, go
  through ``tasks.direct_sqs`` (the same client's session and credentials,
  without botocore's per-call overhead).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from kombu.transport import SQS
from kombu.transport.virtual import Channel as VirtualChannel

from cache_pipeline.sqs_batch import change_visibility_batch, delete_batch
from tasks.direct_sqs import DirectSqs

_ENVELOPE_MARK = '"properties"'
_CLIENTS: dict[tuple[str | None, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _is_celery_envelope(payload: dict[str, Any]) -> bool:
    """kombu's envelope of a Celery task message: properties, a body and the task header."""
    headers = payload.get("headers")
    return (
        isinstance(payload.get("properties"), dict)
        and "body" in payload
        and isinstance(headers, dict)
        and bool(headers.get("task"))
    )


class Channel(SQS.Channel):
    """An SQS channel whose acks go out in batches, polled by its own thread only."""

    # Deliveries are always settled by the consumer; kombu's restore-on-close
    # would re-publish raw bodies as kombu envelopes.
    do_restore = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # kombu picks up the worker's event loop when one is current; this
        # channel is polled synchronously by its consumer thread, never by a hub.
        self.hub = None
        self._direct: dict[str, DirectSqs] = {}

    def direct(self, queue: str) -> DirectSqs:
        """The receive and delete calls of ``queue``'s client, sent directly."""
        direct = self._direct.get(queue)
        if direct is None:
            direct = self._direct[queue] = DirectSqs(self.sqs(queue=queue))
        return direct

    def close(self) -> None:
        """Close the direct connections, then the channel as kombu does."""
        for direct in self._direct.values():
            direct.close()
        super().close()

    def new_sqs_client(
        self,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None = None,
    ) -> Any:
        """One boto3 client per process and credentials, shared by every consumer thread.

        boto3 clients are thread-safe; each one holds its own copy of the SQS
        service model, so sharing keeps a worker with many consumers small.
        """
        key = (region, access_key_id, secret_access_key, session_token, self.endpoint_url)
        with _CLIENTS_LOCK:
            client = _CLIENTS.get(key)
            if client is None:
                client = _CLIENTS[key] = super().new_sqs_client(
                    region, access_key_id, secret_access_key, session_token
                )
        return client

    def _receive_message(
        self, queue: str, max_number_of_messages: int = 1, wait_time_seconds: int | None = None
    ) -> Any:
        q_url: str = self._new_queue(queue)  # type: ignore[func-returns-value,assignment]
        params: dict[str, Any] = {
            "QueueUrl": q_url,
            "MaxNumberOfMessages": max_number_of_messages,
            "WaitTimeSeconds": self.wait_time_seconds
            if wait_time_seconds is None
            else wait_time_seconds,
            "VisibilityTimeout": self.visibility_timeout,
        }
        attributes = self.get_message_attributes
        if names := attributes.get("MessageSystemAttributeNames"):
            params["MessageSystemAttributeNames"] = names
        if names := attributes.get("MessageAttributeNames"):
            params["MessageAttributeNames"] = names
        return self.direct(queue).receive_message(**params)

    def _prepare_json_payload(self, text: str) -> dict[str, Any]:
        """A Celery-protocol envelope as kombu reads it; {} for anything else.

        {} makes kombu wrap the body as is: a contract message is parsed once, by the
        consumer, whatever its top-level fields (a ``"properties"`` field included).
        """
        if _ENVELOPE_MARK not in text:
            return {}
        payload: dict[str, Any] = super()._prepare_json_payload(text)  # type: ignore[misc]
        return payload if _is_celery_envelope(payload) else {}

    def delete_many(self, queue: str, queue_url: str, receipts: Sequence[str]) -> list[str]:
        """Delete messages with DeleteMessageBatch; return the receipts SQS did not delete.

        Touches no channel state, so it may run in another thread than the
        consumer's; the consumer frees the prefetch slots with ``forget_many``.
        """
        return delete_batch(self.direct(queue), queue_url, receipts)

    def release_many(
        self, queue: str, queue_url: str, receipts: Sequence[str], timeout: int
    ) -> list[str]:
        """Make messages visible again after ``timeout`` seconds; free their slots."""
        try:
            return change_visibility_batch(self.sqs(queue=queue), queue_url, receipts, timeout)
        finally:
            self.forget_many(receipts)

    def forget_many(self, receipts: Sequence[str]) -> None:
        """Free the prefetch slots of deliveries without touching SQS."""
        for receipt in receipts:
            VirtualChannel.basic_ack(self, receipt)


class Transport(SQS.Transport):
    """kombu's SQS transport with the batching channel above."""

    Channel = Channel
