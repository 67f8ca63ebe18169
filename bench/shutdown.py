"""``python -m bench.shutdown``: seconds from SIGTERM to exit while Redis or SQS hangs.

Each scenario starts a redis-server and an SQS server (moto) of its own, one
``cache-pipeline worker`` at its defaults (BATCH_SIZE=10, so 12 consumer
threads; VISIBILITY_TIMEOUT=30), then:

``redis-hung``
    seeds one snapshot per customer, SIGSTOPs redis-server, sends 30 messages,
    waits until some are in flight (received, not deleted), sends SIGTERM;
``redis-killed``
    the same with redis-server SIGKILLed instead (the reference: nothing hangs);
``sqs-hung``
    seeds, SIGSTOPs the SQS server while the consumers long-poll it, sends
    SIGTERM.

Before SIGTERM the hang lasts ``--hang`` seconds (default 0; with Redis hung
the consumers meanwhile fail their writes, hand the messages back and receive
them again, so where they stand at SIGTERM varies). It prints, per scenario,
the seconds from SIGTERM to exit, the exit code, and the worker's shutdown line.
``--scenario`` runs one (repeat the option for several); ``--rounds`` repeats.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import click

from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.shutdown import in_flight, wait_for_queue_empty
from tests.support.worker import (
    WorkerProcess,
    Workers,
    create_queue,
    seed,
    send,
    stream,
    worker_env,
)

CUSTOMERS = 6
IN_FLIGHT = 30
DEFAULTS = {"BATCH_SIZE": "10", "VISIBILITY_TIMEOUT": "30"}


@dataclass
class Setup:
    redis: RedisServer
    sqs: SqsServer
    queue: str
    worker: WorkerProcess


@contextmanager
def started() -> Iterator[Setup]:
    """Own servers, a queue with a 30 s visibility timeout, a seeded worker at the defaults."""
    redis_server, sqs = RedisServer().start(), SqsServer().start()
    workers: Workers | None = None
    try:
        client = sqs.client()
        queue = create_queue(client, VisibilityTimeout="30")
        workers = Workers(worker_env(queue, sqs, redis_server, "bench-shutdown", **DEFAULTS))
        worker = workers.start()
        send(sqs, queue, seed(CUSTOMERS))
        wait_for_queue_empty(sqs, queue)
        yield Setup(redis_server, sqs, queue, worker)
    finally:
        if workers is not None:
            workers.stop_all()
        for process in (redis_server.process, sqs.process):
            if process is not None and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
        redis_server.stop()
        sqs.stop()


def redis_hung(setup: Setup) -> None:
    setup.redis.pause()
    send(setup.sqs, setup.queue, stream(CUSTOMERS, IN_FLIGHT, duplicates=0))
    wait_until(lambda: in_flight(setup.sqs, setup.queue) > 0, timeout=30, what="in flight")


def redis_killed(setup: Setup) -> None:
    setup.redis.kill()
    send(setup.sqs, setup.queue, stream(CUSTOMERS, IN_FLIGHT, duplicates=0))
    wait_until(lambda: in_flight(setup.sqs, setup.queue) > 0, timeout=30, what="in flight")


def sqs_hung(setup: Setup) -> None:
    assert setup.sqs.process is not None
    time.sleep(1)  # the consumers are in their long polls
    os.kill(setup.sqs.process.pid, signal.SIGSTOP)


def shutdown_line(output: str) -> str:
    """The message of the worker's last shutdown line."""
    for line in reversed(output.splitlines()):
        if '"shutdown: ' in line:
            return str(json.loads(line).get("msg", line))
    return "(no shutdown line)"


SCENARIOS: dict[str, Callable[[Setup], None]] = {
    "redis-hung": redis_hung,
    "redis-killed": redis_killed,
    "sqs-hung": sqs_hung,
}


def measure(name: str, hang: float) -> str:
    with started() as setup:
        SCENARIOS[name](setup)
        time.sleep(hang)  # the fault lasts
        assert setup.worker.process is not None
        began = time.monotonic()
        code = setup.worker.terminate(timeout=120)
        seconds = time.monotonic() - began
        said = shutdown_line(setup.worker.output())
        return f"{name} (hang {hang:g} s): SIGTERM -> exit {seconds:.1f} s, code {code}; {said}"


@click.command()
@click.option("--scenario", type=click.Choice(sorted(SCENARIOS)), multiple=True)
@click.option("--hang", default=0.0, show_default=True, help="seconds of hang before SIGTERM")
@click.option("--rounds", default=1, show_default=True)
def main(scenario: tuple[str, ...], hang: float, rounds: int) -> None:
    """Print SIGTERM-to-exit seconds for each scenario."""
    for _ in range(rounds):
        for name in scenario or tuple(SCENARIOS):
            print(measure(name, hang), flush=True)


if __name__ == "__main__":
    main()
