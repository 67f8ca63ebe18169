"""The queue's depth as a gauge: how many messages wait, polled from SQS by one thread.

``persistent_cache_queue_messages{queue="main"|"dlq", state="visible"|"in_flight"}``
is what tells a halted pipeline (messages wait, nothing is applied: the
``CachePipelineHalted`` alert) from an idle one. SQS's counts are approximate and a
minute late at most. A role without ``sqs:GetQueueAttributes`` gets one warning and
no series (the alert then cannot fire; docs/iam.md); any other failure drops the
series until a poll succeeds again, so no alert reads a stale depth.
"""

from __future__ import annotations

import contextlib
import threading

from loguru import logger

from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.sqs.client import SqsQueue

POLL_SECONDS = 30.0
STATES = ("visible", "in_flight")


class QueueWatch:
    """Polls the depth of the queue (and of its dead-letter queue) until ``stopping`` is set."""

    def __init__(
        self, queue: SqsQueue, stopping: threading.Event, *, interval: float = POLL_SECONDS
    ) -> None:
        self.queue = queue
        self.stopping = stopping
        self.interval = interval
        self._warned = False
        self._thread = threading.Thread(target=self._run, name="queue-watch", daemon=True)

    def start(self) -> QueueWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.poll()
            self.stopping.wait(self.interval)

    def poll(self) -> None:
        """One look at each queue; never raises."""
        queues = {"main": False} | ({"dlq": True} if self.queue.has_dead_letter else {})
        for name, dead_letter in queues.items():
            try:
                depth = self.queue.depth(dead_letter=dead_letter)
            except QueueUnavailable as exc:
                self._failed(name, exc)
                continue
            except Exception:  # a bug here must never reach the consumers
                logger.exception("reading the {} queue's depth failed", name)
                continue
            metrics.QUEUE_MESSAGES.labels(name, "visible").set(depth.visible)
            metrics.QUEUE_MESSAGES.labels(name, "in_flight").set(depth.in_flight)

    def _failed(self, name: str, exc: QueueUnavailable) -> None:
        for state in STATES:
            with contextlib.suppress(KeyError):  # never set yet
                metrics.QUEUE_MESSAGES.remove(name, state)
        if exc.fault is QueueFault.ACCESS_DENIED and not self._warned:
            self._warned = True
            logger.warning(
                "the worker may not read the {} queue's depth (sqs:GetQueueAttributes):"
                " persistent_cache_queue_messages is not exported: {}",
                name,
                exc.detail,
            )
        else:
            logger.debug("reading the {} queue's depth failed: {}", name, exc)
