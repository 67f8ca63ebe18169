"""The real worker as a process of its own, and the queues and checks its tests share.

``WorkerProcess`` runs ``python -m cache_pipeline worker`` with settings in
its environment, waits until its consumers run (read from its own /readyz),
reads its /metrics, and stops it with SIGTERM or SIGKILL. Its output goes to a
file that failures print.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from tests.support import factory
from tests.support.model import ContractModel, state_differences
from tests.support.servers import (
    AWS_TEST_ENV,
    RedisServer,
    SqsServer,
    end_process,
    free_port,
    kill_process,
    wait_until,
)
from tests.support.snapshot import read_state

if TYPE_CHECKING:
    import redis
    from mypy_boto3_sqs import SQSClient

ROOT = Path(__file__).resolve().parents[2]
TEST_VISIBILITY_TIMEOUT = 3


class WorkerProcess:
    """``cache-pipeline worker`` in a subprocess, configured through its environment."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            **AWS_TEST_ENV,
            "API_HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DISABLE_SENTRY": "1",
            "LOG_LEVEL": "info",
            "BATCH_SIZE": "10",
            "VISIBILITY_TIMEOUT": str(TEST_VISIBILITY_TIMEOUT),
            "PYTHONWARNINGS": "ignore",
            **env,
        }
        self.log = Path(tempfile.mkdtemp(prefix="worker-test-")) / "log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)

    def start(self, *, wait: bool = True) -> WorkerProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cache_pipeline", "worker"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )
        if wait:
            wait_until(self._consuming, timeout=30, what=f"worker consuming\n{self.output()}")
        return self

    def _consuming(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.output()}")
        return int(self.readyz().get("consumers", 0)) > 0

    def readyz(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get("/readyz").json()
        return body

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics by (name, sorted labels)."""
        text = self.http.get("/metrics").text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code (fails if it does not exit within ``timeout``)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker ignored SIGTERM:\n{self.output()}") from None

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self) -> None:
        """Leave nothing running: SIGTERM, SIGKILL after a grace period."""
        end_process(self.process, grace=30)
        self.http.close()


def worker_env(
    queue_url: str,
    sqs: SqsServer,
    redis_server: RedisServer,
    prefix: str,
    **extra: str,
) -> dict[str, str]:
    """The settings of a worker on ``queue_url`` writing under ``prefix``; UPSERT unless
    ``CACHE_UPDATE_POLICY`` says otherwise (tests of order and faults run both)."""
    return {
        "QUEUE_URL": queue_url,
        "SQS_ENDPOINT_URL": sqs.endpoint,
        "REDIS_PORT": str(redis_server.port),
        "ENVIRONMENT_PREFIX": prefix,
        "CACHE_UPDATE_POLICY": CacheUpdatePolicy.UPSERT.value,
        **extra,
    }


def create_queue(client: SQSClient, **attributes: str) -> str:
    """A fresh queue with a unique name and the test visibility timeout."""
    name = f"q-{uuid.uuid4().hex[:16]}"
    attrs: dict[Any, str] = {"VisibilityTimeout": str(TEST_VISIBILITY_TIMEOUT), **attributes}
    return client.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]


def send(sqs: SqsServer, queue_url: str, bodies: Iterable[dict[str, Any] | str]) -> int:
    """Send bodies (dicts are JSON-encoded) through the pipeline's SQS client."""
    texts = [body if isinstance(body, str) else json.dumps(body) for body in bodies]
    with closing(sqs.queue(queue_url)) as queue:
        return queue.send(texts)


def queue_depth(sqs: SqsServer, queue_url: str) -> int:
    """Every message on the queue: visible, in flight or delayed."""
    with closing(sqs.queue(queue_url)) as queue:
        return queue.depth().total


def expected_state(
    prefix: str, bodies: Iterable[dict[str, Any]], policy: CacheUpdatePolicy
) -> dict[str, Any]:
    """The contract model's state after ``bodies`` in timestamp order (exact when no
    invalidation could make a rule-6 miss: otherwise use ``wait_for_model``)."""
    return ContractModel(prefix, policy).replay(list(bodies)).state()


def wait_for_model(
    client: redis.Redis,
    prefix: str,
    bodies: list[dict[str, Any]],
    policy: CacheUpdatePolicy,
    *,
    timeout: float = 30,
) -> None:
    """Poll Redis until it holds a state contract v2.1 allows after ``bodies`` delivered in any
    order (``tests.support.model.state_differences``); fail with the difference."""
    layout = KeyLayout(prefix)

    def differences() -> dict[str, Any]:
        return state_differences(read_state(client, layout), bodies, prefix, policy)

    try:
        wait_until(lambda: not differences(), timeout=timeout, what="state")
    except AssertionError:
        found = differences()
        sample = dict(list(found.items())[:10])
        raise AssertionError(f"{len(found)} key(s) differ (expected, actual): {sample}") from None


def wait_for_state(
    client: redis.Redis, prefix: str, expected: dict[str, Any], *, timeout: float = 30
) -> None:
    """Poll Redis until it holds exactly ``expected``; fail with the difference."""
    layout = KeyLayout(prefix)
    try:
        wait_until(lambda: read_state(client, layout) == expected, timeout=timeout, what="state")
    except AssertionError:
        actual = read_state(client, layout)
        missing = {k: v for k, v in expected.items() if actual.get(k) != v}
        extra = {k: v for k, v in actual.items() if k not in expected}
        raise AssertionError(
            f"state differs: missing/wrong {missing}, unexpected {extra}"
        ) from None


class Workers:
    """Starts workers for one test and stops every one of them afterwards."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.started: list[WorkerProcess] = []

    def start(self, *, wait: bool = True, **overrides: str) -> WorkerProcess:
        worker = WorkerProcess({**self.env, **overrides})
        self.started.append(worker)
        return worker.start(wait=wait)

    def stop_all(self) -> None:
        """SIGKILL: a test that checks shutdown sends SIGTERM itself; cleanup need not wait."""
        for worker in self.started:
            worker.kill()
            worker.stop()


def seed(customers: int, *, features: int = 3, currencies: int = 2) -> list[dict[str, Any]]:
    """An entitlements snapshot per customer, at timestamps below any of ``stream``."""
    return [
        factory.entitlements(
            f"cus-{c}",
            1000 + c,
            features={f"feature-{f}": None for f in range(features)},
            credits={f"cur-{k}": 0 for k in range(currencies)},
        )
        for c in range(customers)
    ]


def stream(
    customers: int,
    count: int,
    *,
    seed_value: int = 7,
    duplicates: float = 0.1,
    invalidations: float = 0.0,
) -> list[dict[str, Any]]:
    """Usage, credit and snapshot updates with unique timestamps, and with ``invalidations``
    that share of customer invalidations; shuffled, some sent twice.

    After ``seed`` the final state does not depend on the order SQS delivers in (rule 6):
    compare it with ``wait_for_model``, or with ``expected_state`` without invalidations.
    """
    rng = random.Random(seed_value)
    messages: list[dict[str, Any]] = []
    for i in range(count):
        customer, ts, roll = f"cus-{rng.randrange(customers)}", 10_000 + i, rng.random()
        if invalidations and rng.random() < invalidations:
            messages.append(factory.invalidation(ts, customer))
        elif roll < 0.7:
            messages.append(factory.usage(customer, ts, f"feature-{rng.randrange(3)}", i))
        elif roll < 0.9:
            messages.append(factory.credits(customer, ts, f"cur-{rng.randrange(2)}", i))
        else:
            features: dict[str, int | None] = {f"feature-{f}": rng.randrange(100) for f in range(3)}
            messages.append(factory.entitlements(customer, ts, features=features))
    rng.shuffle(messages)
    for message in rng.sample(messages, int(count * duplicates)):
        messages.insert(rng.randrange(len(messages)), message)
    return messages


def send_task(
    sqs_server: SqsServer,
    queue_url: str,
    task: str,
    args: Any,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """Send one Celery-protocol (v2) message; return its task id.

    ``args`` that Celery itself refuses (not a list) go raw, with the id ``raw-celery-message``.
    """
    name = queue_url.rsplit("/", 1)[-1]
    producer = Celery("producer", set_as_current=False)
    producer.conf.update(
        broker_url="sqs://" + sqs_server.endpoint.split("://", 1)[1],
        broker_transport_options={
            "region": "us-east-1",
            "is_secure": False,
            "predefined_queues": {name: {"url": queue_url}},
        },
    )
    env = dict(os.environ)
    os.environ.update(AWS_TEST_ENV)
    try:
        if isinstance(args, list):
            return str(producer.send_task(task, args=args, kwargs=kwargs, queue=name).id)
        with producer.connection_for_write() as connection:
            connection.Producer().publish(
                [args, kwargs or {}, {}],
                routing_key=name,
                headers={"task": task, "id": "raw-celery-message", "lang": "py"},
                serializer="json",
            )
        return "raw-celery-message"
    finally:
        os.environ.clear()
        os.environ.update(env)
        producer.close()


def warm_cache(client: redis.Redis, prefix: str, bodies: list[dict[str, Any]]) -> None:
    """Write snapshots straight to Redis under UPSERT, as a reader's miss path fills a cache
    (a worker under UPDATE_IF_EXISTS would skip them: their scopes do not exist yet)."""
    from cache_pipeline.contract.plan import Planner
    from cache_pipeline.store.writer import Store

    planner = Planner(KeyLayout(prefix), ttl=-1, policy=CacheUpdatePolicy.UPSERT)
    store = Store(client, planner.layout, ttl=-1)
    results = store.apply_planned([planner.plan(planner.parse(json.dumps(b))) for b in bodies])
    assert not [r for r in results if isinstance(r, Exception)], results
