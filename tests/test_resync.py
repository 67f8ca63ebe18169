"""``cache-pipeline resync``: rebuild the cache from the Edge API after a data loss.

The Edge API is the real edge stub process; Redis is a real redis-server that is
SIGKILLed and restarted empty (no persistence) before the resync. What the resync
writes is compared with what Stigg's own SDK (3.95.0, tests/interop) writes when it
fetches the same scopes from the same stub itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from cache_pipeline.contract.plan import ScriptCall, invalidate_call, snapshot_call
from cache_pipeline.keys import SCHEMA_VERSION, KeyLayout
from cache_pipeline.store.schema import Marker, SchemaGuard, SchemaStatus
from cache_pipeline.store.writer import ScriptRunner
from tests.support.cluster import RedisClusterServer
from tests.support.edge import STUB_API_KEY, EdgeStub, feature, metered
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer, free_port
from tests.support.snapshot import read_state
from tests.support.stigg_sdk import run_stigg_sdk

PREFIX = "resync-env"
SDK_PREFIX = "stigg-sdk"
Scope = tuple[str, str | None]
SCOPES: list[Scope] = [
    *((f"cus-{i}", None) for i in range(25)),
    ("cus-3", "site-a"),
    ("cus-3", "site-b"),
    ("acme:eu", None),
    ("acme:eu", "user@example.com"),
    ("cus-empty", None),
]
UNKNOWN: Scope = ("cus-unknown", None)


def snapshot_body(customer: str, resource: str | None) -> dict[str, Any]:
    """Every kind of feature, a usage that differs per scope; ``cus-empty`` has none."""
    if customer == "cus-empty":
        return {"entitlements": []}
    seats = len(customer) + len(resource or "")
    return {
        "entitlements": [
            feature("feature-sso"),
            feature("feature-projects", "NUMBER", usageLimit=20),
            metered("feature-seats", seats, 50, usagePeriodEnd="2026-12-15T00:00:00.000Z"),
            feature("feature-region", "ENUM", None, enumValues=["eu-west"]),
        ],
        "credits": [{"currencyId": "ai-tokens", "currentUsage": 5, "usageLimit": 100}],
    }


def line(scope: Scope) -> str:
    customer, resource = scope
    return json.dumps({"customerId": customer, "resourceId": resource})


@pytest.fixture(scope="module")
def stub() -> Iterator[EdgeStub]:
    server = EdgeStub().start()
    try:
        for customer, resource in SCOPES:
            server.put(customer, snapshot_body(customer, resource), resource)
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    connection = own_redis.client()
    yield connection
    connection.close()


@pytest.fixture
def scopes_file(tmp_path: Path) -> Path:
    path = tmp_path / "scopes.jsonl"
    path.write_text("\n".join(line(scope) for scope in [*SCOPES, UNKNOWN]) + "\n\n")
    return path


def run_resync(
    edge_url: str, redis_port: int, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    variables = {
        "EDGE_API_URL": edge_url,
        "SERVER_API_KEY": STUB_API_KEY,
        "REDIS_PORT": str(redis_port),
        "ENVIRONMENT_PREFIX": PREFIX,
        "CACHE_UPDATE_POLICY": "UPDATE_IF_EXISTS",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "cache_pipeline", "resync", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **variables},
    )


def counts(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert result.returncode == 0, result.stderr
    found: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def what_stiggs_sdk_writes(
    stub: EdgeStub, redis_server: RedisServer, scopes: Sequence[Scope]
) -> dict[str, Any]:
    """The keys Stigg's SDK writes when it misses on ``scopes`` and fetches them from the stub,
    renamed to PREFIX (read from its own prefix, then removed)."""
    calls = [{"getter": "getEntitlements", "customerId": c, "resourceId": r} for c, r in scopes]
    results = run_stigg_sdk(redis_server.port, SDK_PREFIX, stub.url, calls, api_key=STUB_API_KEY)
    assert all("error" not in result for result in results), results
    client = redis_server.client()
    try:
        state = read_state(client, KeyLayout(SDK_PREFIX))
        for key in client.scan_iter(match=f"{SDK_PREFIX}:*"):
            client.unlink(key)
    finally:
        client.close()
    return {PREFIX + key.removeprefix(SDK_PREFIX): value for key, value in state.items()}


def values(state: dict[str, Any]) -> dict[str, Any]:
    """Without the metadata keys, which SDK 3.95.0 does not write (4.x reads them)."""
    return {key: value for key, value in state.items() if ":metadata" not in key}


def test_resync_rebuilds_what_stiggs_sdk_would_after_redis_restarted_empty(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis, scopes_file: Path
) -> None:
    layout = KeyLayout(PREFIX)
    guard = SchemaGuard(client, layout)
    assert guard.check().status is SchemaStatus.CREATED
    own_redis.kill()
    own_redis.start()
    assert guard.check().status is SchemaStatus.DATA_LOST
    assert read_state(client, layout) == {}

    result = run_resync(stub.url, own_redis.port, str(scopes_file))

    assert counts(result) == {
        "scopes": len(SCOPES) + 1,
        "written": len(SCOPES),
        "stale": 0,
        "missing": 1,
        "failed": 0,
    }
    assert "missing: 'cus-unknown'" in result.stderr
    state = read_state(client, layout)
    assert values(state) == what_stiggs_sdk_writes(stub, own_redis, SCOPES)
    assert state[f"{PREFIX}:c_acme:eu:metadata"] == {"accessDeniedReason": None}
    assert state[f"{PREFIX}:c_cus-empty"] == {}
    assert state[f"{PREFIX}:c_cus-empty#timestamp"] == 0
    assert 0 < client.ttl(f"{PREFIX}:c_acme:eu:r_user@example.com:f_feature-seats") <= 604800
    check = guard.check()
    assert check.detail() is None  # the data-loss detail is gone on every pod
    assert check.marker.version == SCHEMA_VERSION
    assert check.marker.resynced_at is not None


def test_scopes_from_stdin_and_from_the_stubs_listing_are_read_once(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis
) -> None:
    listed = stub_scopes(stub.url)
    assert listed.returncode == 0, listed.stderr
    stdin = "\n".join([line(SCOPES[0]), line(SCOPES[0]), line(UNKNOWN), listed.stdout])

    result = run_resync(stub.url, own_redis.port, "-", stdin=stdin)

    found = counts(result)
    assert found["scopes"] == len(SCOPES) + 1
    assert (found["written"], found["missing"], found["failed"]) == (len(SCOPES), 1, 0)
    assert values(read_state(client, KeyLayout(PREFIX))) == what_stiggs_sdk_writes(
        stub, own_redis, SCOPES
    )


def _run(client: redis.Redis, call: ScriptCall) -> int:
    (reply,) = ScriptRunner(client).run_calls([call])
    return int(reply)


def test_resync_keeps_newer_data_and_respects_a_later_invalidation(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis, scopes_file: Path
) -> None:
    layout = KeyLayout(PREFIX)
    newer, invalidated = layout.customer("cus-7"), layout.customer("cus-8")
    entry = metered("feature-seats", 99, 100)
    assert _run(client, snapshot_call(newer, [entry], version=2**52, gate=2**52, ttl=60,
                                      only_if_exists=False)) > 0  # fmt: skip
    _run(client, invalidate_call(invalidated, at=2**52, ttl=60))
    before = read_state(client, layout)

    found = counts(run_resync(stub.url, own_redis.port, str(scopes_file)))

    assert (found["stale"], found["written"]) == (2, len(SCOPES) - 2)
    state = read_state(client, layout)
    for key, value in before.items():
        assert state[key] == value  # the newer snapshot stays whole
    assert state[newer.entitlements]["feature-seats"]["featureUsage"]["currentUsage"] == 99
    assert not [key for key in state if key.startswith(invalidated.entitlements)]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("not json", "line 2"),
        ('{"customerId": "a:r_b"}', "':r_'"),
        ('{"customerId": "a/b"}', "cannot be sent raw"),
        ('{"customerId": "cus-1", "resource": "x"}', "unknown field 'resource'"),
        ('{"resourceId": "x"}', "customerId must be a non-empty string"),
        ('["cus-1"]', "JSON object"),
    ],
)
def test_a_bad_scopes_line_fetches_and_writes_nothing(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis, tmp_path: Path, bad: str, says: str
) -> None:
    path = tmp_path / "scopes.jsonl"
    path.write_text(f"{line(('cus-20', None))}\n{bad}\n{line(('cus-21', None))}\n")
    asked = stub.requests("cus-20")

    result = run_resync(stub.url, own_redis.port, str(path))

    assert result.returncode == 1
    assert f"{path} line 2" in result.stderr
    assert says in result.stderr
    assert stub.requests("cus-20") == asked
    assert read_state(client, KeyLayout(PREFIX)) == {}


def test_without_scopes_it_says_how_to_name_them(stub: EdgeStub, own_redis: RedisServer) -> None:
    result = run_resync(stub.url, own_redis.port)
    assert result.returncode == 2
    assert "Missing argument 'SCOPES'" in result.stderr


def test_a_refused_api_key_writes_nothing_and_says_why(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis, scopes_file: Path
) -> None:
    layout = KeyLayout(PREFIX)
    SchemaGuard(client, layout).check()
    result = run_resync(stub.url, own_redis.port, str(scopes_file), SERVER_API_KEY="wrong-key")
    assert result.returncode == 5  # the Edge API
    assert "refused the API key (401)" in result.stderr
    assert "wrong-key" not in result.stderr + result.stdout
    assert read_state(client, layout) == {}
    marker = Marker.from_json(str(client.get(layout.schema_marker)), "k")
    assert marker.resynced_at is None


def test_listing_the_scopes_of_a_real_edge_says_it_cannot_list() -> None:
    with RecordingEdge() as edge:
        result = stub_scopes(edge.url)
    assert result.returncode == 5  # the Edge API
    assert "/_stub/scopes answered 404 (only the edge stub lists its scopes)" in result.stderr


def stub_scopes(edge_url: str) -> subprocess.CompletedProcess[str]:
    """``python -m cache_pipeline.dev stub-scopes``: the scopes an edge stub holds."""
    env = {**os.environ, "EDGE_API_URL": edge_url, "SERVER_API_KEY": STUB_API_KEY}
    return subprocess.run(
        [sys.executable, "-m", "cache_pipeline.dev", "stub-scopes"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_an_edge_answer_it_cannot_cache_fails_that_scope_alone(
    own_redis: RedisServer, client: redis.Redis
) -> None:
    good = {"data": {"entitlements": [feature("feature-sso")]}}
    bad = {"data": {"entitlements": [feature("feature-sso"), feature("a#b")]}}
    responses = {
        "GET /v1/c/cus-good/entitlements.json": good,
        "GET /v1/c/cus-bad/entitlements.json": bad,
    }
    stdin = "\n".join(line(scope) for scope in [("cus-bad", None), ("cus-good", None)])
    with RecordingEdge(responses) as edge:
        result = run_resync(edge.url, own_redis.port, "-", stdin=stdin)
        assert [r.headers["x-api-key"] for r in edge.entitlement_requests] == [STUB_API_KEY] * 2
    assert result.returncode == 1
    assert json.loads(result.stdout.strip().splitlines()[-1])["failed"] == 1
    assert "failed: 'cus-bad': the Edge answered an entry it cannot cache" in result.stderr
    assert "entitlements[1]" in result.stderr
    state = read_state(client, KeyLayout(PREFIX))
    assert f"{PREFIX}:c_cus-good" in state
    assert not [key for key in state if "cus-bad" in key]


def test_another_schema_version_refuses_the_resync(
    stub: EdgeStub, own_redis: RedisServer, client: redis.Redis, scopes_file: Path
) -> None:
    layout = KeyLayout(PREFIX)
    client.set(layout.schema_marker, json.dumps({"version": "999", "createdAt": 1}))
    asked = stub.requests("cus-0")
    result = run_resync(stub.url, own_redis.port, str(scopes_file))
    assert result.returncode == 3  # Redis
    assert "refusing to write" in result.stderr
    assert read_state(client, layout) == {}
    assert stub.requests("cus-0") == asked  # refused before fetching anything


def test_an_unreachable_redis_is_an_error_that_says_so(stub: EdgeStub, scopes_file: Path) -> None:
    result = run_resync(stub.url, free_port(), str(scopes_file), REDIS_TIMEOUT_SECS="0.5")
    assert result.returncode == 3  # Redis
    assert "Redis is unavailable" in result.stderr


def test_the_write_script_reloads_itself_after_script_flush(
    own_redis: RedisServer, client: redis.Redis
) -> None:
    runner = ScriptRunner(client)
    scope = KeyLayout(PREFIX).customer("cus-1")
    call = snapshot_call(scope, [feature("a")], version=5, gate=5, ttl=60, only_if_exists=False)
    assert runner.run_calls([call]) == [2]
    client.script_flush()
    later = snapshot_call(scope, [feature("b")], version=6, gate=6, ttl=60, only_if_exists=False)
    assert runner.run_calls([later, call]) == [2, 0]
    assert list(json.loads(str(client.get(scope.entitlements)))) == ["b"]


@pytest.mark.cluster
def test_resync_writes_a_redis_cluster_in_its_hash_tag_layout(stub: EdgeStub) -> None:
    cluster = RedisClusterServer().start()
    try:
        scopes = [("acme:eu", None), ("acme:eu", "user@example.com"), ("cus-1", None)]
        stdin = "\n".join(line(scope) for scope in scopes)
        result = run_resync(
            stub.url, cluster.ports[0], "-", stdin=stdin, REDIS_CLUSTER="1", REDIS_TIMEOUT_SECS="5"
        )
        assert counts(result) == {"scopes": 3, "written": 3, "stale": 0, "missing": 0, "failed": 0}
        client = cluster.client()
        try:
            usage = client.get(f"{PREFIX}:{{c_acme:eu:r_user@example.com}}:f_feature-seats")
            assert json.loads(str(usage)) == {
                "currentUsage": len("acme:eu") + len("user@example.com"),
                "usagePeriodEnd": 1797292800000,
            }
            assert client.exists(f"{PREFIX}:{{c_cus-1}}", f"{PREFIX}:{{c_cus-1}}#timestamp") == 2
        finally:
            client.close()
    finally:
        cluster.stop()
