"""Poison messages: parked (DLQ with its reason, or left for the redrive policy), never blocking."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from tests.support import factory
from tests.support.servers import SqsServer, wait_until
from tests.support.worker import (
    Workers,
    create_queue,
    expected_state,
    queue_depth,
    send,
    wait_for_state,
)

FAILED = "persistent_cache_messages_failed_total"
PARKED = "persistent_cache_messages_parked_total"


def poison_bodies(prefix: str) -> dict[str, list[str]]:
    """Bodies of every poison reason, keyed by the reason the worker must give."""
    unknown = factory.usage("cus-1", 500, "seats", 1) | {"type": "usage.exploded"}
    missing = factory.usage("cus-1", 501, "seats", 1)
    del missing["data"]["featureId"]
    wrong_type = factory.usage("cus-1", 502, "seats", 1)
    wrong_type["timestamp"] = "yesterday"
    elsewhere = factory.usage("cus-1", 503, "seats", 1, environment=f"not-{prefix}")
    year_9999 = factory.usage("cus-1", 253402300799000, "seats", 9)
    return {
        "not_json": ["{this is not json", "[1, 2]"],
        "unknown_type": [json.dumps(unknown)],
        "invalid_field": [json.dumps(missing), json.dumps(wrong_type)],
        "wrong_environment": [json.dumps(elsewhere)],
        "timestamp_in_future": [json.dumps(year_9999)],
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
    send(sqs_server.client(), queue_url, texts)
    wait_for_state(redis_client, prefix, expected_state(prefix, valid, CacheUpdatePolicy.UPSERT))
    total = sum(len(bodies) for bodies in poison.values())
    parked = dlq_messages(sqs_server, dlq_url, total)
    by_reason: dict[str, list[str]] = {}
    for message in parked:
        reason = message["MessageAttributes"]["reason"]["StringValue"]
        by_reason.setdefault(reason, []).append(message["Body"])
    assert {k: sorted(v) for k, v in by_reason.items()} == {k: sorted(v) for k, v in poison.items()}
    wait_until(lambda: queue_depth(sqs_server.client(), queue_url) == 0, what="queue drained")
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
    send(sqs_server.client(), queue_url, texts)
    wait_for_state(redis_client, prefix, expected_state(prefix, valid, CacheUpdatePolicy.UPSERT))

    def all_counted() -> bool:
        return all(worker.counter(FAILED, reason=r) >= len(b) for r, b in poison.items())

    wait_until(all_counted, what="every poison message counted")
    total = sum(len(bodies) for bodies in poison.values())
    assert worker.counter(PARKED, destination="redrive") >= total
    assert queue_depth(sqs_server.client(), queue_url) == total  # not deleted


def test_a_write_redis_refuses_does_not_block_the_others(
    workers: Workers,
    queue_url: str,
    sqs_server: SqsServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    layout = KeyLayout(prefix)
    redis_client.lpush(layout.customer("cus-broken").entitlements, "not a string key")
    good = [factory.entitlements(f"cus-{i}", 100, features={"seats": i}) for i in range(5)]
    broken = factory.entitlements("cus-broken", 100, features={"seats": 1})
    worker = workers.start()
    send(sqs_server.client(), queue_url, [good[0], good[1], broken, *good[2:]])
    expected = expected_state(prefix, good, CacheUpdatePolicy.UPSERT)
    expected_broken_list = redis_client.lrange(layout.customer("cus-broken").entitlements, 0, -1)
    wait_until(lambda: worker.counter(FAILED, reason="store_error") >= 1, what="store error")
    redis_client.unlink(layout.customer("cus-broken").entitlements)
    wait_for_state(
        redis_client, prefix, expected | expected_state(prefix, [broken], CacheUpdatePolicy.UPSERT)
    )
    assert expected_broken_list == ["not a string key"]
