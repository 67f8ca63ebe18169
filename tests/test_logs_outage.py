"""What the log says while Redis and SQS are down: said at startup, said once per window.

``RepeatedWarning`` on its own (a fake clock), then the real worker started with
Redis and the SQS endpoint both refusing connections: the first lines name both, and
twelve consumers failing every backoff round write one receive warning per window
with how many it stands for.
"""

from __future__ import annotations

import json
import os
from typing import Any

from loguru import logger

from cache_pipeline.ops.repeated import RepeatedWarning
from tests.support.servers import SqsServer, free_port, wait_until
from tests.support.worker import WorkerProcess, Workers


def test_repeats_within_the_window_are_counted_into_the_next_line() -> None:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message).strip()), format="{message}")
    now = [0.0]
    try:
        repeated = RepeatedWarning(window=10, clock=lambda: now[0])
        for second in (0, 1, 2, 3, 11, 12, 30):
            now[0] = second
            repeated.warning("unreachable", "receive failed: {}", "refused")
        repeated.warning("throttled", "receive failed: {}", "slow down")
    finally:
        logger.remove(sink)
    assert lines == [
        "receive failed: refused",
        "receive failed: refused (3 more like it in the last 10 s)",
        "receive failed: refused (1 more like it in the last 10 s)",
        "receive failed: slow down",
    ]


def json_lines(worker: WorkerProcess) -> list[dict[str, Any]]:
    found = []
    for line in worker.output().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def test_with_redis_and_sqs_down_the_log_says_so_at_once_and_not_a_dozen_times() -> None:
    dead_sqs = f"http://127.0.0.1:{free_port()}"
    worker = WorkerProcess(
        {
            "QUEUE_URL": f"{dead_sqs}/000000000000/q",
            "SQS_ENDPOINT_URL": dead_sqs,
            "REDIS_PORT": str(free_port()),
            "ENVIRONMENT_PREFIX": "outage",
            "REDIS_TIMEOUT_SECS": "1",
        }
    )
    try:
        worker.start(wait=False)
        wait_until(
            lambda: sum("receiving from the queue failed" in line.get("msg", "")
                        for line in json_lines(worker)) >= 2,
            timeout=60,
            what="a second window of receive failures",
        )  # fmt: skip
        messages = [line.get("msg", "") for line in json_lines(worker)]
    finally:
        worker.stop()
    startup = [m for m in messages if "at startup" in m]
    assert any(m.startswith("Redis at 127.0.0.1:") for m in startup), startup
    assert any(m.startswith("the queue ") and "(unreachable)" in m for m in startup), startup
    receives = [m for m in messages if "receiving from the queue failed" in m]
    assert "more like it in the last 10 s" in receives[1], receives
    print(f"{len(receives)} receive warning line(s) for 12 consumers over two windows")


def test_every_line_the_worker_writes_is_json_warnings_included(
    workers: Workers, sqs_server: SqsServer
) -> None:
    """Python warnings (Celery's SecurityWarning when run as root) come out as JSON lines."""
    worker = workers.start(PYTHONWARNINGS="default")
    worker.terminate()
    lines = [line for line in worker.output().splitlines() if line.strip()]
    raw = [line for line in lines if not line.startswith("{")]
    assert raw == [], raw
    if os.geteuid() == 0:  # Celery warns a worker running with superuser privileges
        assert any("superuser privileges" in json.loads(line).get("msg", "") for line in lines)
