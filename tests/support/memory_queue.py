"""An in-memory ``Queue``: a queue, its visibility timeouts and a dead-letter queue.

It behaves as ``SqsQueue`` does against a real SQS server (the contract suite,
``tests/test_queue_contract.py``, runs against both), so the consumer's settle
logic can be tested without starting processes. Faults are set by hand:
``fail`` makes an operation raise ``QueueUnavailable`` until cleared, and a
dead-letter queue with ``dlq_max_bytes`` refuses what does not fit (attributes
counted, name, data type and value, as SQS counts them). Its dead-letter queue
has no visibility: ``peek`` counts a receive of every message and hides nothing,
a filtered ``redrive`` skips every message of another reason.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.sqs.dlq import DETAIL, MESSAGE_ID, REASON, attributes
from cache_pipeline.sqs.queue import Parked, Poison, QueueDepth, Received, RedriveCounts


@dataclass
class Stored:
    """A message in the queue."""

    body: str
    message_id: str
    sent_at: float
    visible_at: float = 0.0
    receipt: str | None = None
    receive_count: int = 0
    attributes: dict[str, str] = field(default_factory=dict)


class MemoryQueue:
    """A ``Queue`` whose queue and dead-letter queue live in this process."""

    def __init__(
        self,
        *,
        visibility_timeout: int = 30,
        dead_letter: bool = True,
        dlq_max_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.visibility_timeout = visibility_timeout
        self.messages: list[Stored] = []
        self.dead_letter: list[Stored] | None = [] if dead_letter else None
        self.dlq_max_bytes = dlq_max_bytes
        self.failing: dict[str, QueueFault] = {}
        self.calls: list[str] = []
        self._clock = clock
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- the test's side -------------------------------------------------------------------

    def fail(self, operation: str, fault: QueueFault | None) -> None:
        """Make ``operation`` (a method of ``Queue``) raise, or stop raising (None)."""
        if fault is None:
            self.failing.pop(operation, None)
        else:
            self.failing[operation] = fault

    def bodies(self) -> list[str]:
        """Every message still in the queue, visible or not."""
        return [m.body for m in self.messages]

    def parked(self) -> list[Stored]:
        return list(self.dead_letter or [])

    # -- QueueClient -----------------------------------------------------------------------

    @property
    def has_dead_letter(self) -> bool:
        return self.dead_letter is not None

    def receive(self, max_messages: int, wait_seconds: int) -> list[Received]:
        self._call("receive")
        with self._lock:
            now = self._clock()
            visible = [m for m in self.messages if m.visible_at <= now][:max_messages]
            for message in visible:
                message.receipt = f"{message.message_id}/{next(self._ids)}"
                message.visible_at = now + self.visibility_timeout
                message.receive_count += 1
            return [
                Received(m.receipt, m.body, m.message_id, m.sent_at, m.receive_count)
                for m in visible
                if m.receipt is not None
            ]

    def delete(self, receipts: Sequence[str]) -> list[str]:
        self._call("delete")
        with self._lock:
            held = {m.receipt: m for m in self.messages if m.receipt is not None}
            refused = [r for r in receipts if r not in held]
            gone = {id(held[r]) for r in receipts if r in held}
            self.messages = [m for m in self.messages if id(m) not in gone]
            return refused

    def release(self, receipts: Sequence[str], after_seconds: int) -> list[str]:
        self._call("release")
        with self._lock:
            held = {m.receipt: m for m in self.messages if m.receipt is not None}
            for receipt in receipts:
                if receipt in held:
                    held[receipt].visible_at = self._clock() + after_seconds
            return [r for r in receipts if r not in held]

    def park(self, poison: Sequence[Poison]) -> list[str | None]:
        self._call("park")
        if self.dead_letter is None:
            return ["no dead-letter queue is configured"] * len(poison)
        return [self._park_one(item) for item in poison]

    def send(self, bodies: Iterable[str]) -> int:
        self._call("send")
        with self._lock:
            added = [Stored(body, f"m-{next(self._ids)}", sent_at=time.time()) for body in bodies]
            self.messages += added
            return len(added)

    def peek(self, limit: int, *, reason: str | None = None) -> list[Parked]:
        self._call("peek")
        if self.dead_letter is None:
            raise ValueError("no dead-letter queue is configured")
        with self._lock:
            for message in self.dead_letter:
                message.receive_count += 1  # every listing receives, as on SQS
            chosen = [m for m in self.dead_letter if _of_reason(m, reason)][:limit]
            return [_parked(m) for m in chosen]

    def redrive(self, limit: int, *, reason: str | None = None) -> RedriveCounts:
        self._call("redrive")
        if self.dead_letter is None:
            raise ValueError("no dead-letter queue is configured")
        with self._lock:
            chosen = [m for m in self.dead_letter if _of_reason(m, reason)][:limit]
            taken = {id(m) for m in chosen}
            self.dead_letter = [m for m in self.dead_letter if id(m) not in taken]
            skipped = len(self.dead_letter) if reason is not None else 0
        self.send(m.body for m in chosen)
        return RedriveCounts(moved=len(chosen), skipped=skipped)

    def depth(self, *, dead_letter: bool = False) -> QueueDepth:
        self._call("depth")
        if dead_letter:
            if self.dead_letter is None:
                raise ValueError("no dead-letter queue is configured")
            return QueueDepth(len(self.dead_letter), 0, 0)
        with self._lock:
            now = self._clock()
            visible = sum(1 for m in self.messages if m.visible_at <= now)
            return QueueDepth(visible, len(self.messages) - visible, 0)

    def close(self) -> None:
        self.calls.append("close")

    def _park_one(self, item: Poison) -> str | None:
        full = {k: v["StringValue"] for k, v in attributes(item).items()}
        for attrs in (full, {REASON: full[REASON]}):
            if self._fits(item.body, attrs):
                assert self.dead_letter is not None
                self.dead_letter.append(  # a new message: an id of its own, as on SQS
                    Stored(item.body, f"d-{next(self._ids)}", time.time(), attributes=attrs)
                )
                return None
        return f"InvalidParameterValue: the message is longer than {self.dlq_max_bytes} bytes"

    def _fits(self, body: str, attrs: dict[str, Any]) -> bool:
        if self.dlq_max_bytes is None:
            return True
        # SQS counts each attribute's name, data type ("String") and value.
        size = len(body.encode()) + sum(
            len(k.encode()) + len("String") + len(str(v).encode()) for k, v in attrs.items()
        )
        return size <= self.dlq_max_bytes

    def _call(self, operation: str) -> None:
        self.calls.append(operation)
        fault = self.failing.get(operation)
        if fault is not None:
            raise QueueUnavailable(fault, f"{operation}: injected by the test")


def _of_reason(message: Stored, reason: str | None) -> bool:
    return reason is None or message.attributes.get(REASON) == reason


def _parked(message: Stored) -> Parked:
    return Parked(
        message_id=message.message_id,
        body=message.body,
        reason=message.attributes.get(REASON),
        detail=message.attributes.get(DETAIL),
        contract_id=message.attributes.get(MESSAGE_ID),
        sent_at=message.sent_at,
        receive_count=message.receive_count,
    )
