"""``python -m cache_pipeline.dev publish`` and ``cache-pipeline redrive`` against a real
SQS-compatible server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.dev.publish import InvalidLine, read_messages
from cache_pipeline.sqs.dlq import attributes, sqs_text
from cache_pipeline.sqs.queue import Poison
from cache_pipeline.store.writer import Outcome
from tests.support import factory
from tests.support.applying import Applier
from tests.support.servers import AWS_TEST_ENV, RedisServer, SqsServer, free_port
from tests.support.worker import create_queue, queue_depth, send


def run_cli(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    module = "cache_pipeline.dev" if args[0] == "publish" else "cache_pipeline"
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        env={**os.environ, **AWS_TEST_ENV, "PYTHONWARNINGS": "ignore", **env},
    )


def drain(sqs_server: SqsServer, queue_url: str) -> list[str]:
    client = sqs_server.client()
    bodies: list[str] = []
    while True:
        reply = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30
        )
        messages = reply.get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(m["Body"] for m in messages)


def test_publish_sends_every_line_of_a_file(sqs_server: SqsServer, tmp_path: Path) -> None:
    queue_url = create_queue(sqs_server.client())
    lines = [json.dumps(factory.usage("cus-1", 100 + i, "seats", i)) for i in range(13)]
    source = tmp_path / "messages.jsonl"
    source.write_text("\n".join(lines[:7]) + "\n\n" + "\n".join(lines[7:]) + "\n")
    env = {"QUEUE_URL": queue_url, "SQS_ENDPOINT_URL": sqs_server.endpoint}
    result = run_cli("publish", str(source), env=env)
    assert result.returncode == 0, result.stderr
    assert "published 13" in result.stdout
    assert sorted(drain(sqs_server, queue_url)) == sorted(lines)


def test_publish_reads_stdin(sqs_server: SqsServer) -> None:
    queue_url = create_queue(sqs_server.client())
    line = json.dumps(factory.credits("cus-1", 100, "ai", 1))
    env = {"QUEUE_URL": queue_url, "SQS_ENDPOINT_URL": sqs_server.endpoint}
    result = run_cli("publish", "-", env=env, stdin=line + "\n")
    assert result.returncode == 0, result.stderr
    assert drain(sqs_server, queue_url) == [line]


def test_publish_sends_nothing_when_a_line_is_invalid(
    sqs_server: SqsServer, tmp_path: Path
) -> None:
    queue_url = create_queue(sqs_server.client())
    good = json.dumps(factory.usage("cus-1", 100, "seats", 1))
    source = tmp_path / "messages.jsonl"
    source.write_text(f"{good}\n{good}\n{{broken\n{good}\n")
    env = {"QUEUE_URL": queue_url, "SQS_ENDPOINT_URL": sqs_server.endpoint}
    result = run_cli("publish", str(source), env=env)
    assert result.returncode == 1
    assert "line 3" in result.stderr
    assert "not_json" in result.stderr
    assert queue_depth(sqs_server, queue_url) == 0


def test_read_messages_names_the_line_and_the_reason() -> None:
    good = json.dumps(factory.usage("cus-1", 100, "seats", 1))
    wrong = json.dumps(factory.usage("cus-1", 100, "seats", 1, environment="staging"))
    assert read_messages([good, "", good], "production") == [good, good]
    with pytest.raises(InvalidLine, match="line 2: wrong_environment"):
        read_messages([good, wrong], "production")


def test_redrive_moves_the_dlq_back_unchanged(sqs_server: SqsServer) -> None:
    client = sqs_server.client()
    queue_url, dlq_url = create_queue(client), create_queue(client)
    bodies = [json.dumps(factory.usage("cus-1", 100 + i, "seats", i)) for i in range(23)]
    send(sqs_server, dlq_url, bodies)
    env = {
        "QUEUE_URL": queue_url,
        "DEAD_LETTER_QUEUE_URL": dlq_url,
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
    }
    result = run_cli("redrive", env=env)
    assert result.returncode == 0, result.stderr
    assert "moved 23 message(s), 0 failed" in result.stdout
    assert queue_depth(sqs_server, dlq_url) == 0
    assert sorted(drain(sqs_server, queue_url)) == sorted(bodies)


def test_redrive_stops_at_its_limit(sqs_server: SqsServer) -> None:
    client = sqs_server.client()
    queue_url, dlq_url = create_queue(client), create_queue(client)
    send(
        sqs_server,
        dlq_url,
        [json.dumps(factory.usage("cus-1", 100 + i, "seats", i)) for i in range(5)],
    )
    env = {
        "QUEUE_URL": queue_url,
        "DEAD_LETTER_QUEUE_URL": dlq_url,
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
    }
    result = run_cli("redrive", "--max", "3", env=env)
    assert "moved 3 message(s)" in result.stdout
    assert len(drain(sqs_server, queue_url)) == 3


def test_redrive_and_publish_against_an_unreachable_endpoint_stop_with_one_line(
    tmp_path: Path,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        "QUEUE_URL": f"{nowhere}/000000000000/q",
        "DEAD_LETTER_QUEUE_URL": f"{nowhere}/000000000000/dlq",
        "SQS_ENDPOINT_URL": nowhere,
    }
    source = tmp_path / "messages.jsonl"
    source.write_text(json.dumps(factory.usage("cus-1", 100, "seats", 1)) + "\n")
    for args, program in (
        (["redrive"], "cache-pipeline"),
        (["publish", str(source)], "cache-pipeline dev"),
    ):
        result = run_cli(*args, env=env)
        assert result.returncode == 4  # SQS
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert result.stderr.startswith(f"{program}: SQS queue {nowhere}/000000000000/")
        assert ": unreachable: " in result.stderr


def test_redrive_without_a_dlq_stops_with_one_line(sqs_server: SqsServer) -> None:
    result = run_cli(
        "redrive", env={"QUEUE_URL": "http://127.0.0.1:1/000/q", "DEAD_LETTER_QUEUE_URL": ""}
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "DEAD_LETTER_QUEUE_URL" in result.stderr


def test_parked_attributes_carry_the_reason_and_ids() -> None:
    poison = Poison(
        body="{", reason="not_json", detail="x" * 5000, message_id=None, sqs_message_id="s-1"
    )
    attrs = attributes(poison)
    assert attrs["reason"] == {"DataType": "String", "StringValue": "not_json"}
    assert attrs["sourceMessageId"]["StringValue"] == "s-1"
    assert "messageId" not in attrs
    assert len(attrs["detail"]["StringValue"]) == 1024


def test_parked_attributes_hold_only_characters_sqs_accepts() -> None:
    """An id with U+0001 or U+FFFF made SQS refuse the whole send to the DLQ."""
    poison = Poison(
        body='{"id": "a\\u0001b"}',
        reason="invalid_field",
        detail="id 'a\x01b\uffff' \ud800",
        message_id="a\x01b\uffff",
        sqs_message_id="s-1",
    )
    attrs = attributes(poison)
    assert attrs["messageId"]["StringValue"] == "a\ufffdb\ufffd"
    assert attrs["detail"]["StringValue"] == "id 'a\ufffdb\ufffd' \ufffd"
    assert sqs_text("tab\tnew\nline\r é 😀") == "tab\tnew\nline\r é 😀"


def test_invalidate_repairs_a_scope_frozen_by_a_timestamp_from_the_future(
    make_store: Callable[..., Applier], redis_server: RedisServer, prefix: str
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    frozen = 253402300799000  # 9999-12-31: accepted before the clock guard existed
    store.apply(factory.parsed(factory.entitlements("cus:eu", frozen, features={"seats": 9})))
    now = int(time.time() * 1000)
    update = factory.parsed(factory.entitlements("cus:eu", now + 1000, features={"seats": 1}))
    assert store.apply(update) is Outcome.STALE
    result = run_cli(
        "invalidate",
        "--customer",
        "cus:eu",
        env={"REDIS_PORT": str(redis_server.port), "ENVIRONMENT_PREFIX": prefix},
    )
    assert result.returncode == 0, result.stderr
    # the map, the metadata and the usage of seats, with their three versions
    assert json.loads(result.stdout) == {"customer": "cus:eu", "resource": None, "deleted": 6}
    assert store.client.exists(store.layout.customer("cus:eu").entitlements) == 0
    older = factory.parsed(factory.entitlements("cus:eu", now - 60_000, features={"seats": 2}))
    assert store.apply(older) is Outcome.STALE
    assert store.apply(update) is Outcome.WRITTEN


@pytest.mark.parametrize("customer", ["cus:r_x", "a#b", ""])
def test_invalidate_refuses_an_id_that_is_not_a_scope(
    redis_server: RedisServer, prefix: str, customer: str
) -> None:
    result = run_cli(
        "invalidate",
        "--customer",
        customer,
        env={"REDIS_PORT": str(redis_server.port), "ENVIRONMENT_PREFIX": prefix},
    )
    assert result.returncode == 2
    assert "--customer" in result.stderr


def test_migrate_drops_a_schema_1_keyspace_and_lets_the_worker_write(
    make_store: Callable[..., Applier], redis_server: RedisServer, prefix: str
) -> None:
    client = redis_server.client()
    try:
        client.set(f"{prefix}:__schema__", '{"version":"1","createdAt":1}')
        v1_keys = {
            f"{prefix}:c_cus%3A1": '{"FEATURE:seats":{"kind":"FEATURE","id":"seats"}}',
            f"{prefix}:c_cus%3A1#timestamp": "5",
            f"{prefix}:c_cus%3A1:keys#timestamp": "5",
        }
        client.mset(v1_keys)
        client.set("other-env:c_x", "untouched")
        env = {"REDIS_PORT": str(redis_server.port), "ENVIRONMENT_PREFIX": prefix}
        result = run_cli("migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"from": "1", "to": "2", "deleted": 3}
        assert client.exists(*v1_keys) == 0
        assert json.loads(client.get(f"{prefix}:__schema__") or "{}")["version"] == "2"
        assert client.get("other-env:c_x") == "untouched"
        again = run_cli("migrate", env=env)
        assert json.loads(again.stdout) == {"from": "2", "to": "2", "deleted": 0}
        store = make_store(policy=CacheUpdatePolicy.UPSERT)
        written = store.apply(factory.parsed(factory.entitlements("cus:1", 10, features={"a": 1})))
        assert written is Outcome.WRITTEN
    finally:
        client.delete("other-env:c_x")
        client.close()


def test_migrate_takes_an_unreadable_marker_for_an_incompatible_schema(
    redis_server: RedisServer, prefix: str
) -> None:
    client = redis_server.client()
    try:
        client.set(f"{prefix}:__schema__", "not a marker")
        client.set(f"{prefix}:c_cus%3A1", "{}")
        env = {"REDIS_PORT": str(redis_server.port), "ENVIRONMENT_PREFIX": prefix}
        result = run_cli("migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"from": "unreadable", "to": "2", "deleted": 1}
        assert client.exists(f"{prefix}:c_cus%3A1") == 0
        assert json.loads(client.get(f"{prefix}:__schema__") or "{}")["version"] == "2"
    finally:
        client.close()
