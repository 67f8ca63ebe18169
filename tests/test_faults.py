"""Fault injection against the real worker: the final Redis state must match the contract model.

Every scenario seeds one snapshot per customer, then sends a deterministic
stream (usage, credits and snapshots with unique timestamps, shuffled, some
duplicated: the final state does not depend on delivery order) in two halves:
the first until the workers have handled a quarter of it, then the fault, then
the second half while the fault lasts; it then waits until the queue is empty
(every message deleted, so every write done) and compares Redis with what
the contract model (``tests/support/model.py``) says, once. Each prints one
line: messages sent, written, skipped, parked, lost (keys of the model Redis
does not hold or holds with another value, counted from that one reading: 0, or
the test fails), the time
until the worker handled a message again after the fault ended (resume) and
until the queue was empty (converge).

Two faults destroy data by nature, and the model says what must hold after them:

* Redis SIGKILLed and restarted empty: what Redis held is gone (no
  persistence), and so are the messages already deleted from the queue. After
  the restart a "takeover" stream is sent, one full snapshot per customer
  (every feature and credit with its usage) at versions above the whole first
  stream, then updates. It names every key the first stream can write, so the
  model of everything sent equals the model of the takeover alone, whatever
  part of the first stream reached the new Redis. The test proves the worker
  recovers without a restart, applies everything delivered afterwards, and
  reports the loss (``cache-pipeline resync`` repairs the rest: test_resync).
* The SQS server (moto) killed and restarted: moto keeps queues in memory, so
  the queue and its messages are gone. The queue is recreated under the same
  name, the takeover stream is sent, and the worker, never restarted, must
  consume it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from tests.support import factory
from tests.support.model import state_differences
from tests.support.proxy import ChaosProxy
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.shutdown import freeze_holding
from tests.support.snapshot import read_state
from tests.support.worker import (
    TEST_VISIBILITY_TIMEOUT,
    WorkerProcess,
    Workers,
    create_queue,
    expected_state,
    queue_depth,
    seed,
    send,
    stream,
    wait_for_state,
    warm_cache,
    worker_env,
)

pytestmark = pytest.mark.faults

CUSTOMERS = 10
STREAM = 200
POLICIES = [CacheUpdatePolicy.UPSERT, CacheUpdatePolicy.UPDATE_IF_EXISTS]
INVALIDATIONS = 0.05  # a customer invalidated in one message of twenty
PROCESSED = "persistent_cache_messages_processed_total"
SKIPPED = "persistent_cache_messages_skipped_total"
PARKED = "persistent_cache_messages_parked_total"
FAST_REDIS = {"REDIS_TIMEOUT_SECS": "1"}


@dataclass
class Report:
    """One scenario's figures."""

    scenario: str
    sent: int = 0
    written: float = 0
    skipped: float = 0
    parked: float = 0
    lost: int = 0
    resume_s: float = 0.0
    converge_s: float = 0.0
    note: str = ""

    def line(self) -> str:
        line = (
            f"[fault] {self.scenario}: sent={self.sent} written={self.written:g}"
            f" skipped={self.skipped:g} parked={self.parked:g} lost={self.lost}"
            f" resume={self.resume_s:.2f}s converge={self.converge_s:.2f}s"
        )
        return f"{line} ({self.note})" if self.note else line


class Counts:
    """Message counters summed over workers, remembered for workers that are killed."""

    def __init__(self) -> None:
        self.final: dict[int, tuple[float, float, float]] = {}

    def read(self, worker: WorkerProcess) -> tuple[float, float, float]:
        try:
            samples = worker.metrics()
        except Exception:  # killed: keep its last reading
            return self.final.get(worker.pid, (0.0, 0.0, 0.0))
        processed = sum(v for (name, _), v in samples.items() if name == PROCESSED)
        skipped = sum(v for (name, _), v in samples.items() if name == SKIPPED)
        parked = sum(v for (name, _), v in samples.items() if name == PARKED)
        self.final[worker.pid] = (processed, skipped, parked)
        return processed, skipped, parked

    def handled(self, workers: list[WorkerProcess]) -> float:
        return sum(self.read(w)[0] for w in workers)

    def fill(self, report: Report, workers: list[WorkerProcess]) -> None:
        totals = [self.read(w) for w in workers]
        report.skipped = sum(t[1] for t in totals)
        report.written = sum(t[0] for t in totals) - report.skipped
        report.parked = sum(t[2] for t in totals)


@dataclass
class Scene:
    """The services, queue and workers of one scenario."""

    redis_server: RedisServer
    client: redis.Redis
    sqs: SqsServer
    queue: str
    prefix: str
    workers: Workers
    counts: Counts
    policy: CacheUpdatePolicy

    def start(self) -> WorkerProcess:
        return self.workers.start()

    def send(self, bodies: list[dict[str, Any]]) -> int:
        return send(self.sqs, self.queue, bodies)

    def handled(self) -> float:
        return self.counts.handled(self.workers.started)

    def seed(self) -> list[dict[str, Any]]:
        """One snapshot per customer written as a reader's miss writes it: a warm cache."""
        bodies = seed(CUSTOMERS)
        warm_cache(self.client, self.prefix, bodies)
        wait_for_state(
            self.client, self.prefix, expected_state(self.prefix, bodies, CacheUpdatePolicy.UPSERT)
        )
        return bodies

    def send_and_wait(self, bodies: list[dict[str, Any]]) -> int:
        """Send ``bodies``; return once the workers handled a quarter of them."""
        target = self.handled() + len(bodies) / 4
        sent = self.send(bodies)
        wait_until(lambda: self.handled() >= target, timeout=60, what="mid-stream")
        return sent

    def converge(
        self, report: Report, bodies: list[dict[str, Any]], fault_ended: float, before: float
    ) -> None:
        """Wait until the workers resumed and the queue is empty; then judge Redis once.

        An empty queue means every message was deleted, so every write is done: the
        figures (``lost`` included) come from one reading of Redis taken after that,
        never from a wait that already required the model's state.
        """
        wait_until(lambda: self.handled() > before, timeout=60, what="worker resumed")
        report.resume_s = time.monotonic() - fault_ended
        wait_until(lambda: queue_depth(self.sqs, self.queue) == 0, timeout=90, what="queue empty")
        report.converge_s = time.monotonic() - fault_ended
        actual = read_state(self.client, KeyLayout(self.prefix))
        differ = state_differences(actual, bodies, self.prefix, self.policy)
        report.lost = sum(1 for _, got in differ.values() if got is None)
        self.counts.fill(report, self.workers.started)
        wrong = sorted(key for key, (_, got) in differ.items() if got is not None)
        assert report.lost == 0, f"{report.lost} key(s) of the model lost"
        assert not wrong, f"keys the model does not allow: {wrong[:10]}"


@pytest.fixture(params=POLICIES, ids=lambda policy: str(policy.value))
def scene_for(
    own_redis: RedisServer,
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Scene]]:
    """``scene_for(sqs, redis_port=...)`` → a Scene (under each policy); prints its report."""
    made: list[tuple[Scene, Report]] = []
    client = own_redis.client(socket_timeout=5)
    policy: CacheUpdatePolicy = request.param

    def make(sqs: SqsServer, report: Report, *, redis_port: int | None = None) -> Scene:
        queue = create_queue(sqs.client())
        env = worker_env(
            queue, sqs, own_redis, prefix, **FAST_REDIS, CACHE_UPDATE_POLICY=policy.value
        )
        if redis_port is not None:
            env["REDIS_PORT"] = str(redis_port)
        report.scenario += f" [{policy.value}]"
        scene = Scene(own_redis, client, sqs, queue, prefix, Workers(env), Counts(), policy)
        made.append((scene, report))
        return scene

    yield make
    for scene, report in made:
        scene.workers.stop_all()
        with capsys.disabled():
            print("\n" + report.line())
    client.close()


def takeover(customers: int, count: int, base: int = 1_000_000) -> list[dict[str, Any]]:
    """Full snapshots above every version of ``stream``, then updates above those."""
    bodies = [
        factory.entitlements(
            f"cus-{c}",
            base + c,
            features={f"feature-{f}": c + f for f in range(3)},
            credits={f"cur-{k}": c * k for k in range(2)},
        )
        for c in range(customers)
    ]
    updates = stream(customers, count, seed_value=11)
    for body in updates:
        body["timestamp"] += base + customers
    return bodies + updates


class Stream:
    """The seed, the first half of the stream (sent before the fault), the rest."""

    def __init__(self, scene: Scene, report: Report) -> None:
        self.scene, self.report = scene, report
        self.bodies = scene.seed()
        messages = stream(CUSTOMERS, STREAM, invalidations=INVALIDATIONS)
        half = len(messages) // 2
        report.sent = scene.send_and_wait(messages[:half])
        self.bodies += messages
        self.rest = messages[half:]

    def send_rest(self) -> None:
        """Sent while the fault lasts, so it always meets the fault."""
        self.report.sent += self.scene.send(self.rest)

    def take_over(self) -> None:
        """After a fault that destroyed data: the takeover stream (see the module doc)."""
        after = takeover(CUSTOMERS, STREAM // 2)
        self.report.sent += self.scene.send(after)
        self.bodies += after


def test_redis_sigkilled_and_restarted_empty(
    scene_for: Callable[..., Scene], sqs_server: SqsServer
) -> None:
    report = Report("redis SIGKILL, restarted empty")
    scene = scene_for(sqs_server, report)
    worker = scene.start()
    sent = Stream(scene, report)

    scene.redis_server.kill()
    sent.send_rest()
    scene.redis_server.start()  # same port, no persistence: empty
    ended, before = time.monotonic(), scene.handled()

    sent.take_over()
    scene.converge(report, sent.bodies, ended, before)
    wait_until(lambda: "redis_data" in worker.readyz().get("details", {}), what="loss reported")


def test_redis_sigstopped_beyond_the_client_timeouts(
    scene_for: Callable[..., Scene], sqs_server: SqsServer
) -> None:
    report = Report("redis SIGSTOP 5s+ (timeout 1s)")
    scene = scene_for(sqs_server, report)
    worker = scene.start()
    sent = Stream(scene, report)

    scene.redis_server.pause()
    try:
        sent.send_rest()
        wait_until(lambda: worker.readyz()["status"] == "DOWN", timeout=15, what="not ready")
        time.sleep(5)  # the fault itself: several client timeouts long
    finally:
        scene.redis_server.resume()
    ended, before = time.monotonic(), scene.handled()
    scene.converge(report, sent.bodies, ended, before)
    wait_until(lambda: worker.readyz()["status"] == "UP", timeout=30, what="ready again")


def test_sqs_server_killed_and_restarted(scene_for: Callable[..., Scene]) -> None:
    report = Report("SQS server killed, restarted empty")
    sqs = SqsServer().start()
    try:
        scene = scene_for(sqs, report)
        scene.start()
        sent = Stream(scene, report)

        sqs.kill()
        sqs.start()  # same port; moto kept the queue in memory only
        name = scene.queue.rsplit("/", 1)[-1]
        visibility = str(TEST_VISIBILITY_TIMEOUT)
        recreated = sqs.client().create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": visibility}
        )
        assert recreated["QueueUrl"] == scene.queue
        ended, before = time.monotonic(), scene.handled()

        sent.send_rest()
        sent.take_over()
        scene.converge(report, sent.bodies, ended, before)
        gone = report.sent - report.written - report.skipped - report.parked
        report.note = f"about {gone:g} messages went with moto's in-memory queue"
    finally:
        sqs.stop()


def test_worker_sigkilled_mid_batch_then_a_new_one(
    scene_for: Callable[..., Scene], sqs_server: SqsServer
) -> None:
    report = Report("worker SIGKILL mid-batch, new worker")
    scene = scene_for(sqs_server, report)
    first = scene.start()
    sent = Stream(scene, report)

    scene.counts.read(first)  # its last reading: a frozen worker does not answer
    os.kill(first.pid, signal.SIGSTOP)  # a backlog: running, it keeps up with the sender
    sent.send_rest()
    os.kill(first.pid, signal.SIGCONT)
    held = freeze_holding(first, sqs_server, scene.queue)
    first.kill()  # lands on messages it received and has not deleted
    report.note = f"killed holding {held} message(s) in flight"
    ended, before = time.monotonic(), scene.handled()
    scene.start()
    scene.converge(report, sent.bodies, ended, before)


def test_two_workers_one_killed_repeatedly(
    scene_for: Callable[..., Scene], sqs_server: SqsServer
) -> None:
    report = Report("two workers, one SIGKILLed 3 times")
    scene = scene_for(sqs_server, report)
    scene.start()
    victim = scene.start()
    bodies = scene.seed()
    messages = stream(CUSTOMERS, STREAM * 2, seed_value=3, invalidations=INVALIDATIONS)
    third = len(messages) // 3
    for chunk in (messages[:third], messages[third : 2 * third]):
        report.sent += scene.send_and_wait(chunk)
        scene.counts.read(victim)
        victim.kill()
        victim = scene.start()
    report.sent += scene.send(messages[2 * third :])
    scene.counts.read(victim)
    victim.kill()
    ended, before = time.monotonic(), scene.handled()
    scene.start()
    scene.converge(report, bodies + messages, ended, before)


def test_slow_redis_behind_a_latency_proxy(
    scene_for: Callable[..., Scene], sqs_server: SqsServer, own_redis: RedisServer
) -> None:
    report = Report("slow redis: +50ms, then +1.5s (> timeout)")
    proxy = ChaosProxy(own_redis.port).start()
    try:
        scene = scene_for(sqs_server, report, redis_port=proxy.port)
        scene.start()
        proxy.latency = 0.05
        sent = Stream(scene, report)
        proxy.latency = 1.5  # each way: every command now outlasts REDIS_TIMEOUT_SECS
        seen = proxy.connections_seen
        sent.send_rest()
        wait_until(lambda: proxy.connections_seen > seen, timeout=30, what="reconnects")
        proxy.latency = 0.0
        ended, before = time.monotonic(), scene.handled()
        scene.converge(report, sent.bodies, ended, before)
    finally:
        proxy.stop()


def test_network_cut_between_worker_and_redis(
    scene_for: Callable[..., Scene], sqs_server: SqsServer, own_redis: RedisServer
) -> None:
    report = Report("network cut worker-redis for 4s")
    proxy = ChaosProxy(own_redis.port).start()
    try:
        scene = scene_for(sqs_server, report, redis_port=proxy.port)
        worker = scene.start()
        sent = Stream(scene, report)
        proxy.cut()
        sent.send_rest()
        wait_until(lambda: worker.readyz()["status"] == "DOWN", timeout=30, what="paused")
        time.sleep(4)  # the fault itself: the path stays cut
        proxy.heal()
        ended, before = time.monotonic(), scene.handled()
        scene.converge(report, sent.bodies, ended, before)
        wait_until(lambda: worker.readyz()["status"] == "UP", timeout=30, what="ready again")
    finally:
        proxy.stop()


def test_the_proxy_adds_latency_and_cuts(own_redis: RedisServer) -> None:
    """The fault tool itself: latency is added, a cut breaks the path, a heal restores it."""
    proxy = ChaosProxy(own_redis.port).start()
    client = redis.Redis(port=proxy.port, socket_timeout=1)
    try:
        assert client.ping()
        proxy.latency = 0.6  # each way: 1.2 s per round trip, beyond the 1 s timeout
        with pytest.raises(redis.TimeoutError):
            client.ping()
        proxy.latency = 0
        proxy.cut()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        proxy.heal()
        assert client.ping()
    finally:
        client.close()
        proxy.stop()
