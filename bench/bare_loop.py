"""The ceiling: a bare boto3 consumer loop, run as its own process.

Receive up to ten messages (``--receive``) with long polling, write them to
Redis in one pipeline, delete them with one DeleteMessageBatch, one call at a
time; repeat until ``--expect`` messages are done, then idle until SIGTERM.
``--writes set`` does one plain SET per message (no version check: the ceiling
the worker is compared with); ``--writes lua`` parses each body and runs the
store's atomic Lua writes (``Planner.plan``, then ``Store.apply_planned``), the
same Redis work the worker does, without the framework around it.

    python -m bench.bare_loop --endpoint URL --queue-url URL --redis-port N \
        --prefix P --expect N [--writes set|lua] [--receive 1..10]
"""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Any

import click
import redis

from bench.services import sqs_client
from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.contract.messages import parse_message
from cache_pipeline.contract.plan import Planner
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.writer import Store

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

TTL = 604800
WAIT_SECONDS = 1
IDLE_RECEIVES = 20  # empty long polls in a row before giving up


class SetWriter:
    """One plain SET per message, pipelined."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def write(self, messages: list[MessageTypeDef]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for message in messages:
            body = message["Body"]
            pipe.set(f"{self.prefix}:bare:{json.loads(body)['id']}", body, ex=TTL)
        pipe.execute()


class LuaWriter:
    """The store's atomic writes: parse, plan, one pipelined EVALSHA per message."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        layout = KeyLayout(prefix)
        self.planner = Planner(layout, ttl=TTL, policy=CacheUpdatePolicy.UPDATE_IF_EXISTS)
        self.store = Store(client, layout, ttl=TTL)
        self.prefix = prefix

    def write(self, messages: list[MessageTypeDef]) -> None:
        planned = [self.planner.plan(parse_message(m["Body"], self.prefix)) for m in messages]
        for result in self.store.apply_planned(planned):
            if isinstance(result, Exception):
                raise result


def receive_batch(client: Any, queue_url: str, most: int = 10) -> list[MessageTypeDef]:
    """One ReceiveMessage: up to ``most`` messages, long polling."""
    reply = client.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=most, WaitTimeSeconds=WAIT_SECONDS
    )
    messages: list[MessageTypeDef] = reply.get("Messages", [])
    return messages


def delete_batch(client: Any, queue_url: str, messages: list[MessageTypeDef]) -> None:
    """One DeleteMessageBatch for the messages of a receive."""
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
    client.delete_message_batch(QueueUrl=queue_url, Entries=entries)


def consume(
    client: Any, queue_url: str, writer: SetWriter | LuaWriter, expect: int, most: int = 10
) -> int:
    """Run the loop until ``expect`` messages are written and deleted."""
    done = idle = batches = 0
    ids: set[str] = set()
    while len(ids) < expect and idle < IDLE_RECEIVES:
        messages = receive_batch(client, queue_url, most)
        if not messages:
            idle += 1
            continue
        idle = 0
        writer.write(messages)
        delete_batch(client, queue_url, messages)
        done += len(messages)
        batches += 1
        ids.update(m["MessageId"] for m in messages)
    print(f"bare loop: {done} messages in {batches} receives, {len(ids)} distinct", flush=True)
    return len(ids)


@click.command()
@click.option("--endpoint", required=True, help="SQS endpoint URL")
@click.option("--queue-url", required=True)
@click.option("--redis-host", default="127.0.0.1", show_default=True)
@click.option("--redis-port", type=int, required=True)
@click.option("--prefix", required=True, help="ENVIRONMENT_PREFIX of the keys")
@click.option("--expect", type=int, required=True, help="messages to consume")
@click.option("--writes", type=click.Choice(["set", "lua"]), default="set", show_default=True)
@click.option(
    "--receive",
    type=click.IntRange(1, 10),
    default=10,
    show_default=True,
    help="MaxNumberOfMessages of each receive",
)
def main(
    endpoint: str,
    queue_url: str,
    redis_host: str,
    redis_port: int,
    prefix: str,
    expect: int,
    writes: str,
    receive: int,
) -> None:
    """Consume ``--expect`` messages with the bare loop, then idle until SIGTERM
    (so the bench can read its CPU time and memory after the last write)."""
    signal.signal(signal.SIGTERM, _exit_on_term)
    sqs = sqs_client(endpoint)
    client = redis.Redis(host=redis_host, port=redis_port, decode_responses=True)
    writer = SetWriter(client, prefix) if writes == "set" else LuaWriter(client, prefix)
    try:
        done = consume(sqs, queue_url, writer, expect, receive)
    finally:
        client.close()
        sqs.close()
    if done < expect:
        raise SystemExit(f"bare loop: only {done} of {expect} messages arrived")
    signal.pause()


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
