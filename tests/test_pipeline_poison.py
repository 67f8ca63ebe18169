"""Poison messages: parked (DLQ with its reason, or left for the redrive policy), never blocking."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import TIMESTAMP_SUFFIX, KeyLayout
from cache_pipeline.tasks.handlers import TASK_NAMES
from tests.support import factory
from tests.support.servers import RedisServer, SqsServer, StrictSqsServer, wait_until
from tests.support.worker import (
    WorkerProcess,
    Workers,
    create_queue,
    expected_state,
    queue_depth,
    send,
    send_task,
    wait_for_state,
    worker_env,
)

FAILED = "persistent_cache_messages_failed_total"
PARKED = "persistent_cache_messages_parked_total"
REFUSED = "persistent_cache_dlq_refused_total"


def poison_bodies(prefix: str) -> dict[str, list[str]]:
    """Bodies of every poison reason, keyed by the reason the worker must give."""
    unknown = factory.usage("cus-1", 500, "seats", 1) | {"type": "usage.exploded"}
    missing = factory.usage("cus-1", 501, "seats", 1)
    del missing["data"]["featureId"]
    wrong_type = factory.usage("cus-1", 502, "seats", 1)
    wrong_type["timestamp"] = "yesterday"
    elsewhere = factory.usage("cus-1", 503, "seats", 1, environment=f"not-{prefix}")
    year_9999 = factory.usage("cus-1", 253402300799000, "seats", 9)
    c1_control = factory.usage("cus\u0085x", 504, "seats", 1)  # NEL: ids hold no control character
    return {
        "not_json": ["{this is not json", "[1, 2]"],
        "unknown_type": [json.dumps(unknown)],
        "invalid_field": [json.dumps(missing), json.dumps(wrong_type)],
        "wrong_environment": [json.dumps(elsewhere)],
        "timestamp_in_future": [json.dumps(year_9999)],
        "unsafe_id": [json.dumps(c1_control)],
    }


@pytest.fixture
def dlq_url(sqs_server: SqsServer) -> str:
    """A dead-letter queue of the test's own."""
    return create_queue(sqs_server.client())


def mixed(prefix: str) -> tuple[list[dict[str, Any]], list[str], dict[str, list[str]]]:
    """Valid messages with every kind of poison between them."""
    valid = [
        factory.entitlements("cus-1", 100, features={"seats": 1}),
        factory.usage("cus-1", 200, "seats", 2),
        factory.credits("cus-1", 300, "ai", 3),
    ]
    poison = poison_bodies(prefix)
    flat = [body for bodies in poison.values() for body in bodies]
    texts = [json.dumps(valid[0]), *flat[:3], json.dumps(valid[1]), *flat[3:], json.dumps(valid[2])]
    return valid, texts, poison


def dlq_messages(sqs_server: SqsServer, dlq_url: str, count: int) -> list[Any]:
    client = sqs_server.client()
    seen: dict[str, Any] = {}

    def collect() -> bool:
        reply = client.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=30,
        )
        for message in reply.get("Messages", []):
            seen[message["MessageId"]] = message
        return len(seen) >= count

    wait_until(collect, timeout=20, what=f"{count} messages in the DLQ")
    return list(seen.values())


def test_poison_goes_to_the_dlq_with_its_reason_and_the_rest_is_applied(
    workers: Workers,
    queue_url: str,
    dlq_url: str,
    sqs_server: SqsServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    valid, texts, poison = mixed(prefix)
    worker = workers.start(DEAD_LETTER_QUEUE_URL=dlq_url)
    send(sqs_server, queue_url, texts)
    wait_for_state(redis_client, prefix, expected_state(prefix, valid, CacheUpdatePolicy.UPSERT))
    total = sum(len(bodies) for bodies in poison.values())
    parked = dlq_messages(sqs_server, dlq_url, total)
    by_reason: dict[str, list[str]] = {}
    for message in parked:
        reason = message["MessageAttributes"]["reason"]["StringValue"]
        by_reason.setdefault(reason, []).append(message["Body"])
    assert {k: sorted(v) for k, v in by_reason.items()} == {k: sorted(v) for k, v in poison.items()}
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, what="queue drained")
    for reason, bodies in poison.items():
        assert worker.counter(FAILED, reason=reason) == len(bodies)
    assert worker.counter(PARKED, destination="dlq") == total
    assert '"reason": "unknown_type"' in worker.output()


def test_without_a_dlq_poison_stays_on_the_queue_and_the_rest_is_applied(
    workers: Workers,
    queue_url: str,
    sqs_server: SqsServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    valid, texts, poison = mixed(prefix)
    worker = workers.start()
    send(sqs_server, queue_url, texts)
    wait_for_state(redis_client, prefix, expected_state(prefix, valid, CacheUpdatePolicy.UPSERT))

    def all_met_twice() -> bool:  # a message deleted never comes back to be met again
        return all(worker.counter(FAILED, reason=r) >= 2 * len(b) for r, b in poison.items())

    wait_until(all_met_twice, timeout=30, what="every poison message back after its timeout")
    total = sum(len(bodies) for bodies in poison.values())
    assert worker.counter(PARKED, destination="redrive") >= 2 * total
    # the valid ones are deleted in the background: wait for it
    wait_until(lambda: queue_depth(sqs_server, queue_url) == total, what="only the poison left")


def read_keys(client: redis.Redis, keys: Iterable[str]) -> dict[str, Any]:
    """Those keys as ``read_state`` reads them (absent ones left out)."""
    found: dict[str, Any] = {}
    for key in keys:
        raw = client.get(key)
        if raw is not None:
            found[key] = int(raw) if key.endswith(TIMESTAMP_SUFFIX) else json.loads(raw)
    return found


def test_a_write_redis_refuses_does_not_block_the_others(
    workers: Workers,
    queue_url: str,
    sqs_server: SqsServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    layout = KeyLayout(prefix)
    wrong_type = layout.customer("cus-broken").entitlements
    redis_client.lpush(wrong_type, "not a string key")
    good = [factory.entitlements(f"cus-{i}", 100, features={"seats": i}) for i in range(5)]
    broken = factory.entitlements("cus-broken", 100, features={"seats": 1})
    worker = workers.start()
    send(sqs_server, queue_url, [good[0], good[1], broken, *good[2:]])
    wait_until(lambda: worker.counter(FAILED, reason="store_error") >= 1, what="store error")
    # A marker sent once Redis refused the write: applied, so the worker is past that batch.
    marker = factory.entitlements("cus-marker", 100, features={"seats": 7})
    send(sqs_server, queue_url, [marker])
    applied = expected_state(prefix, [*good, marker], CacheUpdatePolicy.UPSERT)
    wait_until(
        lambda: read_keys(redis_client, applied) == applied,
        timeout=30,
        what="the messages around the refused one, and the marker, applied",
    )
    wait_until(
        lambda: queue_depth(sqs_server, queue_url) == 1,
        timeout=30,
        what="every message deleted but the refused one",
    )
    # What the worker did with the refused write: nothing. The key of the wrong type is
    # as it was, none of the message's other keys (its version) was written.
    assert redis_client.type(wrong_type) == "list"
    assert redis_client.lrange(wrong_type, 0, -1) == ["not a string key"]
    its_keys = expected_state(prefix, [broken], CacheUpdatePolicy.UPSERT)
    assert read_keys(redis_client, set(its_keys) - {wrong_type}) == {}
    redis_client.unlink(wrong_type)  # the message comes back and is applied now
    wait_for_state(redis_client, prefix, applied | its_keys)


def killer_bodies(sqs_server: SqsServer, queue_url: str) -> None:
    """The three bodies that used to end the consumer thread: each on its own receive."""
    usage = factory.usage("cus-1", 600, "seats", 1)
    huge = json.dumps(usage).replace('"currentUsage": 1', '"currentUsage": 1e400')
    nested = json.dumps(usage)[:-1] + ', "deep": ' + "[" * 1000 + "]" * 1000 + "}"
    send(sqs_server, queue_url, [huge, nested])
    send_task(sqs_server, queue_url, TASK_NAMES["usage.updated"], 5)  # args=5: TypeError


def test_bodies_that_ended_the_consumer_are_poison_and_a_restarted_worker_stays_up(
    workers: Workers,
    queue_url: str,
    sqs_server: SqsServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    first = workers.start()
    killer_bodies(sqs_server, queue_url)
    valid = [factory.entitlements("cus-1", 100, features={"seats": 1})]
    send(sqs_server, queue_url, valid)
    wait_for_state(redis_client, prefix, expected_state(prefix, valid, CacheUpdatePolicy.UPSERT))

    def counted(worker: WorkerProcess) -> bool:
        return (
            worker.counter(FAILED, reason="not_json") >= 2
            and worker.counter(FAILED, reason="unprocessable") >= 1
        )

    wait_until(lambda: counted(first), timeout=30, what="the three counted as poison")
    assert "TypeError" in first.output()
    first.kill()  # the poison stays on the queue (no DLQ): a new worker meets it again
    second = workers.start()
    wait_until(lambda: counted(second), timeout=30, what="met again by the new worker")
    more = [factory.usage("cus-1", 200, "seats", 4)]
    send(sqs_server, queue_url, more)
    expected = expected_state(prefix, valid + more, CacheUpdatePolicy.UPSERT)
    wait_for_state(redis_client, prefix, expected)
    assert second.process is not None
    assert second.process.poll() is None
    assert second.http.get("/livez").status_code == 200
    assert second.readyz()["status"] == "UP"
    assert queue_depth(sqs_server, queue_url) == 3  # left for the redrive policy


def test_ids_sqs_refuses_in_attributes_are_parked_with_sanitised_attributes(
    workers: Workers, queue_url: str, dlq_url: str, sqs_server: SqsServer
) -> None:
    body = factory.usage("cus-1", 100, "seats", 1, id="a\u0001b\uffffc")
    del body["data"]["featureId"]
    worker = workers.start(DEAD_LETTER_QUEUE_URL=dlq_url)
    send(sqs_server, queue_url, [body])
    (parked,) = dlq_messages(sqs_server, dlq_url, 1)
    assert json.loads(parked["Body"]) == body
    attributes = {k: v["StringValue"] for k, v in parked["MessageAttributes"].items()}
    assert attributes["reason"] == "invalid_field"
    assert attributes["messageId"] == "a\ufffdb\ufffdc"
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, what="deleted")
    assert worker.counter(PARKED, destination="dlq") == 1
    assert worker.counter(REFUSED) == 0


def test_poison_the_dead_letter_queue_refuses_stays_with_an_error_and_a_count(
    workers: Workers, queue_url: str, sqs_server: SqsServer
) -> None:
    small_dlq = create_queue(sqs_server.client(), MaximumMessageSize="1024")
    poison = json.dumps(factory.usage("cus-1", 100, "seats", 1) | {"type": "x" * 2000})
    worker = workers.start(DEAD_LETTER_QUEUE_URL=small_dlq)
    send(sqs_server, queue_url, [poison])
    wait_until(lambda: worker.counter(REFUSED) >= 1, timeout=20, what="refusal counted")
    assert worker.counter(PARKED, destination="redrive") >= 1
    assert queue_depth(sqs_server, small_dlq) == 0
    assert queue_depth(sqs_server, queue_url) == 1  # left for the redrive policy
    refusals = [
        json.loads(line)
        for line in worker.output().splitlines()
        if line.startswith("{") and "dead-letter queue refused" in line
    ]
    assert refusals
    assert refusals[0]["level"] == "error"
    assert refusals[0]["reason"] == "unknown_type"


def test_each_park_fallback_through_the_worker_on_a_server_that_refuses_as_sqs_does(
    strict_sqs_server: StrictSqsServer,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """A DLQ of 1,024 bytes that counts attributes as SQS does (moto does not).

    An id SQS refuses in an attribute: parked with every attribute, sanitised. 980
    bytes: too long with every attribute, parked with its reason alone. 1,100 bytes:
    refused even so, left on the queue for the redrive policy, logged and counted.
    """
    client = strict_sqs_server.client()
    queue, dlq = create_queue(client), create_queue(client, MaximumMessageSize="1024")
    unsafe = factory.usage("cus-1", 100, "seats", 1, id="a\u0001b\uffffc")
    del unsafe["data"]["featureId"]
    whole, bare, refused = json.dumps(unsafe), "{" + "b" * 979, "{" + "r" * 1099
    workers = Workers(
        worker_env(queue, strict_sqs_server, redis_server, prefix, DEAD_LETTER_QUEUE_URL=dlq)
    )
    try:
        worker = workers.start()
        send(strict_sqs_server, queue, [whole, bare, refused])
        wait_until(lambda: worker.counter(REFUSED) >= 1, timeout=20, what="refusal counted")
        marker = factory.entitlements("cus-marker", 100, features={"seats": 1})
        send(strict_sqs_server, queue, [marker])
        applied = expected_state(prefix, [marker], CacheUpdatePolicy.UPSERT)
        wait_for_state(redis_client, prefix, applied)
        wait_until(
            lambda: queue_depth(strict_sqs_server, queue) == 1, what="all deleted but the refused"
        )
        parked = {
            m["Body"]: {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
            for m in dlq_messages(strict_sqs_server, dlq, 2)
        }
        assert sorted(parked) == sorted([whole, bare])
        assert set(parked[whole]) == {"reason", "detail", "messageId", "sourceMessageId"}
        assert (parked[whole]["reason"], parked[whole]["messageId"]) == (
            "invalid_field",
            "a\ufffdb\ufffdc",
        )
        assert parked[bare] == {"reason": "not_json"}
        assert worker.counter(PARKED, destination="dlq") == 2
        refusals_counted = worker.counter(REFUSED)
        assert worker.terminate() == 0
        left = wait_until(
            lambda: client.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages"),
            what="the refused message back on the queue",
        )
        assert [m["Body"] for m in left] == [refused]  # left for the redrive policy
        refusals = [
            json.loads(line)
            for line in worker.output().splitlines()
            if line.startswith("{") and "dead-letter queue refused" in line
        ]
        assert refusals
        assert {(r["level"], r["reason"]) for r in refusals} == {("error", "not_json")}
        assert "Message must be shorter than 1024 bytes" in json.dumps(refusals[0])
        print(f"refusals counted: {refusals_counted:.0f} (it comes back after each timeout)")
    finally:
        workers.stop_all()
        for key in redis_client.scan_iter(match=f"{prefix}:*"):
            redis_client.unlink(key)
