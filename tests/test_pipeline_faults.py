"""Faults around the real worker: Redis going away, SIGTERM and SIGKILL mid-stream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.worker import (
    WorkerProcess,
    Workers,
    expected_state,
    queue_depth,
    seed,
    send,
    stream,
    wait_for_state,
    worker_env,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CUSTOMERS = 6
PROCESSED = "persistent_cache_messages_processed_total"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test that keeps its data across a restart (append-only file)."""
    server = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
    yield server
    server.stop()


@pytest.fixture
def own_client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = own_redis.client()
    yield client
    client.close()


@pytest.fixture
def workers(
    queue_url: str, sqs_server: SqsServer, own_redis: RedisServer, prefix: str
) -> Iterator[Workers]:
    """Workers writing to this test's own redis-server (which it throws away after)."""
    manager = Workers(worker_env(queue_url, sqs_server, own_redis, prefix))
    yield manager
    manager.stop_all()


def processed(worker: WorkerProcess) -> float:
    return sum(
        worker.counter(PROCESSED, type=kind)
        for kind in ("usage.updated", "credits.updated", "entitlements.updated")
    )


def test_redis_stopped_mid_stream_pauses_then_resumes_without_loss(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    own_redis: RedisServer,
    own_client: redis.Redis,
    prefix: str,
) -> None:
    client = sqs_server.client()
    seeded, messages = seed(CUSTOMERS), stream(CUSTOMERS, 120, seed_value=11)
    worker = workers.start()
    send(client, queue_url, seeded)
    wait_for_state(own_client, prefix, expected_state(prefix, seeded, CacheUpdatePolicy.UPSERT))
    send(client, queue_url, messages[:60])
    wait_until(lambda: processed(worker) >= len(seeded) + 10, what="part of the stream applied")
    own_redis.stop()
    send(client, queue_url, messages[60:])
    wait_until(lambda: worker.readyz().get("reason") == "redis_unreachable", what="worker paused")
    assert worker.readyz()["status"] == "DOWN"
    assert worker.counter("persistent_cache_messages_failed_total", reason="transient") > 0
    assert queue_depth(client, queue_url) > 0  # nothing deleted while Redis was away
    own_redis.start()
    expected = expected_state(prefix, seeded + messages, CacheUpdatePolicy.UPSERT)
    wait_for_state(own_client, prefix, expected, timeout=60)
    wait_until(lambda: worker.readyz()["status"] == "UP", what="worker resumed")
    assert worker.process is not None
    assert worker.process.poll() is None  # paused, never crashed


def start_mid_stream(
    workers: Workers, client: SQSClient, queue_url: str, *, seed_value: int
) -> tuple[WorkerProcess, list[dict[str, Any]]]:
    """Queue seeds and a 600-message stream, start a worker, return once part is applied."""
    seeded, messages = seed(CUSTOMERS), stream(CUSTOMERS, 600, seed_value=seed_value)
    send(client, queue_url, seeded)
    send(client, queue_url, messages)
    first = workers.start()
    wait_until(lambda: processed(first) >= 30, what="part of the stream applied")
    return first, seeded + messages


def test_sigterm_mid_stream_exits_0_and_a_new_worker_finishes(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    own_client: redis.Redis,
    prefix: str,
) -> None:
    client = sqs_server.client()
    first, sent = start_mid_stream(workers, client, queue_url, seed_value=12)
    assert first.terminate(timeout=20) == 0
    assert queue_depth(client, queue_url) > 0  # stopped mid-stream
    workers.start()
    expected = expected_state(prefix, sent, CacheUpdatePolicy.UPSERT)
    wait_for_state(own_client, prefix, expected, timeout=60)


def test_sigkill_mid_batch_then_a_new_worker_after_the_visibility_timeout(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    own_client: redis.Redis,
    prefix: str,
) -> None:
    client = sqs_server.client()
    first, sent = start_mid_stream(workers, client, queue_url, seed_value=13)
    first.kill()
    workers.start()
    expected = expected_state(prefix, sent, CacheUpdatePolicy.UPSERT)
    wait_for_state(own_client, prefix, expected, timeout=60)
    wait_until(lambda: queue_depth(client, queue_url) == 0, timeout=20, what="queue drained")
