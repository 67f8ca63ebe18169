"""One contract, three queues: ``SqsQueue`` on moto and on an SQS server that refuses
what SQS refuses (``bench.sqs_server``), and the in-memory fake.

What the consumer relies on: receive hands over bodies unchanged with a receipt,
the queue's id, the time SQS accepted it and how often it was received; a
received message stays hidden until it is released or its visibility timeout
passes; delete and release answer the receipts they refused; park sends the body
unchanged to the dead-letter queue with sanitised attributes, and reports what
the dead-letter queue refused instead of raising. What the operator's commands
and the dev tools rely on: send hands bodies over unchanged, in batches, and names
a message the queue refuses; peek lists the dead-letter queue with each message's
reason and leaves every one there, visible; redrive moves the dead-letter queue
back (or only the messages of one reason), deleting only what was sent; depth
counts what is visible, in flight and delayed. ``SqsQueue`` alone probes the
rights to receive, delete and hand back without changing a message (doctor).

Parking has a fallback for each way SQS refuses (``cache_pipeline.sqs.client``):
a batch refused as a whole is sent one by one; a message refused with its
attributes is sent with its reason alone; one refused even so is reported. moto
neither counts attributes into a message's size nor checks their characters, so
the branches that depend on it run against the strict server and the fake.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.sqs.client import SqsQueue
from cache_pipeline.sqs.queue import Poison, Queue, QueueDepth, Received, RedriveCounts
from cache_pipeline.sqs.wire import SignedCalls
from tests.support.memory_queue import MemoryQueue
from tests.support.servers import SqsServer, StrictSqsServer, wait_until

BODIES = ['{"id":"a","n":1}', "héllo wörld ✓ 𝄞", "<xml>&amp;</xml>", "x" * 5000]
DLQ_MAX = 1024  # the smallest MaximumMessageSize SQS allows


@dataclass
class Backend:
    """A queue client and what the test needs to look behind it."""

    client: Queue
    parked: Callable[[], list[tuple[str, dict[str, str]]]]
    send_to_dlq: Callable[[str, dict[str, str]], str | None] | None = None  # SQS's answer


def all_parked(backend: Backend, count: int) -> dict[str, dict[str, str]]:
    """``{body: attributes}`` of the ``count`` (distinct) bodies in the dead-letter queue."""
    seen: dict[str, dict[str, str]] = {}

    def enough() -> bool:
        seen.update(backend.parked())
        return len(seen) >= count

    wait_until(enough, timeout=20, what=f"{count} parked messages")
    assert len(seen) == count, sorted(body[:20] for body in seen)
    return seen


def receive_all(client: Queue, count: int) -> list[Received]:
    received: list[Received] = []

    def more() -> bool:
        received.extend(client.receive(10, 1))
        return len(received) >= count

    wait_until(more, timeout=20, what=f"{count} messages")
    return received


def _sqs(server: SqsServer, queue: dict[str, str], dlq: dict[str, str]) -> Iterator[Backend]:
    """``SqsQueue`` on ``server``, with a fresh queue and dead-letter queue of these attributes."""
    boto = server.client()
    name = f"contract-{uuid.uuid4().hex[:8]}"
    queue_attributes: Any = {"VisibilityTimeout": "30", **queue}
    dlq_attributes: Any = dlq
    url = boto.create_queue(QueueName=name, Attributes=queue_attributes)["QueueUrl"]
    dlq_url = boto.create_queue(QueueName=name + "-dlq", Attributes=dlq_attributes)["QueueUrl"]
    client = server.queue(url, dead_letter_url=dlq_url, visibility_timeout=30)

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

    def send_to_dlq(body: str, attrs: dict[str, str]) -> str | None:
        """Send straight to the dead-letter queue: None when taken, else SQS's code."""
        entry: dict[str, Any] = {"Id": "0", "MessageBody": body}
        entry["MessageAttributes"] = {
            k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()
        }
        reply = client.calls.call("SendMessageBatch", {"QueueUrl": dlq_url, "Entries": [entry]})
        failed = reply.get("Failed") or []
        return str(failed[0]["Code"]) if failed else None

    yield Backend(client, parked, send_to_dlq)
    client.close()
    for queue_url in (url, dlq_url):
        boto.delete_queue(QueueUrl=queue_url)
    boto.close()


def _memory(**options: Any) -> Iterator[Backend]:
    queue = MemoryQueue(**options)

    def parked() -> list[tuple[str, dict[str, str]]]:
        return [(m.body, m.attributes) for m in queue.parked()]

    yield Backend(queue, parked)


def _server(request: pytest.FixtureRequest) -> SqsServer:
    """The session's moto server ("moto") or its strict SQS server ("strict")."""
    name = "sqs_server" if request.param == "moto" else "strict_sqs_server"
    server = request.getfixturevalue(name)
    assert isinstance(server, SqsServer)
    return server


@pytest.fixture(params=["moto", "strict", "memory"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield from _memory()
    else:
        yield from _sqs(_server(request), {}, {})


@pytest.fixture(params=["moto", "strict", "memory"])
def small_dlq(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A backend whose dead-letter queue takes messages of at most DLQ_MAX bytes."""
    if request.param == "memory":
        yield from _memory(dlq_max_bytes=DLQ_MAX)
    else:
        yield from _sqs(_server(request), {}, {"MaximumMessageSize": str(DLQ_MAX)})


@pytest.fixture(params=["moto", "strict"])
def small_queue(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """``SqsQueue`` whose queue takes messages of at most DLQ_MAX bytes (its DLQ any size)."""
    yield from _sqs(_server(request), {"MaximumMessageSize": str(DLQ_MAX)}, {})


@pytest.fixture
def strict(strict_sqs_server: StrictSqsServer) -> Iterator[Backend]:
    """``SqsQueue`` on the strict server alone."""
    yield from _sqs(strict_sqs_server, {}, {})


@pytest.fixture(params=["strict", "memory"])
def counting_dlq(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A dead-letter queue of DLQ_MAX bytes that counts attributes into a message's size.

    SQS does (name, data type and value), and so do the strict server and the
    fake; moto counts the body alone, so it takes what SQS refuses.
    """
    if request.param == "memory":
        yield from _memory(dlq_max_bytes=DLQ_MAX)
    else:
        yield from _sqs(_server(request), {}, {"MaximumMessageSize": str(DLQ_MAX)})


def poison(body: str, message_id: str | None = "a\x01b\uffff") -> Poison:
    return Poison(body, "invalid_field", "id 'a\x01b' \ud800", message_id, "sqs-1")


def poison_of(reason: str, count: int) -> list[Poison]:
    """``count`` poison messages parked for ``reason``, each with its own body and id."""
    return [
        Poison(f"{reason}-{i}", reason, f"{reason} detail {i}", f"id-{reason}-{i}", f"s-{i}")
        for i in range(count)
    ]


def park_all(backend: Backend, poison: list[Poison]) -> None:
    """Park ``poison`` and wait until the dead-letter queue shows every message."""
    assert backend.client.park(poison) == [None] * len(poison)
    wait_until(
        lambda: backend.client.depth(dead_letter=True).visible == len(poison),
        what=f"{len(poison)} messages in the dead-letter queue",
    )


def test_receive_hands_over_bodies_with_receipts_ids_and_times(backend: Backend) -> None:
    before = time.time()
    assert backend.client.send(BODIES) == len(BODIES)
    received = receive_all(backend.client, len(BODIES))
    assert sorted(r.body for r in received) == sorted(BODIES)
    assert len({r.receipt for r in received}) == len(BODIES)
    assert all(r.message_id for r in received)
    assert all(r.receive_count == 1 for r in received)
    assert all(
        r.sent_at is not None and before - 5 <= r.sent_at <= time.time() + 5 for r in received
    )


def test_a_received_message_stays_hidden_until_released(backend: Backend) -> None:
    backend.client.send(["one", "two", "three"])
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
    backend.client.send(["kept"])
    (received,) = receive_all(backend.client, 1)
    assert backend.client.delete(["not-a-receipt", received.receipt]) == ["not-a-receipt"]
    assert backend.client.release(["not-a-receipt"], 0) == ["not-a-receipt"]


SANITISED = {
    "reason": "invalid_field",
    "detail": "id 'a\ufffdb' \ufffd",
    "messageId": "a\ufffdb\ufffd",
    "sourceMessageId": "sqs-1",
}


def test_park_sends_the_body_unchanged_with_sanitised_attributes(backend: Backend) -> None:
    """Every attribute, sanitised: the first send was taken (no fallback strips them)."""
    body = '{"id": "a\\u0001b", "type": 5}'
    assert backend.client.park([poison(body)]) == [None]
    (parked,) = wait_until(backend.parked, what="the parked message")
    assert parked[0] == body
    assert parked[1] == SANITISED


def test_sqs_refuses_the_raw_attributes_the_sanitised_ones_are_parked_whole(
    strict: Backend,
) -> None:
    """Against a server that refuses what SQS refuses, sanitising is what gets them in."""
    assert strict.send_to_dlq is not None
    raw = {"reason": "invalid_field", "detail": "id 'a\x01b'", "messageId": "a\x01b\uffff"}
    assert strict.send_to_dlq("raw", raw) == "InvalidParameterValue"
    body = '{"id": "a\\u0001b", "type": 5}'
    assert strict.client.park([poison(body)]) == [None]
    assert all_parked(strict, 1) == {body: SANITISED}


def test_what_the_dead_letter_queue_refuses_is_reported_and_the_rest_parked(
    small_dlq: Backend,
) -> None:
    """Too long even with its reason alone: reported (the consumer leaves it), not raised."""
    small, big = "s" * 100, "b" * (DLQ_MAX + 1)
    refusals = small_dlq.client.park([poison(small), poison(big)])
    assert refusals[0] is None
    assert refusals[1] is not None
    assert "InvalidParameterValue" in refusals[1]  # what the dead-letter queue answered
    assert all_parked(small_dlq, 1) == {small: SANITISED}


def test_a_message_too_big_with_its_attributes_is_parked_with_its_reason_alone(
    counting_dlq: Backend,
) -> None:
    """984 bytes fit with the reason (1,009 as SQS counts) but not with every attribute."""
    body = "m" * (DLQ_MAX - 40)
    assert counting_dlq.client.park([poison(body, message_id="x" * 200)]) == [None]
    assert all_parked(counting_dlq, 1) == {body: {"reason": "invalid_field"}}


def test_each_message_of_a_batch_gets_the_fallback_it_needs(counting_dlq: Backend) -> None:
    """Whole, reason alone, refused: each entry SQS refuses is answered for on its own."""
    whole, bare, refused = "s" * 100, "m" * (DLQ_MAX - 40), "b" * (DLQ_MAX + 1)
    refusals = counting_dlq.client.park([poison(whole), poison(bare), poison(refused)])
    assert refusals[:2] == [None, None]
    assert refusals[2] is not None
    assert "InvalidParameterValue" in refusals[2]
    assert all_parked(counting_dlq, 2) == {whole: SANITISED, bare: {"reason": "invalid_field"}}


def test_a_batch_refused_as_a_whole_is_parked_one_by_one(backend: Backend) -> None:
    """Five 250,000-byte messages: each fits, together they are more than a batch may hold."""
    bodies = [f"{i}" + "b" * 249_999 for i in range(5)]
    assert backend.client.park([poison(body) for body in bodies]) == [None] * 5
    parked = all_parked(backend, 5)
    assert sorted(parked) == bodies
    assert all(attrs == SANITISED for attrs in parked.values())


def test_without_a_dead_letter_queue_nothing_is_parked_or_moved() -> None:
    queue = MemoryQueue(dead_letter=False)
    sqs = SqsQueue(SignedCalls("http://127.0.0.1:1", "us-east-1"), "http://127.0.0.1:1/1/q")
    for client in (queue, sqs):
        assert not client.has_dead_letter
        assert client.park([poison("x")]) == ["no dead-letter queue is configured"]
        with pytest.raises(ValueError, match="no dead-letter queue"):
            client.redrive(10)
        with pytest.raises(ValueError, match="no dead-letter queue"):
            client.depth(dead_letter=True)


def test_send_hands_the_bodies_over_unchanged_in_batches(backend: Backend) -> None:
    bodies = [f"{i}:{body}" for i in range(6) for body in BODIES]  # 24: three batches
    assert backend.client.send(iter(bodies)) == len(bodies)
    assert sorted(r.body for r in receive_all(backend.client, len(bodies))) == sorted(bodies)


def test_a_batch_too_long_as_a_whole_is_sent_one_by_one(backend: Backend) -> None:
    """Five 250,000-byte messages: each fits, together they are more than a batch may hold."""
    bodies = [f"{i}" + "b" * 249_999 for i in range(5)]
    assert backend.client.send(bodies) == 5
    assert sorted(r.body for r in receive_all(backend.client, 5)) == bodies


def test_a_message_the_queue_refuses_is_named(strict: Backend) -> None:
    with pytest.raises(QueueUnavailable) as caught:
        strict.client.send(["first", "second", "third \x01", "fourth"])
    assert caught.value.fault is QueueFault.REFUSED
    assert "message 3 was refused" in caught.value.detail
    assert "InvalidMessageContents" in caught.value.detail


def test_depth_counts_visible_and_in_flight(backend: Backend) -> None:
    assert backend.client.depth() == QueueDepth(0, 0, 0)
    backend.client.send(["one", "two", "three"])
    wait_until(lambda: backend.client.depth() == QueueDepth(3, 0, 0), what="three visible")
    (first,) = backend.client.receive(1, 1)
    assert backend.client.depth() == QueueDepth(2, 1, 0)
    assert backend.client.release([first.receipt], 0) == []
    assert backend.client.depth() == QueueDepth(3, 0, 0)
    received = receive_all(backend.client, 3)
    assert backend.client.delete([r.receipt for r in received]) == []
    assert backend.client.depth() == QueueDepth(0, 0, 0)
    assert backend.client.depth().total == 0


def test_depth_counts_delayed_messages(sqs_server: SqsServer) -> None:
    """moto delays messages (the strict server and the fake do not)."""
    boto = sqs_server.client()
    url = boto.create_queue(QueueName=f"delayed-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    boto.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    boto.send_message(QueueUrl=url, MessageBody="now")
    queue = sqs_server.queue(url)
    try:
        assert queue.depth() == QueueDepth(visible=1, in_flight=0, delayed=1)
        assert queue.depth().total == 2
    finally:
        queue.close()
        boto.delete_queue(QueueUrl=url)
        boto.close()


def test_redrive_moves_the_dead_letter_queue_back_unchanged(backend: Backend) -> None:
    bodies = [f"{i}:{body}" for i in range(3) for body in BODIES]  # 12: more than a batch
    assert backend.client.park([poison(body) for body in bodies]) == [None] * len(bodies)
    wait_until(
        lambda: backend.client.depth(dead_letter=True).visible == len(bodies),
        what="every message in the dead-letter queue",
    )
    assert backend.client.redrive(1000) == RedriveCounts(moved=len(bodies), failed=0)
    assert backend.client.depth(dead_letter=True) == QueueDepth(0, 0, 0)
    assert sorted(r.body for r in receive_all(backend.client, len(bodies))) == sorted(bodies)


def test_redrive_stops_at_its_limit(backend: Backend) -> None:
    assert backend.client.park([poison(f"m{i}") for i in range(5)]) == [None] * 5
    wait_until(
        lambda: backend.client.depth(dead_letter=True).visible == 5,
        what="five messages in the dead-letter queue",
    )
    assert backend.client.redrive(3) == RedriveCounts(moved=3, failed=0)
    assert backend.client.depth(dead_letter=True) == QueueDepth(2, 0, 0)
    assert len(receive_all(backend.client, 3)) == 3


def test_redrive_leaves_what_the_queue_refuses_in_the_dead_letter_queue(
    small_queue: Backend,
) -> None:
    """Sent first, deleted only once sent: a message the queue refuses stays where it was."""
    small, big = "s" * 100, "b" * (DLQ_MAX + 1)
    assert small_queue.client.park([poison(small), poison(big)]) == [None, None]
    wait_until(
        lambda: small_queue.client.depth(dead_letter=True).visible == 2,
        what="two messages in the dead-letter queue",
    )
    assert small_queue.client.redrive(10) == RedriveCounts(moved=1, failed=1)
    assert [r.body for r in receive_all(small_queue.client, 1)] == [small]
    assert small_queue.client.depth(dead_letter=True) == QueueDepth(0, 1, 0)  # hidden, not gone


def test_peek_lists_the_dead_letter_queue_and_leaves_every_message_visible(
    backend: Backend,
) -> None:
    """13 messages: more than one receive; each listed once, with what parked it."""
    before = time.time()
    parked = poison_of("invalid_field", 8) + poison_of("not_json", 5)
    park_all(backend, parked)
    listed = backend.client.peek(100)
    assert sorted(p.body for p in listed) == sorted(p.body for p in parked)
    assert len({p.message_id for p in listed}) == len(parked)
    by_body = {p.body: p for p in listed}
    for item in parked:
        seen = by_body[item.body]
        assert (seen.reason, seen.detail, seen.contract_id) == (
            item.reason,
            item.detail,
            item.message_id,
        )
        assert seen.receive_count >= 1
        assert seen.sent_at is not None
        assert before - 5 <= seen.sent_at <= time.time() + 5
    assert backend.client.depth(dead_letter=True) == QueueDepth(len(parked), 0, 0)
    again = {p.message_id: p.receive_count for p in backend.client.peek(100)}
    assert again == {p.message_id: p.receive_count + 1 for p in listed}  # a listing receives


def test_peek_stops_at_its_limit_and_lists_one_reason_when_asked(backend: Backend) -> None:
    park_all(backend, poison_of("invalid_field", 6) + poison_of("not_json", 4))
    first = backend.client.peek(5)
    assert len(first) == len({p.message_id for p in first}) == 5
    not_json = backend.client.peek(100, reason="not_json")
    assert sorted(p.body for p in not_json) == [f"not_json-{i}" for i in range(4)]
    assert backend.client.peek(100, reason="unknown_type") == []
    assert backend.client.depth(dead_letter=True) == QueueDepth(10, 0, 0)


def test_redrive_of_one_reason_moves_only_it_and_leaves_the_others_visible(
    backend: Backend,
) -> None:
    park_all(backend, poison_of("invalid_field", 12) + poison_of("not_json", 3))
    counts = backend.client.redrive(100, reason="not_json")
    assert counts == RedriveCounts(moved=3, failed=0, skipped=12)
    assert sorted(r.body for r in receive_all(backend.client, 3)) == [
        f"not_json-{i}" for i in range(3)
    ]
    assert backend.client.depth(dead_letter=True) == QueueDepth(12, 0, 0)
    left = backend.client.peek(100)
    assert {p.reason for p in left} == {"invalid_field"}


def test_peek_without_a_dead_letter_queue_is_refused() -> None:
    with pytest.raises(ValueError, match="no dead-letter queue"):
        MemoryQueue(dead_letter=False).peek(10)
    sqs = SqsQueue(SignedCalls("http://127.0.0.1:1", "us-east-1"), "http://127.0.0.1:1/1/q")
    with pytest.raises(ValueError, match="no dead-letter queue"):
        sqs.peek(10)


@pytest.fixture(params=["moto", "strict"])
def sqs_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    yield from _sqs(_server(request), {}, {})


def test_the_probes_change_no_message(sqs_backend: Backend) -> None:
    client = sqs_backend.client
    assert isinstance(client, SqsQueue)
    assert client.probe_receive() == 0
    client.probe_settle()
    client.send(["kept"])
    wait_until(lambda: client.depth() == QueueDepth(1, 0, 0), what="one visible")
    assert client.probe_receive() == 1
    client.probe_settle()
    assert client.depth() == QueueDepth(1, 0, 0)  # not hidden, not deleted
    (received,) = receive_all(client, 1)
    assert (received.body, received.receive_count) == ("kept", 2)  # the probe counted


def test_the_probes_of_a_missing_queue_say_so(sqs_server: SqsServer) -> None:
    queue = sqs_server.queue(f"{sqs_server.endpoint}/000000000000/missing-{uuid.uuid4().hex[:8]}")
    try:
        for probe in (queue.probe_receive, queue.probe_settle):
            with pytest.raises(QueueUnavailable) as caught:
                probe()
            assert caught.value.fault is QueueFault.MISSING_QUEUE
    finally:
        queue.close()
