"""``cache-pipeline resync``: rebuild the cache from the upstream API after a data loss.

The upstream is the real edge stub process; Redis is a real redis-server that is
SIGKILLed and restarted empty (no persistence) before the resync.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import SCHEMA_VERSION, KeyLayout
from cache_pipeline.messages import parse_message
from cache_pipeline.schema import Marker, SchemaGuard, SchemaStatus
from cache_pipeline.store import Store
from tests.support.edge import STUB_API_KEY, EdgeStub
from tests.support.factory import entitlements, parsed
from tests.support.reference import ReferenceCache
from tests.support.servers import RedisServer
from tests.support.snapshot import read_state

PREFIX = "resync-env"
SCOPES: list[tuple[str, str | None]] = [
    *((f"cus-{i}", None) for i in range(25)),
    ("cus-3", "site-a"),
    ("cus-3", "site-b"),
    ("tenant:with{odd}#chars", None),
]


def snapshot_body(customer: str, resource: str | None) -> dict[str, Any]:
    seats = len(customer) + len(resource or "")
    return {
        "accessDeniedReason": None,
        "entitlements": [
            {
                "kind": "FEATURE",
                "id": "seats",
                "hasAccess": True,
                "usageLimit": 10,
                "usage": {"currentUsage": seats, "usagePeriodStart": 1, "usagePeriodEnd": 2},
            },
            {"kind": "CREDIT", "id": "tokens", "hasAccess": True, "usageLimit": 1000},
        ],
    }


@pytest.fixture(scope="module")
def stub() -> Iterator[EdgeStub]:
    server = EdgeStub().start()
    try:
        for customer, resource in SCOPES:
            params = {"resourceId": resource} if resource else {}
            body = snapshot_body(customer, resource)
            server.request("PUT", path(customer), json=body, params=params).raise_for_status()
        yield server
    finally:
        server.stop()


def path(customer: str) -> str:
    return f"/v1/customers/{quote(customer, safe='')}/entitlements"


@pytest.fixture
def client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    connection = own_redis.client()
    yield connection
    connection.close()


def run_resync(stub: EdgeStub, redis_port: int, **env: str) -> subprocess.CompletedProcess[str]:
    variables = {
        "EDGE_API_URL": stub.url,
        "SERVER_API_KEY": STUB_API_KEY,
        "REDIS_PORT": str(redis_port),
        "ENVIRONMENT_PREFIX": PREFIX,
        "CACHE_UPDATE_POLICY": "UPDATE_IF_EXISTS",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", "resync"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **variables},
    )


def upstream_model(stub: EdgeStub, layout: KeyLayout) -> ReferenceCache:
    """What the cache must hold: every upstream snapshot, applied under UPSERT."""
    model = ReferenceCache(layout, CacheUpdatePolicy.UPSERT)
    for customer, resource in SCOPES:
        params = {"resourceId": resource} if resource else {}
        answer = stub.request("GET", path(customer), params=params)
        body = {"id": "x", "type": "entitlements.updated", **answer.json()}
        model.apply(parse_message(json.dumps(body), PREFIX))
    return model


def test_resync_rebuilds_the_cache_after_redis_restarted_empty(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis
) -> None:
    layout = KeyLayout(PREFIX)
    guard = SchemaGuard(client, layout)
    assert guard.check().status is SchemaStatus.CREATED
    own_redis.kill()
    own_redis.start()
    assert guard.check().status is SchemaStatus.DATA_LOST
    assert read_state(client, layout) == {}

    result = run_resync(stub, own_redis.port)

    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts == {
        "customers": len(SCOPES),
        "written": len(SCOPES),
        "stale": 0,
        "missing": 0,
        "failed": 0,
    }
    assert read_state(client, layout) == upstream_model(stub, layout).snapshot()
    check = guard.check()
    assert check.detail() is None  # the data-loss detail is gone on every pod
    assert check.marker.version == SCHEMA_VERSION


def test_resync_keeps_what_the_stream_wrote_later(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis
) -> None:
    layout = KeyLayout(PREFIX)
    newer = parsed(entitlements("cus-7", 2**52, features={"seats": 99}), PREFIX)
    Store(client, layout, ttl=60, policy=CacheUpdatePolicy.UPSERT).apply(newer)

    result = run_resync(stub, own_redis.port)

    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["stale"] == 1
    assert counts["written"] == len(SCOPES) - 1
    expected = upstream_model(stub, layout)
    expected.apply(newer)
    assert read_state(client, layout) == expected.snapshot()


def test_a_refused_api_key_writes_nothing_and_says_why(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis
) -> None:
    layout = KeyLayout(PREFIX)
    SchemaGuard(client, layout).check()
    result = run_resync(stub, own_redis.port, SERVER_API_KEY="wrong-key")
    assert result.returncode == 1
    assert "401" in result.stderr
    assert "wrong-key" not in result.stderr + result.stdout
    assert read_state(client, layout) == {}
    marker = Marker.from_json(str(client.get(layout.schema_marker)), "k")
    assert marker.resynced_at is None


def test_another_schema_version_refuses_the_resync(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis
) -> None:
    layout = KeyLayout(PREFIX)
    client.set(layout.schema_marker, json.dumps({"version": "999", "createdAt": 1}))
    result = run_resync(stub, own_redis.port)
    assert result.returncode == 1
    assert "refusing to write" in result.stderr
    assert read_state(client, layout) == {}
