"""/livez against the real worker: it fails when consumption can no longer happen, and only then.

A consumer stuck in a Redis call longer than STALLED_AFTER_SECS makes /livez
answer 503 (a kubelet would restart the pod) and 200 again once it moves; a
worker whose consumer threads have all ended exits with code 1 by itself.
Dependencies being away are readiness, never liveness (tests/test_redis_conditions.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.flow import Flow
from tests.support.servers import AWS_TEST_ENV, RedisServer, SqsServer, wait_until
from tests.support.worker import ROOT, WorkerProcess, Workers, worker_env

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_a_consumer_stuck_beyond_the_bound_fails_livez_until_it_moves(
    sqs_server: SqsServer, queue_url: str, own_redis: RedisServer, prefix: str
) -> None:
    workers = Workers(
        worker_env(
            queue_url,
            sqs_server,
            own_redis,
            prefix,
            REDIS_TIMEOUT_SECS="40",  # a Redis call may block this long: longer than the bound
            STALLED_AFTER_SECS="10",
        )
    )
    admin = own_redis.client()
    try:
        worker = workers.start()
        flow = Flow(sqs_server, queue_url, admin, prefix, worker)
        flow.seed()
        assert flow.livez().json() == {"status": "UP"}
        assert "STALLED_AFTER_SECS=10 is not above" in worker.output()  # warned at startup
        own_redis.pause()  # SIGSTOP: the next write waits on a socket that never answers
        try:
            flow.stream(30, seed_value=31)
            stalled = wait_until(
                lambda: flow.livez().status_code == 503, timeout=40, what="/livez 503"
            )
            assert stalled
            assert flow.livez().json()["reason"] == "consumers_stalled"
        finally:
            own_redis.resume()
        wait_until(lambda: flow.livez().status_code == 200, timeout=30, what="/livez 200 again")
        flow.check()
    finally:
        workers.stop_all()
        admin.close()


ENDING_CONSUMER = textwrap.dedent(
    """
    import sys
    from cache_pipeline.tasks import consumer

    def run(self):
        raise SystemExit("injected: this consumer thread ends")

    consumer.QueueConsumer.run = run
    from cache_pipeline.cli.main import main

    sys.argv = ["cache-pipeline", "worker"]
    main()
    """
)


def test_a_worker_whose_consumers_all_ended_exits_with_code_1(
    sqs_server: SqsServer, queue_url: str, redis_server: RedisServer, prefix: str
) -> None:
    probe = WorkerProcess(worker_env(queue_url, sqs_server, redis_server, prefix))
    env = {**probe.env, **AWS_TEST_ENV, "WORKER_CONCURRENCY": "2"}
    probe.http.close()
    result = subprocess.run(
        [sys.executable, "-c", ENDING_CONSUMER],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "every queue consumer has stopped" in result.stdout
