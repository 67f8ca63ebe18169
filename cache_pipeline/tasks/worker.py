"""``cache-pipeline worker``: a Celery worker whose consumers read the raw queue.

Celery runs the process (signals, warm and soft shutdown, the task registry,
the solo pool), but its own task consumer is given no queue: the queue carries
raw JSON, which Celery's consumer would reject. Instead the ``QueueConsumers``
bootstep starts ``Settings.consumers`` consumer threads (WORKER_CONCURRENCY, or a
number derived from BATCH_SIZE), each with its own ``Pipeline``
(``cache_pipeline.tasks.pipeline``), sharing one ``SqsQueue``, one
``DeleteBatcher`` and the gates; each runs the per-type tasks in its own thread,
so that many receives are in flight at once. On SIGTERM the worker stops them
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

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps
from celery.platforms import EX_FAILURE
from celery.worker import state as worker_state
from loguru import logger

from cache_pipeline.config import WorkerSettings
from cache_pipeline.contract.plan import Planner
from cache_pipeline.errors import QueueFault, QueueUnavailable, StoreError, StoreUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState
from cache_pipeline.sqs.client import SqsQueue
from cache_pipeline.store.connection import connect
from cache_pipeline.store.schema import SchemaGuard
from cache_pipeline.store.writer import RedisClient, Store
from cache_pipeline.tasks.app import PipelineApp, create_app, queue_name
from cache_pipeline.tasks.consumer import QueueConsumer
from cache_pipeline.tasks.deleter import DeleteBatcher, Tally
from cache_pipeline.tasks.flood_window import FloodLimits, FloodWindow
from cache_pipeline.tasks.gates import FloodGate, Gates, RedisGate, SchemaGate
from cache_pipeline.tasks.handlers import TaskRunner
from cache_pipeline.tasks.pipeline import (
    TASK_NAMES,
    GiveBack,
    Receive,
    Settle,
    build_pipeline,
)
from cache_pipeline.tasks.queue_watch import QueueWatch
from cache_pipeline.tasks.shutdown import stop_consumers

HTTP_STOP_SECS = 2.0  # after the consumers: the HTTP surface's own stop (a probe may hang)


@dataclass
class Runtime:
    """What the consumers of one worker process share."""

    settings: WorkerSettings
    redis: RedisClient
    store: Store
    planner: Planner
    queue: SqsQueue
    health: HealthState
    gates: Gates
    stopping: threading.Event = field(default_factory=threading.Event)
    tally: Tally = field(default_factory=Tally)

    @classmethod
    def build(cls, settings: WorkerSettings) -> Runtime:
        stopping = threading.Event()
        client = connect(settings, stopped=lambda: stopping.is_set())
        planner = Planner.from_settings(settings)
        store = Store(
            client,
            planner.layout,
            ttl=settings.keys_ttl_in_secs,
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
            gates=Gates(
                redis=RedisGate(store.probe_write, health, stopping),
                flood=FloodGate(FloodWindow(FloodLimits.from_settings(settings)), health),
                schema=SchemaGate(SchemaGuard(client, planner.layout), health),
            ),
            stopping=stopping,
        )

    def ping_redis(self) -> None:
        """One PING at startup, reported to health, metrics and the log (not fatal)."""
        try:
            up = self.store.ping()
        except (StoreUnavailable, StoreError) as exc:
            up = False
            logger.warning(
                "Redis at {}:{} does not answer at startup, consuming waits until it does: {}",
                self.settings.redis_host,
                self.settings.redis_port,
                exc,
            )
        self.health.set_redis(up)
        metrics.REDIS_UP.set(1 if up else 0)

    def look_at_the_queue(self) -> None:
        """One look at the queue at startup: a queue SQS cannot be asked about is logged."""
        try:
            self.queue.depth()
        except QueueUnavailable as exc:
            if exc.fault is not QueueFault.ACCESS_DENIED:  # answered: it is there
                logger.warning(
                    "the queue {} cannot be reached at startup ({}), receiving retries: {}",
                    self.settings.queue_url,
                    exc.fault.value,
                    exc.detail,
                )


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
        runner = TaskRunner(parent.app, list(TASK_NAMES.values()), hostname=parent.hostname)
        count = settings.consumers
        self.deleter = DeleteBatcher(
            runtime.queue,
            runtime.health,
            senders=delete_senders(count),
            name="queue-deleter",
            tally=runtime.tally,
        )
        runtime.gates.deletes = self.deleter
        consumers = [
            new_consumer(runtime, runner, self.deleter, f"queue-consumer-{i}") for i in range(count)
        ]
        QueueWatch(runtime.queue, runtime.stopping).start()
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
    """A consumer thread's pipeline on the runtime's queue, running the tasks through ``runner``."""
    give_back = GiveBack(runtime.queue, runtime.stopping, runtime.tally)
    receive = Receive(
        runtime.queue, runtime.settings.batch_size, runtime.health, runtime.stopping, give_back
    )
    settle = Settle(runtime.queue, deleter, give_back, beat=lambda: runtime.health.beat(name))
    pipeline = build_pipeline(
        receive, runtime.planner.decoder, runner, runtime.gates, runtime.store, settle
    )
    return QueueConsumer(name, pipeline, runtime.gates, runtime.health, runtime.stopping)


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


def build_worker(settings: WorkerSettings, runtime: Runtime) -> Any:
    """The Celery worker for ``settings``, with the consumer bootstep added."""
    app: PipelineApp = create_app(settings)
    app.runtime = runtime
    app.planner = runtime.planner
    app.steps["worker"].add(QueueConsumers)
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


def run_worker(settings: WorkerSettings) -> int:
    """Run the worker until a signal stops it; return the process exit code."""
    from cache_pipeline.api.server import serve_in_thread
    from cache_pipeline.ops.error_reporting import configure_sentry
    from cache_pipeline.ops.logs import configure_logging

    configure_logging(settings)
    logging.captureWarnings(True)  # Celery's SecurityWarning (run as root) as a JSON line too
    configure_sentry(settings, celery=True, fastapi=True)
    warning = settings.liveness_warning()
    if warning:
        logger.warning(warning)
    runtime = Runtime.build(settings)
    http = serve_in_thread(settings, runtime.health, runtime.redis)
    try:
        runtime.ping_redis()
        runtime.look_at_the_queue()
        worker = build_worker(settings, runtime)
        worker.start()
        return int(worker.exitcode or 0)
    finally:
        runtime.stopping.set()  # also when Celery never started the consumers
        http.stop(HTTP_STOP_SECS)
        runtime.redis.close()
