"""SIGTERM while Redis or SQS hangs: the worker exits 0 within the bound, says what it left,
and nothing is lost.

Each test freezes a server of its own with SIGSTOP (the session's servers are
never stopped) while the worker holds messages, sends SIGTERM, times the exit
(printed; the only bound asserted is SHUTDOWN_BOUND_SECS, which docker compose
and Kubernetes grace periods must cover), reads the worker's shutdown line,
checks the queue right after the exit, then lets the server go on and has a
second worker finish: Redis must equal the reference model.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.shutdown import (
    LONG_VISIBILITY,
    assert_deleted_were_written,
    freeze_holding,
    give_back,
    in_flight,
    queue_counts,
    shutdown_figures,
    shutdown_report,
    take_leftover,
    terminate_frozen,
    wait_for_queue_empty,
)
from tests.support.worker import (
    WorkerProcess,
    Workers,
    create_queue,
    expected_state,
    seed,
    send,
    stream,
    wait_for_state,
    worker_env,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SHUTDOWN_BOUND_SECS = 15  # SIGTERM to exit, whatever hangs, at the default settings
CUSTOMERS = 6
POLICY = CacheUpdatePolicy.UPSERT
# At the defaults (BATCH_SIZE=10: 12 consumers); VISIBILITY_TIMEOUT long enough that a
# message the worker dropped cannot pass for one it handed back.
DEFAULTS = {"BATCH_SIZE": "10", "VISIBILITY_TIMEOUT": str(LONG_VISIBILITY)}


@pytest.fixture
def own_sqs() -> Iterator[SqsServer]:
    """An SQS server of this test alone, which it may SIGSTOP."""
    server = SqsServer().start()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


def seeded(admin: redis.Redis, sqs: SqsServer, queue: str, prefix: str) -> list[dict[str, Any]]:
    """One snapshot per customer, applied and deleted."""
    bodies = seed(CUSTOMERS)
    send(sqs, queue, bodies)
    wait_for_state(admin, prefix, expected_state(prefix, bodies, POLICY))
    wait_for_queue_empty(sqs, queue)
    return bodies


def report_of(scenario: str, worker: WorkerProcess, code: int, seconds: float) -> dict[str, int]:
    """Print the measured exit and the shutdown line; the exit code and bound must hold."""
    report = shutdown_report(worker.output())
    print(f"\n[shutdown] {scenario}: SIGTERM -> exit {seconds:.1f} s (code {code}); {report}")
    assert code == 0, worker.output()
    assert seconds < SHUTDOWN_BOUND_SECS, worker.output()
    return shutdown_figures(report)


def test_sigterm_while_redis_hangs(
    sqs_server: SqsServer, own_redis: RedisServer, prefix: str
) -> None:
    client = sqs_server.client()
    queue = create_queue(client, VisibilityTimeout=str(LONG_VISIBILITY))
    workers = Workers(worker_env(queue, sqs_server, own_redis, prefix, **DEFAULTS))
    admin = own_redis.client()
    try:
        first = workers.start()
        sent = seeded(admin, sqs_server, queue, prefix)
        messages = stream(CUSTOMERS, 30, seed_value=41)
        own_redis.pause()  # SIGSTOP: every write now waits on a socket that never answers
        try:
            send(sqs_server, queue, messages)
            sent += messages
            wait_until(
                lambda: in_flight(sqs_server, queue) == len(messages),
                what="every message received, its write hanging",
            )
            started = time.monotonic()
            code = first.terminate(timeout=60)
            figures = report_of("redis hung", first, code, time.monotonic() - started)
            visible, flying = queue_counts(sqs_server, queue)
        finally:
            own_redis.resume()
        assert flying == 0, "messages left in flight instead of handed back at once"
        assert visible == len(messages), "nothing could be written, so nothing may be deleted"
        assert figures["released"] == len(messages)
        assert figures["deleted"] == figures["unconfirmed"] == figures["in_flight"] == 0
        assert figures["unfinished"] == 0
        workers.start()
        wait_for_state(admin, prefix, expected_state(prefix, sent, POLICY), timeout=60)
        wait_for_queue_empty(sqs_server, queue)
    finally:
        workers.stop_all()
        admin.close()


def test_sigterm_while_sqs_hangs(
    own_sqs: SqsServer, redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    client = own_sqs.client()
    visibility = "10"  # what the hung SQS holds comes back this soon after it answers again
    queue = create_queue(client, VisibilityTimeout=visibility)
    env = worker_env(queue, own_sqs, redis_server, prefix, **DEFAULTS)
    workers = Workers({**env, "VISIBILITY_TIMEOUT": visibility})
    assert own_sqs.process is not None
    sqs_pid = own_sqs.process.pid
    try:
        first = workers.start()
        sent = seeded(prefixed_redis, own_sqs, queue, prefix)
        messages = stream(CUSTOMERS, 300, seed_value=42)
        send(own_sqs, queue, messages)
        sent += messages
        held = freeze_holding(first, own_sqs, queue)
        os.kill(sqs_pid, signal.SIGSTOP)  # its deletes, hand-backs and long polls now hang
        try:
            code, seconds = terminate_frozen(first, timeout=60)
        finally:
            os.kill(sqs_pid, signal.SIGCONT)
        figures = report_of(f"sqs hung, {held} held", first, code, seconds)
        assert figures["unconfirmed"] + figures["in_flight"] > 0, "the hang caught nothing"
        wait_until(lambda: in_flight(own_sqs, queue) == 0, timeout=60, what="in flight back")
        leftover = take_leftover(own_sqs, queue, sent)
        assert_deleted_were_written(prefixed_redis, prefix, leftover.deleted)
        give_back(own_sqs, queue, leftover)
        workers.start()
        wait_for_state(prefixed_redis, prefix, expected_state(prefix, sent, POLICY), timeout=90)
        wait_for_queue_empty(own_sqs, queue)
    finally:
        workers.stop_all()
