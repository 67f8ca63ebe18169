"""The raw-queue consumer: receive a batch with kombu, route it through the tasks, settle it.

One ``QueueConsumer`` runs in its own thread with its own kombu connection on
the SQS transport of ``tasks.transport``. Each turn of its loop:

1. one ReceiveMessage (long poll, up to BATCH_SIZE messages, the prefetch limit);
2. each body is parsed once and routed by ``type`` to its Celery task (a
   Celery-protocol message by its ``task`` header), called in this thread; the
   tasks stage their writes;
3. one ``Store.apply_batch`` round trip writes every staged message;
4. one DeleteMessageBatch for what was written or correctly skipped, sent by a
   deleter thread while the consumer already receives the next batch; poison
   goes to the DLQ (or stays for the queue's redrive policy); when Redis was
   unreachable nothing is deleted, the batch is made visible again soon and
   the consumer waits on the ``RedisGate`` before it receives again.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

from kombu import Connection, Consumer, Queue
from kombu.message import Message as KombuMessage
from loguru import logger
from redis.backoff import EqualJitterBackoff

from cache_pipeline import metrics
from cache_pipeline.backoff import RedisGate
from cache_pipeline.delivery import (
    Action,
    Delivery,
    decide,
    record_applied,
    record_poison,
    record_store_error,
    record_transient,
)
from cache_pipeline.dlq import park
from cache_pipeline.errors import InvalidMessage, InvalidReason, StoreUnavailable, unprocessable
from cache_pipeline.schema import SchemaWatch
from cache_pipeline.sqs_batch import QueueUnavailable
from cache_pipeline.writer import Writer
from tasks.flood import FloodBrake
from tasks.handlers import MessageTask

RETRY_VISIBILITY_SECONDS = 2  # a batch Redis could not take is visible again this soon
HALT_POLL = 1.0  # seconds between looks while consumption is halted
DRAIN_TIMEOUT = 0.1  # below the long poll: drain_events returns after one empty receive
RECEIVE_BACKOFF = EqualJitterBackoff(cap=10.0, base=0.5)


def sent_at(sqs_message: dict[str, Any]) -> float | None:
    """SQS's SentTimestamp (epoch ms, asked for by ``tasks.app``) in epoch seconds."""
    sent = sqs_message.get("Attributes", {}).get("SentTimestamp")
    return int(sent) / 1000 if isinstance(sent, str) and sent.isdigit() else None


class QueueConsumer:
    """Consumes one queue in the calling thread until ``stopping`` is set."""

    def __init__(
        self,
        connection: Connection,
        *,
        queue_name: str,
        queue_url: str,
        batch_size: int,
        tasks: dict[str, MessageTask],
        writer: Writer,
        gate: RedisGate,
        stopping: threading.Event,
        dead_letter: tuple[str, str] | None = None,
        retry_visibility: int = RETRY_VISIBILITY_SECONDS,
        schema: SchemaWatch | None = None,
        flood: FloodBrake | None = None,
    ) -> None:
        self.connection = connection
        self.queue_name = queue_name
        self.queue_url = queue_url
        self.tasks = tasks
        self.tasks_by_name = {task.name: task for task in tasks.values()}
        self.writer = writer
        self.gate = gate
        self.stopping = stopping
        self.dead_letter = dead_letter  # (name, url) of the DLQ
        self.retry_visibility = retry_visibility
        self.schema = schema
        self.flood = flood
        self.channel: Any = connection.channel()
        self.received: list[KombuMessage] = []
        self._deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-deleter")
        self._deleting: Future[None] | None = None
        self.consumer = Consumer(
            self.channel,
            queues=[Queue(queue_name, no_declare=True)],
            on_message=self.received.append,
            accept=["json"],
            prefetch_count=batch_size,
            auto_declare=False,
        )

    def run(self) -> None:
        """Receive and settle batches until asked to stop; never raises."""
        self.consumer.consume()
        failures = 0
        try:
            while not self.stopping.is_set():
                if not self._may_consume():
                    self.stopping.wait(HALT_POLL)
                    continue
                turn = self._receive()
                if turn == "messages":
                    failures = 0
                    self._handle_safely(self._take())
                elif turn == "failed":
                    failures += 1
                    self.stopping.wait(RECEIVE_BACKOFF.compute(failures))
        finally:
            self.close()

    def _may_consume(self) -> bool:
        """False during a poison flood, or while the schema marker forbids writing."""
        if self.flood is not None and self.flood.halted():
            return False
        return self.schema is None or self.schema.allows_writes()

    def close(self) -> None:
        """Finish the delete in flight, then let go of the connection."""
        try:
            self._wait_for_delete()
            self._deleter.shutdown()
            self.consumer.cancel()
        finally:
            self.connection.release()

    def _receive(self) -> Literal["messages", "empty", "failed"]:
        """One ReceiveMessage (a long poll)."""
        try:
            self.connection.drain_events(timeout=DRAIN_TIMEOUT)
        except TimeoutError:
            return "empty"
        except Exception as exc:  # the consumer thread must outlive any receive failure
            metrics.RECEIVE_ERRORS.inc()
            logger.opt(exception=exc).warning("receiving from the queue failed: {}", exc)
            return "failed"
        return "messages" if self.received else "empty"

    def _take(self) -> list[KombuMessage]:
        batch = self.received[:]
        self.received.clear()
        return batch

    def _handle_safely(self, batch: list[KombuMessage]) -> None:
        """Handle a batch; a bug outside per-message handling must not end the consumer."""
        try:
            self._handle(batch)
        except Exception:
            metrics.RECEIVE_ERRORS.inc()
            logger.exception("handling a batch of {} failed; it comes back later", len(batch))

    def _handle(self, batch: list[KombuMessage]) -> None:
        now = time.perf_counter()
        pairs = self._admit([(self._delivery(message, now), message) for message in batch])
        staged_for: list[Delivery] = []
        with self.writer.batch() as staged:
            for delivery, message in pairs:
                if delivery.invalid is None and self._route(delivery, message):
                    staged_for.append(delivery)
        unavailable = self._write(staged_for, staged.messages)
        self._settle([delivery for delivery, _ in pairs])
        if unavailable:
            self.gate.wait()
            if self.schema is not None:
                self.schema.recheck_soon()  # Redis may be back empty

    def _admit(
        self, pairs: list[tuple[Delivery, KombuMessage]]
    ) -> list[tuple[Delivery, KombuMessage]]:
        """Count each message in the flood window; hand invalid ones back once it trips."""
        if self.flood is None:
            return pairs
        admitted, held = [], []
        for delivery, message in pairs:
            if self.flood.admit(invalid=delivery.invalid is not None):
                admitted.append((delivery, message))
            else:
                held.append(delivery.receipt)
        if held:
            try:
                self.channel.release_many(
                    self.queue_name, self.queue_url, held, self.retry_visibility
                )
            except QueueUnavailable as exc:
                metrics.RECEIVE_ERRORS.inc()
                logger.warning("{} held message(s) come back later: {}", len(held), exc)
        return admitted

    def _delivery(self, message: KombuMessage, now: float) -> Delivery:
        sqs_message = message.delivery_info["sqs_message"]
        delivery = Delivery(
            receipt=sqs_message["ReceiptHandle"],
            body=sqs_message["Body"],
            sqs_id=sqs_message.get("MessageId", ""),
            received_at=now,
            sent_at=sent_at(sqs_message),
        )
        if not message.headers.get("task"):
            try:
                delivery.message = self.writer.parse(delivery.body)
            except InvalidMessage as exc:
                delivery.invalid = exc
            except Exception as exc:  # one message never fails its batch
                delivery.invalid = unprocessable(exc)
        return delivery

    def _route(self, delivery: Delivery, message: KombuMessage) -> bool:
        """Call the task of the message in this thread; True when it staged a write."""
        try:
            if delivery.message is not None:
                self.tasks[delivery.message.type].run(delivery.message)
            else:
                task, payload = self._celery_call(message)
                task.run(payload)
        except InvalidMessage as exc:
            delivery.invalid = exc
            return False
        except Exception as exc:  # one message never fails its batch
            message_id = delivery.message.id if delivery.message is not None else None
            delivery.invalid = unprocessable(exc, message_id)
            delivery.message = None
            return False
        return True

    def _celery_call(self, message: KombuMessage) -> tuple[MessageTask, Any]:
        """The task and its one argument from a Celery-protocol (v2) message."""
        name = message.headers["task"]
        task = self.tasks_by_name.get(name)
        if task is None:
            raise InvalidMessage(InvalidReason.UNKNOWN_TYPE, f"no task named {name!r}")
        try:
            args, kwargs, _embed = message.decode()
        except Exception as exc:
            raise InvalidMessage(InvalidReason.NOT_JSON, f"Celery message: {exc}") from None
        if len(args) != 1 or kwargs:
            raise InvalidMessage(
                InvalidReason.INVALID_FIELD, f"task {name} takes exactly one message argument"
            )
        return task, args[0]

    def _write(self, staged_for: list[Delivery], messages: list[Any]) -> bool:
        """Write the staged messages in one round trip; True when Redis was unreachable."""
        try:
            results = self.writer.flush(messages)
        except StoreUnavailable as exc:
            logger.warning(
                "Redis unavailable, {} message(s) go back to the queue: {}", len(messages), exc
            )
            return True
        for delivery, message, result in zip(staged_for, messages, results, strict=True):
            delivery.message = message
            delivery.result = result
        return False

    def _settle(self, deliveries: list[Delivery]) -> None:
        by_action: dict[Action, list[Delivery]] = {action: [] for action in Action}
        for delivery in deliveries:
            by_action[decide(delivery, has_dlq=self.dead_letter is not None)].append(delivery)
        parked = self._park(by_action[Action.PARK])
        self._delete(by_action[Action.DELETE], parked)
        self._release(by_action[Action.RETRY])
        self._leave(by_action[Action.LEAVE], by_action[Action.PARK], parked)

    def _park(self, poison: list[Delivery]) -> list[Delivery]:
        """Send poison to the DLQ; return the ones it took."""
        if not poison or self.dead_letter is None:
            return []
        name, url = self.dead_letter
        try:
            sent = park(self.channel.sqs(queue=name), url, [d.poison() for d in poison])
        except QueueUnavailable as exc:
            metrics.RECEIVE_ERRORS.inc()
            logger.warning("{} poison message(s) stay on the queue: {}", len(poison), exc)
            return []
        return [delivery for delivery, ok in zip(poison, sent, strict=True) if ok]

    def _delete(self, applied: list[Delivery], parked: list[Delivery]) -> None:
        """Hand the batch's DeleteMessageBatch to the deleter thread and go on receiving.

        The write is done, so deleting can overlap the next receive; at most one
        delete is in flight per consumer, and ``close`` waits for it.
        """
        done = applied + parked
        if not done:
            return
        self.channel.forget_many([d.receipt for d in done])
        self._wait_for_delete()
        self._deleting = self._deleter.submit(self._delete_now, applied, parked)

    def _wait_for_delete(self) -> None:
        if self._deleting is not None:
            self._deleting.result()
            self._deleting = None

    def _delete_now(self, applied: list[Delivery], parked: list[Delivery]) -> None:
        done = applied + parked
        try:
            refused = set(
                self.channel.delete_many(self.queue_name, self.queue_url, [d.receipt for d in done])
            )
        except QueueUnavailable as exc:
            metrics.RECEIVE_ERRORS.inc()
            logger.warning("deleting {} message(s) failed, they will come back: {}", len(done), exc)
            refused = {d.receipt for d in done}
        except Exception:  # a bug here must not kill the consumer: the messages come back
            logger.exception("deleting {} message(s) failed, they will come back", len(done))
            return
        if refused:
            metrics.RECEIVE_ERRORS.inc()
        for delivery in applied:
            if delivery.receipt not in refused:
                record_applied(delivery)
        for delivery in parked:
            if delivery.receipt not in refused:
                record_poison(delivery, "dlq")

    def _release(self, retry: list[Delivery]) -> None:
        for delivery in retry:
            record_transient(delivery)
        if not retry:
            return
        receipts = [d.receipt for d in retry]
        try:
            self.channel.release_many(
                self.queue_name, self.queue_url, receipts, self.retry_visibility
            )
        except QueueUnavailable as exc:
            metrics.RECEIVE_ERRORS.inc()
            logger.warning("could not hand {} message(s) back early: {}", len(retry), exc)

    def _leave(self, left: list[Delivery], to_park: list[Delivery], parked: list[Delivery]) -> None:
        not_parked = [d for d in to_park if d not in parked]
        for delivery in not_parked:
            metrics.DLQ_REFUSED.inc()
            logger.bind(**delivery.log_fields()).error(
                "the dead-letter queue refused this poison message; it stays for the redrive policy"
            )
            record_poison(delivery, "redrive")
        for delivery in left:
            if delivery.invalid is not None:
                record_poison(delivery, "redrive")
            else:
                record_store_error(delivery)
        receipts = [d.receipt for d in left + not_parked]
        if receipts:
            self.channel.forget_many(receipts)
