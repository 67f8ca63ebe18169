"""``cache-pipeline worker``: a Celery worker whose consumers read the raw queue.

Celery runs the process (signals, warm and soft shutdown, the task registry,
the solo pool), but its own task consumer is given no queue: the queue carries
raw JSON, which Celery's consumer would reject. Instead the ``QueueConsumers``
bootstep starts ``Settings.consumers`` ``QueueConsumer`` threads on the queue
(``cache_pipeline.tasks.consumer``: WORKER_CONCURRENCY, or a number derived from BATCH_SIZE),
sharing one ``SqsQueue`` and one ``DeleteBatcher``; each
runs the per-type tasks (``cache_pipeline.tasks.handlers.TaskRunner``) in its own thread, so
that many receives are in flight at once. On SIGTERM the worker stops them
within SHUTDOWN_BUDGET_SECS, whatever Redis and SQS do (``cache_pipeline.tasks.shutdown``):
each finishes the batch it holds (written messages are deleted, the others are
made visible again at once), the pending deletes are sent, one line says what
was left, then the process exits 0.
Should every consumer thread end while the worker is not stopping, the worker
shuts down with exit code 1 (and /livez says so meanwhile), so that its
supervisor starts a new one.

The HTTP surface (/livez, /readyz, /metrics) runs in a thread of this process,
so /metrics counts every message this worker handles.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps
from celery.platforms import EX_FAILURE
from celery.worker import state as worker_state
from loguru import logger

from cache_pipeline.config import Settings
from cache_pipeline.contract.plan import Planner
from cache_pipeline.errors import StoreError, StoreUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState
from cache_pipeline.sqs.client import SqsQueue
from cache_pipeline.store.connection import connect
from cache_pipeline.store.schema import SchemaGuard
from cache_pipeline.store.writer import RedisClient, Store
from cache_pipeline.tasks.app import PipelineApp, create_app, queue_name
from cache_pipeline.tasks.backoff import RedisGate
from cache_pipeline.tasks.consumer import DeleteBatcher, QueueConsumer, Tally
from cache_pipeline.tasks.flood import FloodBrake
from cache_pipeline.tasks.handlers import TaskRunner
from cache_pipeline.tasks.pipeline import TASK_NAMES
from cache_pipeline.tasks.poison_guard import FloodBound, PoisonGuard
from cache_pipeline.tasks.schema_watch import SchemaWatch
from cache_pipeline.tasks.shutdown import stop_consumers

HTTP_STOP_SECS = 2.0  # after the consumers: the HTTP surface's own stop (a probe may hang)


@dataclass
class Runtime:
    """What the consumers of one worker process share."""

    settings: Settings
    redis: RedisClient
    store: Store
    planner: Planner
    queue: SqsQueue
    health: HealthState
    schema: SchemaWatch
    flood: FloodBrake
    gate: RedisGate
    stopping: threading.Event = field(default_factory=threading.Event)
    tally: Tally = field(default_factory=Tally)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        stopping = threading.Event()
        client = connect(settings, stopped=lambda: stopping.is_set())
        planner = Planner.from_settings(settings)
        store = Store(
            client,
            planner.layout,
            ttl=settings.keys_ttl_in_secs,
            policy=settings.cache_update_policy,
        )
        health = HealthState(
            window=settings.not_ready_after_secs, stall_after=settings.stalled_after_secs
        )
        return cls(
            settings=settings,
            redis=client,
            store=store,
            planner=planner,
            queue=SqsQueue.from_settings(settings),
            health=health,
            schema=SchemaWatch(SchemaGuard(client, planner.layout), health),
            flood=FloodBrake(PoisonGuard(FloodBound.from_settings(settings)), health),
            gate=RedisGate(store.probe_write, health, stopping),
            stopping=stopping,
        )

    def ping_redis(self) -> None:
        """One PING at startup, reported to health and metrics (a failure is not fatal)."""
        try:
            up = self.store.ping()
        except (StoreUnavailable, StoreError):
            up = False
        self.health.set_redis(up)
        metrics.REDIS_UP.set(1 if up else 0)


class QueueConsumers(bootsteps.StartStopStep):
    """Worker bootstep: the raw-queue consumer threads."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.running: list[tuple[threading.Thread, QueueConsumer]] = []
        self.deleter: DeleteBatcher | None = None
        self._stopped = False

    def start(self, parent: Any) -> None:
        runtime: Runtime = parent.app.runtime
        settings = runtime.settings
        assert settings.queue_url is not None
        runner = TaskRunner(parent.app, list(TASK_NAMES.values()), hostname=parent.hostname)
        count = settings.consumers
        self.deleter = DeleteBatcher(
            runtime.queue,
            runtime.health,
            senders=delete_senders(count),
            name="queue-deleter",
            tally=runtime.tally,
        )
        consumers = [
            new_consumer(runtime, runner, self.deleter, f"queue-consumer-{i}") for i in range(count)
        ]
        runtime.health.supervise()
        # Counted together before any thread runs: readiness never shows a partial set.
        _count_consumers(runtime, len(consumers))
        for index, consumer in enumerate(consumers):
            thread = threading.Thread(
                target=_run_consumer, args=(consumer, runtime), name=consumer.name, daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # no thread left: the ones not started are not live
                _count_consumers(runtime, index - len(consumers))
                raise
            self.running.append((thread, consumer))
        logger.info("consuming {} with {} consumer(s)", settings.queue_url, len(consumers))

    def stop(self, parent: Any) -> None:
        """Stop the consumers within SHUTDOWN_BUDGET_SECS (``tasks.shutdown``); once."""
        if self._stopped:
            return
        self._stopped = True
        runtime: Runtime = parent.app.runtime
        stop_consumers(
            stopping=runtime.stopping,
            queue=runtime.queue,
            consumers=self.running,
            deleter=self.deleter,
            tally=runtime.tally,
        )

    def terminate(self, parent: Any) -> None:
        self.stop(parent)

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def delete_senders(consumers: int) -> int:
    """Delete calls in flight for that many consumers: one per two, at least two."""
    return max(2, (consumers + 1) // 2)


def new_consumer(
    runtime: Runtime, runner: TaskRunner, deleter: DeleteBatcher, name: str
) -> QueueConsumer:
    """A consumer of the runtime's queue, running the tasks through ``runner``."""
    return QueueConsumer(
        name=name,
        queue=runtime.queue,
        store=runtime.store,
        parse=runtime.planner.parse,
        run=runner,
        gate=runtime.gate,
        health=runtime.health,
        stopping=runtime.stopping,
        deleter=deleter,
        batch_size=runtime.settings.batch_size,
        schema=runtime.schema,
        flood=runtime.flood,
        tally=runtime.tally,
    )


def _run_consumer(consumer: QueueConsumer, runtime: Runtime) -> None:
    """Run one consumer (already counted as live) and uncount it when it ends."""
    try:
        consumer.run()
    except BaseException:
        logger.exception("queue consumer {} stopped on an unexpected error", consumer.name)
        raise
    finally:
        runtime.health.forget(consumer.name)
        left = _count_consumers(runtime, -1)
        if left == 0 and not runtime.stopping.is_set():
            logger.error("every queue consumer has stopped: the worker exits with code 1")
            worker_state.should_stop = EX_FAILURE  # type: ignore[assignment]  # Celery acts on it


_consumer_lock = threading.Lock()


def _count_consumers(runtime: Runtime, delta: int) -> int:
    with _consumer_lock:
        count = runtime.health.consumers + delta
        runtime.health.set_consumers(count)
        metrics.CONSUMERS.set(count)
        return count


def build_worker(settings: Settings, runtime: Runtime) -> Any:
    """The Celery worker for ``settings``, with the consumer bootstep added."""
    app: PipelineApp = create_app(settings)
    app.runtime = runtime
    app.planner = runtime.planner
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
    from cache_pipeline.api.server import serve_in_thread
    from cache_pipeline.ops.error_reporting import configure_sentry
    from cache_pipeline.ops.logs import configure_logging

    configure_logging(settings)
    configure_sentry(settings, celery=True, fastapi=True)
    warning = settings.liveness_warning()
    if warning:
        logger.warning(warning)
    runtime = Runtime.build(settings)
    http = serve_in_thread(settings, runtime.health, runtime.redis)
    try:
        runtime.ping_redis()
        worker = build_worker(settings, runtime)
        worker.start()
        return int(worker.exitcode or 0)
    finally:
        runtime.stopping.set()  # also when Celery never started the consumers
        http.stop(HTTP_STOP_SECS)
        runtime.redis.close()
