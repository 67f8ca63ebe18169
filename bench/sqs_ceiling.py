"""How many messages per second the SQS endpoint itself can hand out on this machine.

``python -m bench.sqs_ceiling`` fills a fresh queue, then ``--processes`` bare
consumers (receive up to ``--receive`` messages, DeleteMessageBatch, no Redis,
no proxy) empty it as fast as the endpoint answers. LocalStack is one Python
process: past about one busy core it answers no faster however many clients
ask, so this is the most any consumer (the worker included) can be measured at
on this machine, per messages-per-receive. It also prints LocalStack's CPU per
request, when the endpoint is the LocalStack that ``localstack-host`` started.

    python -m bench.sqs_ceiling --processes 4 --receive 1,10 -n 2000
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import uuid
from typing import Any

import click
import psutil

from bench.run import LOCALSTACK_ENDPOINTS, LOCALSTACK_PIDFILE
from bench.services import Queues, ServiceError, sqs_client, sqs_endpoint

IDLE_RECEIVES = 2  # empty receives (1 s long poll) before a consumer stops


def _consume(endpoint: str, url: str, most: int, out: Any) -> None:
    client = sqs_client(endpoint)
    done = requests = idle = 0
    first = last = 0.0
    while idle < IDLE_RECEIVES:
        reply = client.receive_message(QueueUrl=url, MaxNumberOfMessages=most, WaitTimeSeconds=1)
        requests += 1
        messages = reply.get("Messages", [])
        if not messages:
            idle += 1
            continue
        first = first or time.monotonic()
        entries: Any = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        client.delete_message_batch(QueueUrl=url, Entries=entries)
        requests += 1
        done += len(messages)
        last = time.monotonic()
    client.close()
    out.put((done, requests, first, last))


def _localstack(endpoint: str) -> psutil.Process | None:
    if endpoint.rstrip("/") not in LOCALSTACK_ENDPOINTS:
        return None
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        return psutil.Process(int(LOCALSTACK_PIDFILE.read_text().strip()))
    return None


def _cpu(process: psutil.Process | None) -> float:
    if process is None:
        return 0.0
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(endpoint: str, queues: Queues, processes: int, most: int, messages: int) -> str:
    url = queues.create(f"bench-ceiling-{uuid.uuid4().hex[:8]}-{most}")
    queues.fill(url, ['{"ceiling":true}'] * messages)
    server = _localstack(endpoint)
    out: Any = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_consume, args=(endpoint, url, most, out))
        for _ in range(processes)
    ]
    cpu_before = _cpu(server)
    for worker in workers:
        worker.start()
    reports = [out.get() for _ in workers]
    cpu_after = _cpu(server)
    for worker in workers:
        worker.join()
    done = sum(r[0] for r in reports)
    requests = sum(r[1] for r in reports)
    starts = [r[2] for r in reports if r[2]]
    span = max(r[3] for r in reports) - min(starts) if starts else 0.0
    line = (
        f"receive {most:>2}, {processes} consumers: {done} messages in {span:.1f} s ="
        f" {done / span if span else 0:.0f} msg/s"
    )
    if server is not None:
        # CPU includes the consumers' last empty long polls, which cost LocalStack little.
        cpu = cpu_after - cpu_before
        line += (
            f"; LocalStack {cpu / span if span else 0:.2f} cores busy,"
            f" {cpu / requests * 1000:.1f} ms CPU per request"
        )
    return line


@click.command()
@click.option("--processes", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--receive", "sizes", default="1,10", show_default=True, help="MaxNumberOfMessages")
@click.option("-n", "--messages", type=click.IntRange(min=10), default=2000, show_default=True)
def main(processes: int, sizes: str, messages: int) -> None:
    """The SQS endpoint's own ceiling: bare consumers emptying a filled queue."""
    try:
        with sqs_endpoint() as endpoint:
            queues = Queues(endpoint)
            try:
                for most in (int(s) for s in sizes.split(",") if s.strip()):
                    click.echo(
                        f"sqs ceiling at {endpoint}: "
                        + measure(endpoint, queues, processes, most, messages)
                    )
            finally:
                queues.close()
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
