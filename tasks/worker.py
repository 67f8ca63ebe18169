"""``cache-pipeline worker``: a Celery worker whose consumers read the raw queue.

Celery runs the process (signals, warm and soft shutdown, the task registry,
the solo pool), but its own task consumer is given no queue: the queue carries
raw JSON, which Celery's consumer would reject. Instead the ``QueueConsumers``
bootstep starts WORKER_CONCURRENCY ``QueueConsumer`` threads on the queue, each
with its own kombu SQS connection; they run the per-type tasks in this
process. On SIGTERM the worker stops them: each finishes the batch it holds
(written batches are deleted, anything not written is not), then the process
exits 0.

The HTTP surface (/livez, /readyz, /metrics) runs in a thread of this process,
so /metrics counts every message this worker handles.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps
from kombu import Connection
from loguru import logger

from cache_pipeline import metrics
from cache_pipeline.backoff import RedisGate
from cache_pipeline.config import Settings
from cache_pipeline.health import HealthState
from cache_pipeline.keys import KeyLayout
from cache_pipeline.poison_guard import FloodBound, PoisonGuard
from cache_pipeline.redis_client import connect
from cache_pipeline.schema import SchemaGuard, SchemaWatch
from cache_pipeline.store import RedisClient, Store
from cache_pipeline.writer import Writer
from tasks.app import TRANSPORT, PipelineApp, broker_url, create_app, queue_name, transport_options
from tasks.consumer import QueueConsumer
from tasks.flood import FloodBrake
from tasks.handlers import tasks_by_type

STOP_TIMEOUT = 30.0  # seconds a consumer gets to finish its batch on shutdown


@dataclass
class Runtime:
    """What the consumers of one worker process share."""

    settings: Settings
    redis: RedisClient
    store: Store
    writer: Writer
    health: HealthState
    schema: SchemaWatch
    flood: FloodBrake
    stopping: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        client = connect(settings)
        layout = KeyLayout(settings.environment_prefix, settings.redis_cluster)
        store = Store(
            client, layout, ttl=settings.keys_ttl_in_secs, policy=settings.cache_update_policy
        )
        health = HealthState()
        schema = SchemaWatch(SchemaGuard(client, layout), health)
        writer = Writer(store, settings.environment_prefix, settings.max_future_skew_secs)
        flood = FloodBrake(PoisonGuard(FloodBound.from_settings(settings)), health)
        return cls(settings, client, store, writer, health, schema, flood)


class QueueConsumers(bootsteps.StartStopStep):
    """Worker bootstep: the raw-queue consumer threads."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.threads: list[threading.Thread] = []

    def start(self, parent: Any) -> None:
        runtime: Runtime = parent.app.runtime
        consumers = [new_consumer(parent.app, runtime) for _ in range(concurrency(runtime))]
        # Counted together before any thread runs: readiness never shows a partial set.
        _count_consumer(runtime, len(consumers))
        for index, consumer in enumerate(consumers):
            thread = threading.Thread(
                target=_run_consumer, args=(consumer, runtime), name=f"queue-consumer-{index}"
            )
            try:
                thread.start()
            except RuntimeError:  # no thread left: the ones not started are not live
                _count_consumer(runtime, index - len(consumers))
                raise
            self.threads.append(thread)
        logger.info("consuming {} with {} consumer(s)", runtime.settings.queue_url, len(consumers))

    def stop(self, parent: Any) -> None:
        runtime: Runtime = parent.app.runtime
        runtime.stopping.set()
        for thread in self.threads:
            thread.join(STOP_TIMEOUT)
        self.threads = [thread for thread in self.threads if thread.is_alive()]
        if self.threads:
            logger.error("{} consumer(s) did not stop in time", len(self.threads))

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def concurrency(runtime: Runtime) -> int:
    return runtime.settings.worker_concurrency


def new_consumer(app: PipelineApp, runtime: Runtime) -> QueueConsumer:
    """A consumer with its own kombu connection on the batching SQS transport."""
    settings = runtime.settings
    assert settings.queue_url is not None
    connection = Connection(
        broker_url(settings), transport=TRANSPORT, transport_options=transport_options(settings)
    )
    dead_letter = None
    if settings.dead_letter_queue_url:
        dead_letter = (queue_name(settings.dead_letter_queue_url), settings.dead_letter_queue_url)
    return QueueConsumer(
        connection,
        queue_name=queue_name(settings.queue_url),
        queue_url=settings.queue_url,
        batch_size=settings.batch_size,
        tasks=tasks_by_type(app),
        writer=runtime.writer,
        gate=RedisGate(runtime.store.ping, runtime.health, runtime.stopping),
        stopping=runtime.stopping,
        dead_letter=dead_letter,
        schema=runtime.schema,
        flood=runtime.flood,
    )


def _run_consumer(consumer: QueueConsumer, runtime: Runtime) -> None:
    """Run one consumer (already counted as live) and uncount it when it ends."""
    try:
        consumer.run()
    except Exception:
        logger.exception("a queue consumer stopped on an unexpected error")
    finally:
        _count_consumer(runtime, -1)


_consumer_lock = threading.Lock()


def _count_consumer(runtime: Runtime, delta: int) -> None:
    with _consumer_lock:
        count = runtime.health.consumers + delta
        runtime.health.set_consumers(count)
        metrics.CONSUMERS.set(count)


def build_worker(settings: Settings, runtime: Runtime) -> Any:
    """The Celery worker for ``settings``, with the consumer bootstep added."""
    app = create_app(settings)
    app.runtime = runtime
    app.writer = runtime.writer
    app.steps["worker"].add(QueueConsumers)
    assert settings.queue_url is not None
    return app.Worker(
        hostname=f"cache-pipeline@{queue_name(settings.queue_url)}",
        pool_cls="solo",
        concurrency=1,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        exclude_queues=[queue_name(settings.queue_url)],
        quiet=True,
        loglevel=settings.log_level.upper().replace("WARN", "WARNING"),
    )


def run_worker(settings: Settings) -> int:
    """Run the worker until a signal stops it; return the process exit code."""
    from api.server import serve_in_thread
    from cache_pipeline.error_reporting import configure_sentry
    from cache_pipeline.logs import configure_logging

    configure_logging(settings)
    configure_sentry(settings, celery=True, fastapi=True)
    runtime = Runtime.build(settings)
    http = serve_in_thread(settings, runtime.health, runtime.redis)
    try:
        RedisGate(runtime.store.ping, runtime.health, runtime.stopping).probe()
        worker = build_worker(settings, runtime)
        worker.start()
        return int(worker.exitcode or 0)
    finally:
        http.stop()
        runtime.redis.close()
