"""The SQS client: every SQS call of the worker, the operator's commands and the dev tools.

``SqsQueue`` is one queue and, optionally, its dead-letter queue. What it does:

* ``receive``: ReceiveMessage (long poll, asking for SentTimestamp and
  ApproximateReceiveCount, with the visibility timeout set on every receive);
* ``delete`` and ``release``: DeleteMessageBatch and ChangeMessageVisibilityBatch;
* ``park``: SendMessageBatch of poison to the dead-letter queue;
* ``send``: SendMessageBatch of bodies to the queue (``publish``, the edge stub);
* ``peek``: the dead-letter queue's messages with their attributes, left in it;
* ``redrive``: the dead-letter queue's messages (or those of one reason) sent back
  to the queue, then deleted;
* ``depth``: GetQueueAttributes, the approximate number of messages visible, in
  flight and delayed;
* ``probe_receive`` and ``probe_settle``: the rights to receive, delete and hand
  back, asked without taking, deleting or hiding anything (``cache-pipeline doctor``).

Looking at the dead-letter queue takes a receive, which SQS has no way to do
without hiding what it hands over or handing the same messages again: ``peek``
hides each message it receives for ``PEEK_HIDE_SECONDS`` (so the next receive
brings others, and the listing ends when the queue runs dry) and makes every one
visible again before it returns, or as it fails. A receive with a visibility
timeout of 0 hides nothing but may hand the same ten messages every time; the
short hide is what lets a listing go past them. Every receive counts towards a
message's ``ApproximateReceiveCount``.

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
from contextlib import contextmanager, suppress
from itertools import islice
from typing import Any, TypeVar

from cache_pipeline.config import SQS_BATCH_LIMIT, WorkerSettings
from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.sqs.dlq import DETAIL, MESSAGE_ID, REASON, attributes
from cache_pipeline.sqs.queue import Parked, Poison, QueueDepth, Received, RedriveCounts
from cache_pipeline.sqs.wire import SqsCalls, sqs_calls

SYSTEM_ATTRIBUTES = ["SentTimestamp", "ApproximateReceiveCount"]
DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
REDRIVE_WAIT_SECONDS = 1  # a dead-letter queue that answers empty this long is drained
PEEK_HIDE_SECONDS = 30  # the longest a listed message stays hidden if the listing is killed
NO_RECEIPT = "cache-pipeline-probe-names-no-message"  # a receipt no queue handed out
NO_DEAD_LETTER = "no dead-letter queue is configured"

T = TypeVar("T")
Entry = dict[str, Any]
_VISIBLE: Entry = {"VisibilityTimeout": 0}


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

    def probe_receive(self) -> int:
        """Receive at most one message of the queue without hiding it; how many came.

        Checks the right to receive: nothing is taken, but the message's receive
        count goes up by one (towards the queue's ``maxReceiveCount``).
        """
        return len(self._receive_raw(self.queue_url, 1, 0, visibility=0))

    def probe_settle(self) -> None:
        """Delete and hand back by a receipt that names no message: nothing changes.

        Checks the rights to delete and to change visibility: the queue judging the
        receipt means it let the call in. Raises ``QueueUnavailable`` otherwise.
        """
        for operation, extra in (
            ("DeleteMessageBatch", {}),
            ("ChangeMessageVisibilityBatch", {"VisibilityTimeout": 0}),
        ):
            try:
                self._by_receipt(operation, self.queue_url, [NO_RECEIPT], extra)
            except QueueUnavailable as exc:
                if exc.fault is not QueueFault.REFUSED:  # refused: the receipt was judged
                    raise

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

    def peek(self, limit: int, *, reason: str | None = None) -> list[Parked]:
        """Up to ``limit`` distinct messages of the dead-letter queue (only those parked
        for ``reason`` when given), in the order received; every one stays in the queue.

        Each is hidden for ``PEEK_HIDE_SECONDS`` while the listing goes on and made
        visible again before this returns. Stops at ``limit``, when the queue answers
        empty, or when it hands only messages already seen. Raises ``ValueError``
        without a dead-letter queue, ``QueueUnavailable`` when a call fails.
        """
        source = self._dead_letter()
        found: list[Parked] = []
        seen: set[str] = set()
        with self._handed_back(source) as hidden:
            while len(found) < limit:
                want = min(SQS_BATCH_LIMIT, limit - len(found))
                batch = self._receive_raw(source, want, REDRIVE_WAIT_SECONDS, PEEK_HIDE_SECONDS)
                hidden += [message["ReceiptHandle"] for message in batch]
                fresh = [_parked(m) for m in batch if m.get("MessageId") not in seen]
                if not fresh:
                    break
                seen.update(parked.message_id for parked in fresh)
                found += [p for p in fresh if reason is None or p.reason == reason]
        return found[:limit]

    def redrive(self, limit: int, *, reason: str | None = None) -> RedriveCounts:
        """Move up to ``limit`` messages from the dead-letter queue back to the queue,
        only those parked for ``reason`` when given (the others are left visible).

        Each message is sent first and deleted from the dead-letter queue only
        once sent, so a failure leaves it there (it may then be in both: every
        write is idempotent). Stops when the dead-letter queue answers empty or
        with messages already seen, or ``limit`` is reached. Raises ``ValueError``
        without a dead-letter queue, ``QueueUnavailable`` when a call fails.
        """
        source = self._dead_letter()
        counts = RedriveCounts()
        seen: set[str] = set()
        with self._handed_back(source) as skipped:
            while counts.moved + counts.failed < limit:
                want = min(SQS_BATCH_LIMIT, limit - counts.moved - counts.failed)
                batch = self._receive_raw(
                    source, want, REDRIVE_WAIT_SECONDS, self.visibility_timeout
                )
                fresh = [m for m in batch if m.get("MessageId") not in seen]
                if not fresh:
                    break
                seen.update(str(m.get("MessageId")) for m in fresh)
                chosen = [_received(m) for m in fresh if _of_reason(m, reason)]
                others = [m["ReceiptHandle"] for m in fresh if not _of_reason(m, reason)]
                skipped += others
                moved = self._move_back(source, chosen)
                counts.moved += moved
                counts.failed += len(chosen) - moved
                counts.skipped += len(others)
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
        batch = self._receive_raw(url, max_messages, wait_seconds, self.visibility_timeout)
        return [_received(message) for message in batch]

    def _receive_raw(
        self, url: str, max_messages: int, wait_seconds: int, visibility: int
    ) -> list[dict[str, Any]]:
        """ReceiveMessage with the system attributes (and, from the dead-letter queue,
        the message attributes); the messages as SQS answered them."""
        params: Entry = {
            "QueueUrl": url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_seconds,
            "VisibilityTimeout": visibility,
            "MessageSystemAttributeNames": SYSTEM_ATTRIBUTES,
        }
        if url == self.dead_letter_url:
            params["MessageAttributeNames"] = ["All"]
        reply = self.calls.call("ReceiveMessage", params)
        return list(reply.get("Messages") or ())

    @contextmanager
    def _handed_back(self, url: str) -> Iterator[list[str]]:
        """Receipts put in the yielded list are made visible again on the way out, even a
        failing one (then as well as the queue lets: the failure is what is raised). A
        receipt the queue refuses was deleted meanwhile, or its message is visible again."""
        receipts: list[str] = []
        try:
            yield receipts
        except BaseException:
            with suppress(QueueUnavailable):
                self._by_receipt("ChangeMessageVisibilityBatch", url, receipts, _VISIBLE)
            raise
        self._by_receipt("ChangeMessageVisibilityBatch", url, receipts, _VISIBLE)

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
        if not messages:
            return 0
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


def _string_attribute(message: dict[str, Any], name: str) -> str | None:
    value = (message.get("MessageAttributes") or {}).get(name) or {}
    text = value.get("StringValue")
    return text if isinstance(text, str) else None


def _reason(message: dict[str, Any]) -> str | None:
    return _string_attribute(message, REASON)


def _of_reason(message: dict[str, Any], reason: str | None) -> bool:
    """True when the message was parked for ``reason``, or no reason is asked for."""
    return reason is None or _reason(message) == reason


def _parked(message: dict[str, Any]) -> Parked:
    received = _received(message)
    return Parked(
        message_id=received.message_id,
        body=received.body,
        reason=_reason(message),
        detail=_string_attribute(message, DETAIL),
        contract_id=_string_attribute(message, MESSAGE_ID),
        sent_at=received.sent_at,
        receive_count=received.receive_count,
    )
