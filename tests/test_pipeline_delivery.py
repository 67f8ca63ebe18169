"""Delivery order and concurrency through the real worker: whatever order SQS and the
worker's own consumers apply a stream in, Redis ends in the state contract v2.1 allows
(rule 6), under both policies, with invalidations, large reorders and duplicates."""

from __future__ import annotations

import random

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from tests.support.servers import SqsServer, wait_until
from tests.support.streams import deliver, realistic_stream, seeds
from tests.support.worker import Workers, queue_depth, send, wait_for_model, warm_cache

CUSTOMERS = 8
POLICIES = pytest.mark.parametrize(
    "policy", [CacheUpdatePolicy.UPSERT, CacheUpdatePolicy.UPDATE_IF_EXISTS]
)


def seed_then_stream(
    sqs_server: SqsServer,
    queue_url: str,
    redis_client: redis.Redis,
    prefix: str,
    policy: CacheUpdatePolicy,
    count: int,
) -> None:
    """Seed a warm cache (written as a reader's miss path writes it), then send a realistic
    stream reordered by up to 400 places with duplicates and invalidations, and check the
    end state against the model."""
    warm = seeds(CUSTOMERS)
    warm_cache(redis_client, prefix, warm)
    wait_for_model(redis_client, prefix, warm, policy)
    rng = random.Random(count)
    messages = realistic_stream(rng, count, customers=CUSTOMERS)
    send(sqs_server, queue_url, deliver(messages, rng, distance=400, duplicates=0.1))
    wait_for_model(redis_client, prefix, warm + messages, policy, timeout=90)
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, timeout=30, what="queue drained")


@POLICIES
def test_out_of_order_and_duplicated_delivery_ends_as_the_model_allows(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    redis_client: redis.Redis,
    prefix: str,
    policy: CacheUpdatePolicy,
) -> None:
    worker = workers.start(CACHE_UPDATE_POLICY=policy.value)
    seed_then_stream(sqs_server, queue_url, redis_client, prefix, policy, 1000)
    stale = sum(
        worker.counter("persistent_cache_messages_skipped_total", type=kind, reason="stale")
        for kind in ("usage.updated", "credits.updated", "entitlements.updated")
    )
    assert stale > 0  # the reorder and the duplicates really delivered older versions late


@pytest.mark.slow
@POLICIES
def test_two_workers_on_one_queue_end_as_the_model_allows(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    redis_client: redis.Redis,
    prefix: str,
    policy: CacheUpdatePolicy,
) -> None:
    first = workers.start(CACHE_UPDATE_POLICY=policy.value)
    second = workers.start(CACHE_UPDATE_POLICY=policy.value)
    seed_then_stream(sqs_server, queue_url, redis_client, prefix, policy, 1000)
    processed = [
        sum(
            w.counter("persistent_cache_messages_processed_total", type=kind)
            for kind in ("usage.updated", "credits.updated", "entitlements.updated")
        )
        for w in (first, second)
    ]
    assert all(count > 0 for count in processed), processed


@pytest.mark.slow
def test_the_default_consumers_of_one_worker_end_as_the_model_allows(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    """The worker's defaults: UPDATE_IF_EXISTS, BATCH_SIZE=10 and its 12 consumers."""
    policy = CacheUpdatePolicy.UPDATE_IF_EXISTS
    worker = workers.start(CACHE_UPDATE_POLICY=policy.value)
    assert worker.readyz()["consumers"] == 12
    seed_then_stream(sqs_server, queue_url, redis_client, prefix, policy, 2000)
