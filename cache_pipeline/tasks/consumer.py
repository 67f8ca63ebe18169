"""A consumer thread: while the worker runs, pass the gates, then one turn of the pipeline.

Every turn beats the consumer's heartbeat (/livez). The gates
(``cache_pipeline.tasks.gates``) hold it while Redis cannot take writes, a poison
flood or the schema marker stops consumption; the pipeline
(``cache_pipeline.tasks.pipeline``) takes one batch from receive to delete.
Nothing a message or a dependency does ends the loop: an unexpected error in a
turn is logged and counted, its messages come back, and the next turn starts
after a pause. Once ``stopping`` is set (SIGTERM) the turn in progress ends and
no other starts (``cache_pipeline.tasks.shutdown`` bounds the whole stop).
"""

from __future__ import annotations

import threading

from loguru import logger

from cache_pipeline.ops import metrics
from cache_pipeline.ops.health import HealthState
from cache_pipeline.tasks.gates import Gates
from cache_pipeline.tasks.pipeline import Pipeline

HALT_POLL = 1.0  # seconds between looks while a gate keeps consumption stopped
TURN_ERROR_PAUSE = 1.0  # after an unexpected error in a turn: no hot loop


class QueueConsumer:
    """Runs the pipeline in the calling thread until ``stopping`` is set."""

    def __init__(
        self,
        name: str,
        pipeline: Pipeline,
        gates: Gates,
        health: HealthState,
        stopping: threading.Event,
    ) -> None:
        self.name = name
        self.pipeline = pipeline
        self.gates = gates
        self.health = health
        self.stopping = stopping

    @property
    def holding(self) -> int:
        """Messages received and not yet settled."""
        return self.pipeline.holding

    def run(self) -> None:
        """Turn after turn until asked to stop; never raises."""
        while not self.stopping.is_set():
            self.beat()
            try:
                self.turn()
            except Exception:  # a bug must not end consumption: the batch comes back
                metrics.RECEIVE_ERRORS.inc()
                logger.exception("a turn of the queue consumer failed; its messages come back")
                self.stopping.wait(TURN_ERROR_PAUSE)

    def beat(self) -> None:
        self.health.beat(self.name)

    def turn(self) -> None:
        """One batch through the pipeline, once every gate lets the consumer through."""
        if not self.gates.open(self.beat):
            self.stopping.wait(HALT_POLL)
            return
        self.pipeline.turn()
