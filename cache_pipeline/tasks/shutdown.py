"""The worker's stop: bounded by SHUTDOWN_BUDGET_SECS whatever Redis and SQS do, then one line.

On SIGTERM Celery stops the ``QueueConsumers`` bootstep (``cache_pipeline.tasks.worker``),
which calls ``stop_consumers``:

1. ``stopping`` is set. No consumer receives again; a Redis call in flight is
   not retried any more (``StopAwareRetry``), so it ends within
   REDIS_TIMEOUT_SECS; every SQS call from now on ends by the deadline less
   CLOSE_SECS (``SqsQueue.stop_by``).
2. The consumers finish the turn they are in, for up to DRAIN_SECS: a long poll
   in flight returns within its 5 s, a batch received meanwhile goes back
   unwritten, a batch being written is written (its deletes go to the deleter)
   or, when Redis cannot take it, goes back. What goes back is made visible
   again at once (ChangeMessageVisibility 0).
3. The deleter sends what is pending until the deadline less CLOSE_SECS, then
   drops the rest (back after the visibility timeout, already written).
4. The queue's connections are shut down: whatever still waits on SQS (a long
   poll or a delete to an endpoint that stopped answering) wakes with an error.
   At the deadline the stop returns, whatever is still running: a thread held
   longer in a Redis call (REDIS_TIMEOUT_SECS above the budget) is a daemon
   thread, left behind; its messages come back after the visibility timeout.
5. One line tells what the stop left (``StopReport.line``).

Nothing is lost either way: an undeleted message comes back after its
visibility timeout and writing it again changes nothing (versioned writes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from loguru import logger

from cache_pipeline.config import SHUTDOWN_BUDGET_SECS
from cache_pipeline.sqs.client import SqsQueue
from cache_pipeline.tasks.consumer import QueueConsumer
from cache_pipeline.tasks.deleter import DeleteBatcher, Settled, Tally
from cache_pipeline.tasks.pipeline import LONG_POLL_SECONDS

DRAIN_SECS = LONG_POLL_SECONDS + 1.0  # the consumers' own time: a long poll in flight returns
CLOSE_SECS = 0.5  # after the SQS connections are shut: threads waiting on them end
assert DRAIN_SECS + CLOSE_SECS < SHUTDOWN_BUDGET_SECS, "the deleter needs time to flush"


@dataclass(frozen=True)
class StopReport:
    """What one stop did and left, from SIGTERM to the end of the budget."""

    seconds: float
    consumers: int
    unfinished: int  # consumer threads still running at the end
    held: int  # messages those threads held (back after the visibility timeout)
    deleted: int  # written (or parked) and deleted
    unconfirmed: int  # written, but the delete failed, was dropped or is unanswered
    released: int  # not written, visible again at once
    not_released: int  # not written, and the hand-back failed
    senders_unfinished: int  # delete sender threads still waiting on SQS

    @property
    def clean(self) -> bool:
        """Everything written was deleted and everything else handed back."""
        return not (self.unfinished or self.unconfirmed or self.not_released)

    def line(self) -> str:
        return (
            f"shutdown: done in {self.seconds:.1f} s (budget {SHUTDOWN_BUDGET_SECS:g} s);"
            f" since SIGTERM {self.deleted} message(s) written and deleted,"
            f" {self.unconfirmed} written but not confirmed deleted,"
            f" {self.released} handed back to the queue unwritten,"
            f" {self.not_released + self.held} left in flight until their visibility timeout;"
            f" {self.unfinished} of {self.consumers} consumer thread(s) and"
            f" {self.senders_unfinished} delete sender(s) did not finish"
        )


def stop_consumers(
    *,
    stopping: threading.Event,
    queue: SqsQueue,
    consumers: Sequence[tuple[threading.Thread, QueueConsumer]],
    deleter: DeleteBatcher | None,
    tally: Tally,
    budget: float = SHUTDOWN_BUDGET_SECS,
) -> StopReport:
    """Stop the consumers and the deleter within ``budget`` seconds; log and return the report."""
    started = time.monotonic()
    deadline = started + budget
    closing = deadline - CLOSE_SECS
    tally.watch()
    stopping.set()
    queue.stop_by(closing)
    threads = [thread for thread, _ in consumers]
    _join(threads, min(started + DRAIN_SECS, closing))
    if deleter is not None:
        deleter.close(max(0.0, closing - time.monotonic()))
    queue.close()
    senders = deleter.threads if deleter is not None else []
    _join([*threads, *senders], deadline)
    report = _report(started, consumers, deleter, tally.counts())
    logger.log("INFO" if report.clean else "WARNING", report.line())
    return report


def _join(threads: Sequence[threading.Thread], until: float) -> None:
    """Wait for every thread, until ``until`` (``time.monotonic()``) at most."""
    for thread in threads:
        thread.join(max(0.0, until - time.monotonic()))


def _report(
    started: float,
    consumers: Sequence[tuple[threading.Thread, QueueConsumer]],
    deleter: DeleteBatcher | None,
    settled: dict[Settled, int],
) -> StopReport:
    running = [consumer for thread, consumer in consumers if thread.is_alive()]
    return StopReport(
        seconds=time.monotonic() - started,
        consumers=len(consumers),
        unfinished=len(running),
        held=sum(consumer.holding for consumer in running),
        deleted=settled.get(Settled.DELETED, 0),
        unconfirmed=settled.get(Settled.DELETE_FAILED, 0)
        + settled.get(Settled.DELETE_UNSENT, 0)
        + (deleter.unconfirmed if deleter is not None else 0),
        released=settled.get(Settled.RELEASED, 0),
        not_released=settled.get(Settled.NOT_RELEASED, 0),
        senders_unfinished=deleter.alive() if deleter is not None else 0,
    )
