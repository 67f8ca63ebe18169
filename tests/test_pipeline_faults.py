"""Faults around the real worker: Redis going away, SIGTERM and SIGKILL mid-batch."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.shutdown import (
    LONG_VISIBILITY,
    freeze_holding,
    give_back,
    in_flight,
    shutdown_report,
    take_leftover,
    terminate_frozen,
)
from tests.support.snapshot import read_state
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
    pass

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CUSTOMERS = 6
# A deadline, not a bound: with appendfsync always every Redis write waits for the disk,
# and on a busy machine the next worker needs tens of seconds for a few hundred messages.
FINISH_SECS = 120
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
    seeded, messages = seed(CUSTOMERS), stream(CUSTOMERS, 120, seed_value=11)
    worker = workers.start()
    send(sqs_server, queue_url, seeded)
    wait_for_state(own_client, prefix, expected_state(prefix, seeded, CacheUpdatePolicy.UPSERT))
    send(sqs_server, queue_url, messages[:60])
    wait_until(lambda: processed(worker) >= len(seeded) + 10, what="part of the stream applied")
    own_redis.stop()
    send(sqs_server, queue_url, messages[60:])
    wait_until(lambda: worker.readyz().get("reason") == "redis_unreachable", what="worker paused")
    assert worker.readyz()["status"] == "DOWN"
    assert worker.counter("persistent_cache_messages_failed_total", reason="transient") > 0
    assert queue_depth(sqs_server, queue_url) > 0  # nothing deleted while Redis was away
    own_redis.start()
    expected = expected_state(prefix, seeded + messages, CacheUpdatePolicy.UPSERT)
    wait_for_state(own_client, prefix, expected, timeout=60)
    wait_until(lambda: worker.readyz()["status"] == "UP", what="worker resumed")
    assert worker.process is not None
    assert worker.process.poll() is None  # paused, never crashed


def frozen_mid_stream(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    admin: redis.Redis,
    prefix: str,
    *,
    seed_value: int,
) -> tuple[WorkerProcess, list[dict[str, Any]], int]:
    """A worker frozen (SIGSTOP) holding messages of a 300-message stream it has begun.

    The seeds go first and alone: a usage update finds no entitlements without its
    customer's seed and is skipped for good (rule 2), so a seed that came back late
    (after a kill) would change the outcome. The stream is sent while the worker is
    frozen (it keeps up with a sender otherwise), then at least 30 of it are done.
    Returns the worker, everything sent, and how many messages it held when frozen.
    """
    first = workers.start()
    seeded, messages = seed(CUSTOMERS), stream(CUSTOMERS, 300, seed_value=seed_value)
    send(sqs_server, queue_url, seeded)
    wait_for_state(admin, prefix, expected_state(prefix, seeded, CacheUpdatePolicy.UPSERT))
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, what="the seeds deleted")
    os.kill(first.pid, signal.SIGSTOP)
    send(sqs_server, queue_url, messages)
    os.kill(first.pid, signal.SIGCONT)
    held = freeze_holding(first, sqs_server, queue_url, left_at_most=len(messages) - 30)
    return first, seeded + messages, held


def test_sigterm_mid_batch_hands_back_or_deletes_everything_and_a_new_worker_finishes(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    own_client: redis.Redis,
    prefix: str,
) -> None:
    """Right after the exit nothing is in flight: every message the worker held was either
    written and deleted or handed back at once. A message it dropped would stay in flight
    for LONG_VISIBILITY seconds, so it could not pass for one that came back."""
    client = sqs_server.client()
    long = {"VisibilityTimeout": str(LONG_VISIBILITY)}
    client.set_queue_attributes(QueueUrl=queue_url, Attributes=long)  # type: ignore[arg-type]
    workers.env["VISIBILITY_TIMEOUT"] = str(LONG_VISIBILITY)
    first, sent, held = frozen_mid_stream(
        workers, sqs_server, queue_url, own_client, prefix, seed_value=12
    )
    code, seconds = terminate_frozen(first, timeout=20)
    print(f"\nSIGTERM holding {held} message(s): exit {code} after {seconds:.1f} s")
    assert code == 0
    assert in_flight(sqs_server, queue_url) == 0, shutdown_report(first.output())
    leftover = take_leftover(sqs_server, queue_url, sent)
    assert leftover.remaining, "stopped mid-stream: messages are left for the next worker"
    deleted_state = expected_state(prefix, leftover.deleted, CacheUpdatePolicy.UPSERT)
    assert read_state(own_client, KeyLayout(prefix)) == deleted_state  # written iff deleted
    give_back(sqs_server, queue_url, leftover)
    workers.start()
    expected = expected_state(prefix, sent, CacheUpdatePolicy.UPSERT)
    wait_for_state(own_client, prefix, expected, timeout=FINISH_SECS)


def test_sigkill_mid_batch_then_a_new_worker_after_the_visibility_timeout(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    own_client: redis.Redis,
    prefix: str,
) -> None:
    first, sent, held = frozen_mid_stream(  # the kill lands on messages in flight
        workers, sqs_server, queue_url, own_client, prefix, seed_value=13
    )
    first.kill()
    print(f"\nSIGKILL holding {held} message(s)")
    workers.start()
    expected = expected_state(prefix, sent, CacheUpdatePolicy.UPSERT)
    wait_for_state(own_client, prefix, expected, timeout=FINISH_SECS)
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, timeout=20, what="queue drained")
