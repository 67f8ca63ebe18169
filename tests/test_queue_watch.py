"""The queue-depth gauge: what the worker exports for the CachePipelineHalted alert.

Against the suite's SQS server: the depths of the queue and its dead-letter queue land
in ``persistent_cache_queue_messages``; a queue SQS cannot be asked about drops its
series (no alert reads a stale depth); a running worker exports it on /metrics.
"""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY

from cache_pipeline.tasks.queue_watch import QueueWatch
from tests.support.servers import SqsServer, free_port, queue_at, wait_until
from tests.support.worker import Workers, create_queue, send


def depth(queue: str, state: str) -> float | None:
    return REGISTRY.get_sample_value(
        "persistent_cache_queue_messages", {"queue": queue, "state": state}
    )


def test_the_depths_of_the_queue_and_its_dlq_are_polled(sqs_server: SqsServer) -> None:
    client = sqs_server.client()
    main, dlq = create_queue(client), create_queue(client)
    send(sqs_server, main, [{"n": n} for n in range(3)])
    send(sqs_server, dlq, [{"n": n} for n in range(2)])
    sqs_server.queue(main).receive(1, 0)  # one in flight
    QueueWatch(sqs_server.queue(main, dead_letter_url=dlq), threading.Event()).poll()
    assert (depth("main", "visible"), depth("main", "in_flight")) == (2.0, 1.0)
    assert (depth("dlq", "visible"), depth("dlq", "in_flight")) == (2.0, 0.0)


def test_a_queue_it_cannot_ask_drops_its_series(sqs_server: SqsServer) -> None:
    main = create_queue(sqs_server.client())
    QueueWatch(sqs_server.queue(main), threading.Event()).poll()
    assert depth("main", "visible") == 0.0
    dead = queue_at(f"http://127.0.0.1:{free_port()}", main)
    QueueWatch(dead, threading.Event()).poll()
    assert depth("main", "visible") is None


def test_a_running_worker_exports_the_depth(workers: Workers) -> None:
    worker = workers.start()
    wait_until(
        lambda: (
            worker.counter("persistent_cache_queue_messages", queue="main", state="visible") == 0
            and ("persistent_cache_queue_messages", (("queue", "main"), ("state", "visible")))
            in worker.metrics()
        ),
        timeout=30,
        what="the main queue's depth on /metrics",
    )
