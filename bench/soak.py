"""Soak run: the real worker at a steady rate for a long time, memory printed every minute.

``python -m bench.soak --minutes 10 --rate 50`` starts its own redis-server and
SQS server (moto; or uses SQS_ENDPOINT_URL), one ``cache-pipeline worker``, and
sends a deterministic stream (one snapshot per customer, then usage, credit and
snapshot updates with rising versions) at ``--rate`` messages per second. Every
``--interval`` seconds it prints one line: messages sent and handled, queue
depth, the worker's resident memory (RSS, process and children) and Redis
``used_memory``. At the end it waits for the queue to drain, compares Redis
with the contract model and prints the RSS trend (first full minute, last,
highest). Exit code 0 when the final state equals the model.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from cache_pipeline.config import SQS_BATCH_LIMIT, CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from tests.support import factory
from tests.support.model import ContractModel
from tests.support.servers import (
    AWS_TEST_ENV,
    RedisServer,
    SqsServer,
    free_port,
    queue_at,
    wait_until,
)
from tests.support.snapshot import read_state

PREFIX = "soak"
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stream:
    """Deterministic messages with rising versions; the model follows every one sent."""

    customers: int
    rng: random.Random = field(default_factory=lambda: random.Random(42))
    clock: int = 1_000_000
    model: ContractModel = field(
        default_factory=lambda: ContractModel(PREFIX, CacheUpdatePolicy.UPSERT)
    )

    def seed(self) -> list[str]:
        return [self._body(self._snapshot(c)) for c in range(self.customers)]

    def next(self) -> str:
        customer, roll = self.rng.randrange(self.customers), self.rng.random()
        self.clock += 1
        if roll < 0.7:
            body = factory.usage(f"cus-{customer}", self.clock, "seats", self.clock % 1000)
        elif roll < 0.9:
            body = factory.credits(f"cus-{customer}", self.clock, "tokens", self.clock % 5000)
        else:
            body = self._snapshot(customer)
        return self._body(body)

    def _snapshot(self, customer: int) -> dict[str, Any]:
        self.clock += 1
        seats = self.rng.randrange(100)
        return factory.entitlements(
            f"cus-{customer}", self.clock, features={"seats": seats}, credits={"tokens": 0}
        )

    def _body(self, body: dict[str, Any]) -> str:
        self.model.apply(body)
        return json.dumps(body)


class Worker:
    """``cache-pipeline worker`` in a subprocess, with its /metrics and memory."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cache_pipeline", "worker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **AWS_TEST_ENV, "PORT": str(self.port), **env},
                cwd=ROOT,
            )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        wait_until(self._ready, timeout=60, what="worker consuming")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")
        return int(self.http.get("/readyz").json().get("consumers", 0)) > 0

    def handled(self) -> float:
        text = self.http.get("/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name
            in (
                "persistent_cache_messages_processed_total",
                "persistent_cache_messages_failed_total",
            )
        )

    def rss(self) -> int:
        process = psutil.Process(self.process.pid)
        return int(sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]))

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _services(stack: ExitStack) -> tuple[RedisServer, str]:
    redis_server = RedisServer().start()
    stack.callback(redis_server.stop)
    endpoint = os.environ.get("SQS_ENDPOINT_URL")
    if not endpoint:
        sqs = SqsServer().start()
        stack.callback(sqs.stop)
        endpoint = sqs.endpoint
    return redis_server, endpoint


def _ticks(rate: float, seconds: float) -> Iterator[float]:
    """Elapsed time at each send of a full batch, paced to ``rate`` messages per second."""
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = sent * SQS_BATCH_LIMIT / rate
        if due > elapsed:
            time.sleep(due - elapsed)
        yield time.monotonic() - start
        sent += 1


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}MiB"


@click.command()
@click.option("--minutes", type=click.FloatRange(min=0.1), default=10.0, show_default=True)
@click.option("--rate", type=click.FloatRange(min=1), default=50.0, show_default=True)
@click.option("--customers", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--interval", type=click.FloatRange(min=1), default=60.0, show_default=True)
def main(minutes: float, rate: float, customers: int, interval: float) -> None:
    """Soak the worker and print its memory every interval."""
    from bench.services import sqs_client

    with ExitStack() as stack:
        redis_server, endpoint = _services(stack)
        sqs = sqs_client(endpoint)
        queue = sqs.create_queue(QueueName=f"soak-{uuid.uuid4().hex[:8]}")["QueueUrl"]
        log = Path(tempfile.mkdtemp(prefix="soak-")) / "worker.log"
        env = {
            "QUEUE_URL": queue,
            "SQS_ENDPOINT_URL": endpoint,
            "REDIS_PORT": str(redis_server.port),
            "ENVIRONMENT_PREFIX": PREFIX,
            "CACHE_UPDATE_POLICY": "UPSERT",
            "BATCH_SIZE": "10",
            "DISABLE_SENTRY": "1",
            "LOG_LEVEL": "warn",
            "API_HOST": "127.0.0.1",
        }
        worker = Worker(env, log)
        stack.callback(worker.stop)
        client = redis_server.client()
        stack.callback(client.close)
        stream = Stream(customers)
        sender = queue_at(endpoint, queue)
        stack.callback(sender.close)
        sent = sender.send(stream.seed())
        click.echo(f"soak: {minutes:g} min at {rate:g} msg/s, worker log {log}")
        samples: list[int] = []
        next_print = interval
        for elapsed in _ticks(rate, minutes * 60):
            sent += sender.send([stream.next() for _ in range(SQS_BATCH_LIMIT)])
            if elapsed >= next_print:
                next_print += interval
                samples.append(worker.rss())
                depth = sender.depth().visible
                used = int(client.info("memory")["used_memory"])
                click.echo(
                    f"soak: t={elapsed / 60:5.1f}min sent={sent} handled={worker.handled():g}"
                    f" depth={depth} worker_rss={_mib(samples[-1])} redis_used={_mib(used)}"
                )
        wait_until(lambda: worker.handled() >= sent, timeout=300, what="queue drained")
        same = read_state(client, KeyLayout(PREFIX)) == stream.model.state()
        click.echo(f"soak: sent={sent} handled={worker.handled():g} state_equals_model={same}")
        if samples:
            click.echo(
                f"soak: worker_rss first={_mib(samples[0])} last={_mib(samples[-1])}"
                f" max={_mib(max(samples))} growth={_mib(samples[-1] - samples[0])}"
            )
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
