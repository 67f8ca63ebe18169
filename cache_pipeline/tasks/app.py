"""The Celery app: the four per-type tasks, kombu's SQS transport on one predefined queue.

The worker's own Celery consumer is given no queue (the queue carries raw JSON
and is read by ``cache_pipeline.tasks.consumer``), so the broker connection matters to
producers: ``app.send_task(name, args=[message], queue=<queue name>)`` puts a
Celery message on the same queue, which the worker runs through the same task.
No queue is listed or created (``predefined_queues``), and everything that
would need one more queue is off: remote control (pidbox), events, heartbeats,
gossip, mingle and the result backend. Credentials come from boto3's default
chain; only the region and an optional endpoint (LocalStack, moto) are set.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from cache_pipeline.config import WorkerSettings
from cache_pipeline.contract.plan import Planner


class PipelineApp(Celery):
    """A Celery app that knows the planner its tasks use in this process."""

    planner: Planner | None = None
    runtime: Any = None  # cache_pipeline.tasks.worker.Runtime, set by the worker before it starts


def queue_name(queue_url: str) -> str:
    """The queue's name: the last path segment of its URL."""
    name = urlsplit(queue_url).path.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise ValueError(f"QUEUE_URL {queue_url!r} does not end with a queue name")
    return name


def broker_url(settings: WorkerSettings) -> str:
    """``sqs://`` or ``sqs://host:port`` for SQS_ENDPOINT_URL (the scheme goes in ``is_secure``)."""
    if not settings.sqs_endpoint_url:
        return "sqs://"
    return "sqs://" + urlsplit(settings.sqs_endpoint_url).netloc


def transport_options(settings: WorkerSettings) -> dict[str, Any]:
    """kombu SQS transport options for the queue of QUEUE_URL."""
    options: dict[str, Any] = {
        "region": settings.aws_region,
        "predefined_queues": {queue_name(settings.queue_url): {"url": settings.queue_url}},
    }
    if settings.sqs_endpoint_url:
        options["is_secure"] = urlsplit(settings.sqs_endpoint_url).scheme == "https"
    return options


def create_app(settings: WorkerSettings) -> PipelineApp:
    """The configured app with the four per-type tasks registered."""
    from cache_pipeline.tasks.handlers import register_tasks

    app = PipelineApp("cache_pipeline", set_as_current=False)
    app.conf.update(
        broker_url=broker_url(settings),
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=queue_name(settings.queue_url),
        task_create_missing_queues=False,
        task_ignore_result=True,
        result_backend=None,
        # One (disabled) backend for every thread: Celery otherwise makes one per thread, and
        # finding its class reads every installed package's entry points, which each consumer
        # thread would pay on its first task.
        result_backend_thread_safe=True,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_pool="solo",
        # Modules the worker imports when it starts (CELERY_IMPORTS): signal handlers,
        # instrumentation. Celery's loader imports them before any task runs.
        imports=settings.celery_import_modules,
    )
    register_tasks(app)
    return app
