"""One contract, two queues: ``SqsQueue`` on the suite's SQS server and the in-memory fake.

What the consumer relies on: receive hands over bodies unchanged with a receipt,
the queue's id, the time SQS accepted it and how often it was received; a
received message stays hidden until it is released or its visibility timeout
passes; delete and release answer the receipts they refused; park sends the body
unchanged to the dead-letter queue with sanitised attributes, and reports what
the dead-letter queue refused instead of raising.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cache_pipeline.queue import Poison, QueueClient, Received
from cache_pipeline.sqs_queue import SqsQueue
from cache_pipeline.sqs_wire import SignedCalls
from tests.support.memory_queue import MemoryQueue
from tests.support.servers import AWS_TEST_ENV, SqsServer, wait_until
from tests.support.worker import send

BODIES = ['{"id":"a","n":1}', "héllo wörld ✓ 𝄞", "<xml>&amp;</xml>", "x" * 5000]
DLQ_MAX = 1024  # the smallest MaximumMessageSize SQS allows


@dataclass
class Backend:
    """A queue client and what the test needs to look behind it."""

    client: QueueClient
    send: Callable[[list[str]], None]
    parked: Callable[[], list[tuple[str, dict[str, str]]]]


def receive_all(client: QueueClient, count: int) -> list[Received]:
    received: list[Received] = []

    def more() -> bool:
        received.extend(client.receive(10, 1))
        return len(received) >= count

    wait_until(more, timeout=20, what=f"{count} messages")
    return received


def _sqs(sqs_server: SqsServer, monkeypatch: pytest.MonkeyPatch, **dlq: str) -> Iterator[Backend]:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    boto = sqs_server.client()
    name = f"contract-{uuid.uuid4().hex[:8]}"
    url = boto.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    dlq_url = boto.create_queue(QueueName=name + "-dlq", Attributes=dlq)["QueueUrl"]  # type: ignore[arg-type]
    calls = SignedCalls(sqs_server.endpoint, "us-east-1")
    client = SqsQueue(calls, url, dead_letter_url=dlq_url, visibility_timeout=30)

    def parked() -> list[tuple[str, dict[str, str]]]:
        reply = boto.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        return [
            (m["Body"], {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()})
            for m in reply.get("Messages", [])
        ]

    def put(bodies: list[str]) -> None:
        send(boto, url, bodies)

    yield Backend(client, put, parked)
    client.close()
    for queue in (url, dlq_url):
        boto.delete_queue(QueueUrl=queue)


def _memory(**options: Any) -> Iterator[Backend]:
    queue = MemoryQueue(**options)

    def parked() -> list[tuple[str, dict[str, str]]]:
        return [(m.body, m.attributes) for m in queue.parked()]

    yield Backend(queue, lambda bodies: queue.send(*bodies), parked)


@pytest.fixture(params=["sqs", "memory"])
def backend(
    request: pytest.FixtureRequest, sqs_server: SqsServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    if request.param == "sqs":
        yield from _sqs(sqs_server, monkeypatch)
    else:
        yield from _memory()


@pytest.fixture(params=["sqs", "memory"])
def small_dlq(
    request: pytest.FixtureRequest, sqs_server: SqsServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    """A backend whose dead-letter queue takes messages of at most DLQ_MAX bytes."""
    if request.param == "sqs":
        yield from _sqs(sqs_server, monkeypatch, MaximumMessageSize=str(DLQ_MAX))
    else:
        yield from _memory(dlq_max_bytes=DLQ_MAX)


def poison(body: str, message_id: str | None = "a\x01b\uffff") -> Poison:
    return Poison(body, "invalid_field", "id 'a\x01b' \ud800", message_id, "sqs-1")


def test_receive_hands_over_bodies_with_receipts_ids_and_times(backend: Backend) -> None:
    before = time.time()
    backend.send(BODIES)
    received = receive_all(backend.client, len(BODIES))
    assert sorted(r.body for r in received) == sorted(BODIES)
    assert len({r.receipt for r in received}) == len(BODIES)
    assert all(r.message_id for r in received)
    assert all(r.receive_count == 1 for r in received)
    assert all(
        r.sent_at is not None and before - 5 <= r.sent_at <= time.time() + 5 for r in received
    )


def test_a_received_message_stays_hidden_until_released(backend: Backend) -> None:
    backend.send(["one", "two", "three"])
    first = receive_all(backend.client, 3)
    assert backend.client.receive(10, 0) == []
    by_body = {r.body: r.receipt for r in first}
    assert backend.client.delete([by_body["one"], by_body["two"]]) == []
    assert backend.client.release([by_body["three"]], 0) == []
    (again,) = receive_all(backend.client, 1)
    assert (again.body, again.receive_count) == ("three", 2)
    assert backend.client.delete([again.receipt]) == []
    assert backend.client.receive(10, 0) == []


def test_a_receipt_the_queue_does_not_know_is_reported_not_raised(backend: Backend) -> None:
    backend.send(["kept"])
    (received,) = receive_all(backend.client, 1)
    assert backend.client.delete(["not-a-receipt", received.receipt]) == ["not-a-receipt"]
    assert backend.client.release(["not-a-receipt"], 0) == ["not-a-receipt"]


def test_park_sends_the_body_unchanged_with_sanitised_attributes(backend: Backend) -> None:
    body = '{"id": "a\\u0001b", "type": 5}'
    assert backend.client.park([poison(body)]) == [None]
    (parked,) = wait_until(backend.parked, what="the parked message")
    assert parked[0] == body
    assert parked[1] == {
        "reason": "invalid_field",
        "detail": "id 'a\ufffdb' \ufffd",
        "messageId": "a\ufffdb\ufffd",
        "sourceMessageId": "sqs-1",
    }


def test_what_the_dead_letter_queue_refuses_is_reported_and_the_rest_parked(
    small_dlq: Backend,
) -> None:
    small, big = "s" * 100, "b" * (DLQ_MAX + 1)
    refusals = small_dlq.client.park([poison(small), poison(big)])
    assert refusals[0] is None
    assert refusals[1]  # what the dead-letter queue answered
    assert [body for body, _ in wait_until(small_dlq.parked, what="parked")] == [small]


def test_a_message_too_big_with_its_attributes_is_parked_with_its_reason_alone(
    small_dlq: Backend,
) -> None:
    """SQS counts attributes into a message's size; the fake does too (moto does not)."""
    body = "m" * (DLQ_MAX - 40)
    assert small_dlq.client.park([poison(body, message_id="x" * 200)]) == [None]
    ((parked_body, attrs),) = wait_until(small_dlq.parked, what="parked")
    assert parked_body == body
    assert attrs["reason"] == "invalid_field"


def test_without_a_dead_letter_queue_nothing_is_parked() -> None:
    queue = MemoryQueue(dead_letter=False)
    assert not queue.has_dead_letter
    assert queue.park([poison("x")]) == ["no dead-letter queue is configured"]
    sqs = SqsQueue(SignedCalls("http://127.0.0.1:1", "us-east-1"), "http://127.0.0.1:1/1/q")
    assert not sqs.has_dead_letter
    assert sqs.park([poison("x")]) == ["no dead-letter queue is configured"]
