"""``cache-pipeline status`` against redis-server and the SQS server: the marker, the keys
by kind (a bounded SCAN) and the depths of both queues; read-only."""

from __future__ import annotations

import json
from contextlib import closing
from typing import Any

import pytest
import redis

from cache_pipeline.cli.status import kind_of
from cache_pipeline.keys import KeyLayout
from cache_pipeline.sqs.queue import Poison
from tests.support import factory
from tests.support.cli import run_cli
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.worker import create_queue, warm_cache

MARKER = json.dumps({"version": "2", "createdAt": 1_700_000_000_000})


def hand_written(prefix: str) -> dict[str, str]:
    """One key or more of every kind, named as keys.py names them; kind → keys."""
    p = prefix
    return {
        f"{p}:c_cus-1": "maps",
        f"{p}:c_acme:eu:r_site-1": "maps",
        f"{p}:c_cus-1:metadata": "metadata",
        f"{p}:c_cus-1:f_seats": "usage",
        f"{p}:c_acme:eu:r_site-1:f_api": "usage",
        f"{p}:c_cus-1:credit_ai": "credit",
        f"{p}:c_cus-1#timestamp": "versions",
        f"{p}:c_cus-1:metadata#timestamp": "versions",
        f"{p}:c_cus-1:f_seats#timestamp": "versions",
        f"{p}:c_cus-1#keys": "private",
        f"{p}:c_cus-1#lock": "private",
        f"{p}:__invalidated__": "private",
        f"{p}:__schema__": "private",
        f"{p}:stray": "other",
    }


def by_kind(keys: dict[str, str]) -> dict[str, int]:
    counts = dict.fromkeys(
        ("maps", "metadata", "usage", "credit", "versions", "private", "other"), 0
    )
    for kind in keys.values():
        counts[kind] += 1
    return counts


def status(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_cli("status", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


@pytest.fixture
def env(redis_server: RedisServer, sqs_server: SqsServer, prefix: str) -> dict[str, str]:
    client = sqs_server.client()
    return {
        "REDIS_PORT": str(redis_server.port),
        "ENVIRONMENT_PREFIX": prefix,
        "QUEUE_URL": create_queue(client),
        "DEAD_LETTER_QUEUE_URL": create_queue(client),
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
    }


def test_status_counts_every_kind_and_both_queues(
    env: dict[str, str], sqs_server: SqsServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    keys = hand_written(prefix)
    prefixed_redis.mset({key: "1" for key in keys} | {f"{prefix}:__schema__": MARKER})
    prefixed_redis.set("other-environment:c_cus-1", "1")
    with closing(
        sqs_server.queue(env["QUEUE_URL"], dead_letter_url=env["DEAD_LETTER_QUEUE_URL"])
    ) as queue:
        queue.send(["one", "two", "three"])
        queue.park([Poison("bad", "not_json", "", None, "s-1")])
        assert len(queue.receive(1, 1)) == 1  # in flight
        wait_until(lambda: queue.depth(dead_letter=True).visible == 1, what="parked")
        found = status(env)
    prefixed_redis.delete("other-environment:c_cus-1")
    assert found["keys"] == by_kind(keys) | {"scanned": len(keys), "complete": True}
    assert found["marker"] == {
        "version": "2",
        "createdAt": 1_700_000_000_000,
        "lossDetectedAt": None,
        "resyncedAt": None,
    }
    assert found["queue"] == {"url": env["QUEUE_URL"], "visible": 2, "inFlight": 1, "delayed": 0}
    assert found["deadLetterQueue"]["visible"] == 1
    assert found["environment"] == prefix

    text = run_cli("status", env=env).stdout.splitlines()
    assert [line.split()[0] for line in text] == [
        "environment",
        "marker",
        "keys",
        "queue",
        "dead-letter",
    ]
    assert text[1] == (
        "marker       version 2, createdAt 2023-11-14T22:13:20Z, lossDetectedAt -, resyncedAt -"
    )
    assert text[2].startswith("keys         maps 2, metadata 1, usage 2, credit 1, versions 3,")
    assert "(14 scanned, complete; approximate while keys change)" in text[2]
    assert text[3] == f"queue        2 visible, 1 in flight, 0 delayed  {env['QUEUE_URL']}"


def test_max_keys_bounds_the_scan(
    env: dict[str, str], prefixed_redis: redis.Redis, prefix: str
) -> None:
    prefixed_redis.mset({f"{prefix}:c_cus-{i}": "{}" for i in range(50)})
    found = status(env, "--max-keys", "10")
    assert found["keys"]["scanned"] == 10
    assert found["keys"]["complete"] is False
    assert found["marker"] is None
    text = run_cli("status", "--max-keys", "10", env=env).stdout
    assert "(10 scanned, stopped at --max-keys: lower bounds;" in text


def test_what_the_store_writes_is_counted_by_kind(
    env: dict[str, str], prefixed_redis: redis.Redis, prefix: str
) -> None:
    warm_cache(
        prefixed_redis,
        prefix,
        [factory.entitlements("cus-1", 1000, features={"seats": 3}, credits={"ai": 5})],
    )
    keys = status(env)["keys"]
    assert (keys["maps"], keys["metadata"], keys["usage"], keys["credit"]) == (1, 1, 1, 1)
    assert keys["versions"] == 4  # one per value key
    assert keys["other"] == 0


def test_without_a_queue_only_redis_is_read(env: dict[str, str]) -> None:
    env |= {"QUEUE_URL": "", "DEAD_LETTER_QUEUE_URL": ""}
    found = status(env)
    assert (found["queue"], found["deadLetterQueue"]) == (None, None)
    text = run_cli("status", env=env).stdout.splitlines()
    assert text[3] == "queue        not configured (QUEUE_URL is not set)"


@pytest.mark.parametrize("cluster", [False, True])
def test_kinds_in_both_key_forms(cluster: bool) -> None:
    layout = KeyLayout("env", cluster)
    scope = layout.customer("acme:eu", "site-1")
    assert kind_of(layout, scope.entitlements) == "maps"
    assert kind_of(layout, scope.metadata) == "metadata"
    assert kind_of(layout, scope.feature_usage("f")) == "usage"
    assert kind_of(layout, scope.credit("c")) == "credit"
    assert kind_of(layout, scope.deleted) == "private"
    assert kind_of(layout, scope.credit("c") + "#timestamp") == "versions"
    assert kind_of(layout, layout.write_probe) == "private"
