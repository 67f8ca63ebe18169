"""CPU cost of the SQS calls alone: receive(10) + DeleteMessageBatch(10), no Redis.

For each request shape, fills a fresh queue, drains it in a plain loop and
prints the client's CPU seconds per 1,000 messages (this process) and the SQS
server's (LocalStack's pid file, when it runs here).

    python -m bench.sqs_client_cost [--batches 200]     # needs SQS_ENDPOINT_URL
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import click
import psutil
from botocore.config import Config

from bench.services import Queues, on_endpoint, sqs_client
from bench.workload import body, generate

LOCALSTACK_PIDFILE = Path.home() / ".cache" / "localstack-host" / "pid"
SHAPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "plain": ({}, {}),
    "parameter_validation=False": ({"parameter_validation": False}, {}),
    "VisibilityTimeout + ApproximateReceiveCount (as the worker asks)": (
        {},
        {"VisibilityTimeout": 30, "MessageSystemAttributeNames": ["ApproximateReceiveCount"]},
    ),
}


def _server_cpu() -> float:
    try:
        times = psutil.Process(int(LOCALSTACK_PIDFILE.read_text())).cpu_times()
    except (OSError, ValueError, psutil.Error):
        return float("nan")
    return float(times.user + times.system)


def _drain(client: Any, url: str, expect: int, extra: dict[str, Any]) -> tuple[int, int]:
    got = calls = 0
    while got < expect:
        reply = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, **extra
        )
        calls += 1
        messages = reply.get("Messages", [])
        if messages:
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            client.delete_message_batch(QueueUrl=url, Entries=entries)
            got += len(messages)
    return got, calls


@click.command()
@click.option("--batches", type=int, default=200, show_default=True, help="receives per shape")
def main(batches: int) -> None:
    """Print the CPU per 1,000 messages of each request shape."""
    endpoint = os.environ.get("SQS_ENDPOINT_URL")
    if not endpoint:
        raise click.UsageError("set SQS_ENDPOINT_URL (e.g. http://127.0.0.1:4566)")
    bodies = [body(m, None) for m in generate(batches * 10).stream]
    queues = Queues(endpoint)
    try:
        for name, (config, extra) in SHAPES.items():
            url = queues.create(f"sqs-cost-{uuid.uuid4().hex[:8]}")
            queues.fill(url, bodies)
            client = sqs_client(endpoint, Config(**config))
            cpu, server, wall = time.process_time(), _server_cpu(), time.perf_counter()
            got, calls = _drain(client, on_endpoint(url, endpoint), len(bodies), extra)
            cpu, server = time.process_time() - cpu, _server_cpu() - server
            wall = time.perf_counter() - wall
            client.close()
            click.echo(
                json.dumps(
                    {
                        "shape": name,
                        "messages": got,
                        "receives": calls,
                        "client_cpu_s_per_1000": round(cpu / got * 1000, 3),
                        "server_cpu_s_per_1000": round(server / got * 1000, 3),
                        "msgs_per_s": round(got / wall),
                        "load": os.getloadavg()[0],
                    }
                )
            )
    finally:
        queues.close()


if __name__ == "__main__":
    main()
