"""The process's DeleteBatcher: deletes from every consumer, ten per call, nothing lost or stuck."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

from cache_pipeline.config import load_settings
from cache_pipeline.contract.plan import Outcome, Planner
from cache_pipeline.errors import QueueFault
from cache_pipeline.ops.health import HealthState, Reason
from cache_pipeline.tasks.deleter import DeleteBatcher
from cache_pipeline.tasks.delivery import Delivery
from tests.support import factory
from tests.support.memory_queue import MemoryQueue
from tests.support.servers import wait_until


def applied(queue: MemoryQueue, count: int) -> list[Delivery]:
    """``count`` messages sent, received and marked applied, as a consumer hands them over."""
    planner = Planner.from_settings(load_settings())
    queue.send(json.dumps(factory.usage("c", 100 + i, "seats", i)) for i in range(count))
    deliveries = []
    for received in queue.receive(count, 0):
        planned = planner.plan(planner.parse(received.body))
        written = Delivery(received, time.perf_counter(), planned=planned, result=Outcome.WRITTEN)
        deliveries.append(written)
    assert len(deliveries) == count
    return deliveries


def test_deletes_of_many_consumers_leave_ten_to_a_call_and_empty_the_queue() -> None:
    queue = MemoryQueue()
    deliveries = applied(queue, 95)
    deleter = DeleteBatcher(queue, HealthState(), senders=2)
    gate = threading.Event()
    original = queue.delete

    def slow_delete(receipts: Sequence[str]) -> list[str]:
        gate.wait(5)  # both senders busy: the rest queues up behind them
        return original(receipts)

    queue.delete = slow_delete  # type: ignore[method-assign]
    for one in deliveries:  # one message per consumer turn, as at BATCH_SIZE=1
        deleter.submit([one], [])
    gate.set()
    assert deleter.flush(10)
    deleter.close()
    assert queue.bodies() == []
    deletes = queue.calls.count("delete")
    assert deletes <= 2 + (95 - 2 + 9) // 10  # the first two alone, then full calls
    assert deletes < 95


def test_a_lone_message_is_deleted_at_once() -> None:
    queue = MemoryQueue()
    (one,) = applied(queue, 1)
    deleter = DeleteBatcher(queue, HealthState(), senders=2)
    deleter.submit([one], [])
    wait_until(lambda: queue.bodies() == [], timeout=5, what="the delete")
    deleter.close()


def test_failed_deletes_count_mark_readiness_and_recover() -> None:
    queue = MemoryQueue()
    deliveries = applied(queue, 3)
    health = HealthState()
    deleter = DeleteBatcher(queue, health, senders=1)
    queue.fail("delete", QueueFault.THROTTLED)
    deleter.submit(deliveries[:1], [])
    wait_until(lambda: deleter.failures == 1, timeout=5, what="the failure counted")
    assert health.failing_since(Reason.QUEUE_DELETES_FAILING) is not None
    assert len(queue.bodies()) == 3  # left to come back after their visibility timeout
    queue.fail("delete", None)
    deleter.submit(deliveries[1:], [])
    assert deleter.flush(5)
    assert deleter.failures == 0
    assert health.failing_since(Reason.QUEUE_DELETES_FAILING) is None
    assert len(queue.bodies()) == 1
    deleter.close()


def test_close_sends_what_is_pending() -> None:
    queue = MemoryQueue()
    deliveries = applied(queue, 25)
    deleter = DeleteBatcher(queue, HealthState(), senders=1)
    deleter.submit(deliveries, [])
    deleter.close()
    assert queue.bodies() == []


def test_a_full_backlog_makes_submit_wait_and_call_back_meanwhile() -> None:
    queue = MemoryQueue()
    deliveries = applied(queue, 12)
    deleter = DeleteBatcher(queue, HealthState(), senders=1, max_pending=10)
    gate, sending = threading.Event(), threading.Event()
    original = queue.delete

    def stuck_delete(receipts: Sequence[str]) -> list[str]:
        sending.set()
        gate.wait(10)  # SQS does not answer: the backlog stays full
        return original(receipts)

    queue.delete = stuck_delete  # type: ignore[method-assign]
    deleter.submit(deliveries[:1], [])
    assert sending.wait(5)  # the only sender took it and hangs
    deleter.submit(deliveries[1:11], [])  # ten pending: the backlog is full
    beats: list[float] = []
    submitted = threading.Thread(
        target=deleter.submit,
        args=(deliveries[11:], []),
        kwargs={"waiting": lambda: beats.append(1)},
    )
    submitted.start()
    wait_until(lambda: len(beats) >= 2, timeout=5, what="the waiting consumer's beats")
    assert submitted.is_alive()  # still waiting for room
    gate.set()
    submitted.join(10)
    assert not submitted.is_alive()
    deleter.close()
    assert queue.bodies() == []
