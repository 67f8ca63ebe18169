"""Delivery order and concurrency: whatever SQS does, Redis ends equal to the reference model."""

from __future__ import annotations

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from tests.support.servers import SqsServer, wait_until
from tests.support.worker import (
    Workers,
    expected_state,
    queue_depth,
    seed,
    send,
    stream,
    wait_for_state,
)

CUSTOMERS = 8


def seed_then_stream(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    redis_client: redis.Redis,
    prefix: str,
    count: int,
) -> None:
    """Seed, wait for it, then send a shuffled stream with duplicates and check the end state."""
    client = sqs_server.client()
    seeded = seed(CUSTOMERS)
    send(client, queue_url, seeded)
    wait_for_state(redis_client, prefix, expected_state(prefix, seeded, CacheUpdatePolicy.UPSERT))
    messages = stream(CUSTOMERS, count)
    send(client, queue_url, messages)
    expected = expected_state(prefix, seeded + messages, CacheUpdatePolicy.UPSERT)
    wait_for_state(redis_client, prefix, expected, timeout=60)
    wait_until(lambda: queue_depth(client, queue_url) == 0, timeout=20, what="queue drained")


def test_out_of_order_and_duplicated_delivery_equals_the_model(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    worker = workers.start()
    seed_then_stream(workers, sqs_server, queue_url, redis_client, prefix, 150)
    skipped = worker.counter(
        "persistent_cache_messages_skipped_total", type="usage.updated", reason="stale"
    )
    assert skipped > 0  # the shuffle and the duplicates really delivered older versions late


@pytest.mark.slow
def test_two_workers_on_one_queue_equal_the_model(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    first, second = workers.start(), workers.start()
    seed_then_stream(workers, sqs_server, queue_url, redis_client, prefix, 200)
    processed = [
        sum(
            w.counter("persistent_cache_messages_processed_total", type=kind)
            for kind in ("usage.updated", "credits.updated", "entitlements.updated")
        )
        for w in (first, second)
    ]
    assert all(count > 0 for count in processed), processed


@pytest.mark.slow
def test_concurrent_consumers_in_one_worker_equal_the_model(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    worker = workers.start(WORKER_CONCURRENCY="4")
    assert worker.readyz()["consumers"] == 4
    seed_then_stream(workers, sqs_server, queue_url, redis_client, prefix, 200)
