"""End to end through the real worker process: SQS (moto server) → worker → Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import redis

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from cache_pipeline.tasks.handlers import TASK_NAMES
from tests.support import factory
from tests.support.servers import SqsServer, wait_until
from tests.support.worker import (
    Workers,
    expected_state,
    queue_depth,
    send,
    send_task,
    wait_for_state,
)

PROCESSED = "persistent_cache_messages_processed_total"
FAILED = "persistent_cache_messages_failed_total"


def run_through_worker(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    redis_client: redis.Redis,
    prefix: str,
    bodies: list[dict[str, Any]],
) -> None:
    workers.start()
    send(sqs_server, queue_url, bodies)
    wait_for_state(redis_client, prefix, expected_state(prefix, bodies, CacheUpdatePolicy.UPSERT))
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, what="queue drained")


def test_entitlements_usage_and_credits_reach_redis(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    bodies = [
        factory.entitlements("cus-1", 100, features={"seats": 3, "sso": None}, credits={"ai": 5}),
        factory.usage("cus-1", 200, "seats", 4),
        factory.credits("cus-1", 300, "ai", 7, limit=100),
        factory.entitlements("cus-2", 100, resource="res-9", features={"seats": 1}),
        factory.usage("cus-2", 150, "seats", 2, resource="res-9"),
    ]
    run_through_worker(workers, sqs_server, queue_url, redis_client, prefix, bodies)
    layout = KeyLayout(prefix)
    usage = json.loads(redis_client.get(layout.customer("cus-1").feature_usage("seats")) or "{}")
    assert usage["currentUsage"] == 4
    credit = json.loads(redis_client.get(layout.customer("cus-1").credit("ai")) or "{}")
    assert credit["currentUsage"] == 7
    worker = workers.started[0]
    wait_until(lambda: worker.counter(PROCESSED, type="usage.updated") == 2)
    assert worker.counter(PROCESSED, type="entitlements.updated") == 2
    assert worker.counter(PROCESSED, type="credits.updated") == 1
    names = [url.rsplit("/", 1)[-1] for url in sqs_server.client().list_queues()["QueueUrls"]]
    assert not [n for n in names if "celery" in n or "pidbox" in n or "reply" in n], names


def test_invalidations_drop_customers_and_the_environment(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    bodies = [
        factory.entitlements("cus-1", 100, features={"seats": 3}),
        factory.entitlements("cus-2", 100, features={"seats": 3}),
        factory.entitlements("cus-3", 100, features={"seats": 3}),
    ]
    run_through_worker(workers, sqs_server, queue_url, redis_client, prefix, bodies)
    customer = [factory.invalidation(200, "cus-1")]
    send(sqs_server, queue_url, customer)
    wait_for_state(
        redis_client,
        prefix,
        expected_state(prefix, bodies + customer, CacheUpdatePolicy.UPSERT),
    )
    send(sqs_server, queue_url, [factory.invalidation(300, everything=True)])
    wait_for_state(redis_client, prefix, {})


def test_sns_wrapped_messages_are_unwrapped(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    body = factory.entitlements("cus-sns", 100, features={"seats": 1})
    envelope = {"Type": "Notification", "MessageId": "m-1", "Message": json.dumps(body)}
    workers.start()
    send(sqs_server, queue_url, [envelope])
    wait_for_state(redis_client, prefix, expected_state(prefix, [body], CacheUpdatePolicy.UPSERT))


def test_a_celery_send_task_message_runs_the_same_task(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    body = factory.entitlements("cus-celery", 100, features={"seats": 2})
    workers.start()
    send_task(sqs_server, queue_url, TASK_NAMES["entitlements.updated"], [body])
    wait_for_state(redis_client, prefix, expected_state(prefix, [body], CacheUpdatePolicy.UPSERT))
    worker = workers.started[0]
    wait_until(lambda: worker.counter(PROCESSED, type="entitlements.updated") == 1)


def test_a_contract_message_with_a_properties_field_is_applied_with_its_batch(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    """Unknown top-level fields are ignored, "properties" too: kombu must not read it as its own."""
    bodies = [factory.entitlements(f"cus-{i}", 100, features={"seats": i}) for i in range(5)]
    bodies[0]["properties"] = {"delivery_info": "not kombu's"}
    bodies[1]["properties"] = "text"
    workers.start(BATCH_SIZE="10")
    send(sqs_server, queue_url, bodies)
    wait_for_state(redis_client, prefix, expected_state(prefix, bodies, CacheUpdatePolicy.UPSERT))


def test_a_message_that_breaks_its_handling_is_poison_and_the_consumer_goes_on(
    workers: Workers, sqs_server: SqsServer, queue_url: str, redis_client: redis.Redis, prefix: str
) -> None:
    """A Celery message whose args are not a list raised TypeError in the consumer thread."""
    worker = workers.start()
    send_task(sqs_server, queue_url, TASK_NAMES["entitlements.updated"], 5)
    wait_until(lambda: worker.counter(FAILED, reason="unprocessable") >= 1, timeout=20)
    body = factory.entitlements("cus-after", 100, features={"seats": 2})
    send(sqs_server, queue_url, [body])
    wait_for_state(redis_client, prefix, expected_state(prefix, [body], CacheUpdatePolicy.UPSERT))
    assert '"reason": "unprocessable"' in worker.output()
    assert "TypeError" in worker.output()


def test_missing_queue_url_stops_startup_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "QUEUE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "cache_pipeline", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "QUEUE_URL" in lines[0]
