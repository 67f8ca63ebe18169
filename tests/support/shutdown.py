"""Watching a worker stop: the queue's counts, a worker frozen mid-batch, what it left behind.

moto counts ApproximateNumberOfMessagesNotVisible exactly: a message is in
flight from its receive until its visibility timeout ends, it is deleted, or
its visibility is changed (0: visible again at once). A test that gives the
worker a long visibility timeout (``LONG_VISIBILITY``) can therefore tell a
message the worker handed back (visible at once) from one it dropped (in
flight for a minute), and by receiving what is left it knows what was deleted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cache_pipeline.config import SQS_BATCH_LIMIT, CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from tests.support.applying import Applier
from tests.support.factory import parsed
from tests.support.servers import SqsServer, wait_until
from tests.support.snapshot import read_state
from tests.support.worker import WorkerProcess, queue_depth

if TYPE_CHECKING:
    import redis

LONG_VISIBILITY = 60  # seconds: a message the worker dropped stays in flight this long


def queue_counts(sqs: SqsServer, queue_url: str) -> tuple[int, int]:
    """(visible, in flight): ApproximateNumberOfMessages and ...NotVisible.

    moto counts them exactly: a message is in flight from its receive until its
    visibility timeout ends, it is deleted, or its visibility is changed to 0.
    """
    with closing(sqs.queue(queue_url)) as queue:
        depth = queue.depth()
    return depth.visible, depth.in_flight


def in_flight(sqs: SqsServer, queue_url: str) -> int:
    """Messages received and neither deleted nor visible again."""
    return queue_counts(sqs, queue_url)[1]


def wait_for_queue_empty(sqs: SqsServer, queue_url: str, *, timeout: float = 60) -> None:
    """Poll until the queue holds nothing, visible or in flight."""
    wait_until(lambda: queue_depth(sqs, queue_url) == 0, timeout=timeout, what="an empty queue")


def hold_frozen(
    freeze: Callable[[], None],
    thaw: Callable[[], None],
    sqs: SqsServer,
    queue_url: str,
    *,
    left_at_most: int | None = None,
    timeout: float = 30,
) -> int:
    """Freeze the queue's only worker at a moment it holds messages; return how many.

    ``freeze`` (SIGSTOP) is tried until the queue shows messages in flight while
    the worker is frozen (``thaw``, SIGCONT, in between), and, with
    ``left_at_most``, no more than that many messages left on it (part of a
    stream done). Nobody else consumes the queue, so the messages in flight are
    the worker's own, received and not yet deleted. The worker is left frozen: a
    fault injected now (SIGKILL, SIGTERM) lands mid-batch.
    """

    def frozen_holding() -> int:
        freeze()
        visible, held = queue_counts(sqs, queue_url)
        if held and (left_at_most is None or visible + held <= left_at_most):
            return held
        thaw()
        return 0

    return wait_until(
        frozen_holding, timeout=timeout, interval=0.01, what="the worker frozen holding messages"
    )


def freeze_holding(
    worker: WorkerProcess, sqs: SqsServer, queue_url: str, *, left_at_most: int | None = None
) -> int:
    """SIGSTOP ``worker`` while it holds messages in flight (``hold_frozen``); how many."""
    return hold_frozen(
        lambda: os.kill(worker.pid, signal.SIGSTOP),
        lambda: os.kill(worker.pid, signal.SIGCONT),
        sqs,
        queue_url,
        left_at_most=left_at_most,
    )


def terminate_frozen(worker: WorkerProcess, timeout: float = 30) -> tuple[int, float]:
    """SIGTERM a SIGSTOPped worker, let it run on; its exit code and the seconds it took."""
    assert worker.process is not None
    started = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    os.kill(worker.pid, signal.SIGCONT)
    try:
        code = worker.process.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker ignored SIGTERM:\n{worker.output()}") from None
    return code, time.monotonic() - started


def shutdown_report(output: str) -> str:
    """The message of the worker's shutdown line (``tasks.shutdown``); fails when there is none."""
    lines = [line for line in output.splitlines() if '"shutdown: ' in line]
    assert len(lines) == 1, f"expected one shutdown line, found {len(lines)}:\n{output}"
    message: str = json.loads(lines[0])["msg"]
    return message


def shutdown_figures(report: str) -> dict[str, int]:
    """The counts of a shutdown line, by what they count."""
    patterns = {
        "deleted": r"(\d+) message\(s\) written and deleted",
        "unconfirmed": r"(\d+) written but not confirmed deleted",
        "released": r"(\d+) handed back to the queue unwritten",
        "in_flight": r"(\d+) left in flight",
        "unfinished": r"(\d+) of \d+ consumer thread\(s\)",
    }
    figures = {}
    for name, pattern in patterns.items():
        found = re.search(pattern, report)
        assert found is not None, f"{name} missing from: {report}"
        figures[name] = int(found.group(1))
    return figures


@dataclass
class Leftover:
    """What a stopped worker left on its queue, and therefore what it deleted."""

    receipts: list[str]  # the messages still on the queue, hidden by the test for now
    remaining: list[dict[str, Any]]
    deleted: list[dict[str, Any]]  # sent, and no longer on the queue


def take_leftover(
    sqs: SqsServer, queue_url: str, sent: Sequence[dict[str, Any]], *, hide: int = 60
) -> Leftover:
    """Receive every message still on the queue (hiding them ``hide`` s); the rest was deleted.

    Call it once nothing is in flight: then every message still there is visible.
    """
    receipts: list[str] = []
    bodies: Counter[str] = Counter()
    with closing(sqs.queue(queue_url, visibility_timeout=hide)) as queue:
        for _ in range(len(sent) + SQS_BATCH_LIMIT):
            messages = queue.receive(SQS_BATCH_LIMIT, 0)
            if not messages and queue.depth().visible == 0:
                break
            for message in messages:
                receipts.append(message.receipt)
                bodies[message.body] += 1
    remaining, deleted = [], []
    for body in sent:
        text = json.dumps(body)
        if bodies[text]:
            bodies[text] -= 1
            remaining.append(body)
        else:
            deleted.append(body)
    assert not +bodies, f"on the queue but never sent: {list(+bodies)[:3]}"
    return Leftover(receipts, remaining, deleted)


def give_back(sqs: SqsServer, queue_url: str, leftover: Leftover) -> None:
    """Make the messages ``take_leftover`` hid visible again at once."""
    with closing(sqs.queue(queue_url)) as queue:
        assert queue.release(leftover.receipts, 0) == []


def assert_deleted_were_written(
    admin: redis.Redis, prefix: str, deleted: Sequence[dict[str, Any]]
) -> None:
    """Every deleted message has its effect in Redis: writing them all again changes nothing.

    (With versioned writes a message is in effect once its keys hold its version or
    a later one.)
    """

    layout = KeyLayout(prefix)
    before = read_state(admin, layout)
    store = Applier.of(admin, layout, ttl=604800, policy=CacheUpdatePolicy.UPSERT)
    store.apply_batch([parsed(body, prefix) for body in deleted])
    after = read_state(admin, layout)
    changed = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    assert not changed, f"deleted from the queue but not in Redis: {changed[:10]}"
