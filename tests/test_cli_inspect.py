"""``cache-pipeline inspect``: every key of a scope and each Stigg reader's verdict, read-only.

Against a real redis-server: a scope written by the pipeline's planner and store, one
written by Stigg's SDK itself (its golden Redis contents), and scopes each reader would
miss for a reason of its own. The command never changes Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import redis

from cache_pipeline.cli.inspect import READERS, inspect_scope
from cache_pipeline.keys import KeyLayout
from tests.support import factory
from tests.support.golden import GOLDEN_FILES, load_golden, rekey
from tests.support.servers import RedisServer
from tests.support.worker import warm_cache

OLD, NEW = READERS


def everything(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key of the prefix with its type, TTL and dumped value (to show nothing changed)."""
    return {
        key: (client.type(key), client.pttl(key), client.dump(key))
        for key in client.scan_iter(match=f"{prefix}:*")
    }


def run_inspect(redis_server: RedisServer, prefix: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "REDIS_PORT": str(redis_server.port), "ENVIRONMENT_PREFIX": prefix}
    done = subprocess.run(
        [sys.executable, "-m", "cache_pipeline", "inspect", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def test_a_scope_the_pipeline_wrote_reads_as_hits_for_both_readers(
    redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    body = factory.entitlements(
        "acme:eu", 1000, features={"seats": 3, "sso": None}, credits={"tokens": 5}
    )
    warm_cache(prefixed_redis, prefix, [body])
    before = everything(prefixed_redis, prefix)

    found = run_inspect(redis_server, prefix, "acme:eu")

    assert everything(prefixed_redis, prefix) == before  # read-only
    scope = f"{prefix}:c_acme:eu"
    keys = {view["key"]: view for view in found["keys"]}
    assert keys[scope]["version"] == "1000"
    assert keys[scope]["value"]["seats"]["calculatedEntitlement"]["usageLimit"] == 10
    assert keys[scope]["ttl"] == -1  # warm_cache writes without expiry
    assert keys[f"{scope}:f_seats"]["value"]["currentUsage"] == 3
    assert keys[f"{scope}:credit_tokens"]["role"] == "credit"
    assert keys[f"{scope}#keys"]["value"] == [f"{scope}:credit_tokens", f"{scope}:f_seats"]
    for reader in READERS:
        assert found["readers"][reader] == {
            "scope": "hit",
            "features": {"seats": "hit", "sso": "hit"},
        }


def test_a_scope_stiggs_sdk_wrote_reads_as_hits(prefixed_redis: redis.Redis, prefix: str) -> None:
    golden = load_golden(next(p for p in GOLDEN_FILES if p.stem == "usage-after-reporting"))
    for key, value in rekey(golden["redis"], prefix).items():
        prefixed_redis.set(key, value)
    found = inspect_scope(prefixed_redis, KeyLayout(prefix), "cus-usage", None)
    for reader in READERS:
        verdict = found.readers[reader]
        assert verdict.scope == "hit"
        assert verdict.features == {"feature-api-calls": "hit", "feature-seats": "hit"}


def test_each_reader_says_why_it_would_miss(prefixed_redis: redis.Redis, prefix: str) -> None:
    layout = KeyLayout(prefix)
    warm_cache(prefixed_redis, prefix, [factory.entitlements("cus-1", 1000, features={"seats": 1})])
    keys = layout.customer("cus-1")
    prefixed_redis.delete(keys.entitlements + "#timestamp")  # as Stigg's 3.95.0 may leave it
    prefixed_redis.delete(keys.feature_usage("seats") + "#timestamp")
    found = inspect_scope(prefixed_redis, layout, "cus-1", None)
    assert found.readers[OLD].scope == "hit"  # 3.95.0 reads neither #timestamp
    assert found.readers[OLD].features == {"seats": "hit"}
    assert found.readers[NEW].scope == "miss: no #timestamp (4.x needs it)"

    prefixed_redis.set(keys.entitlements + "#timestamp", "1000")
    prefixed_redis.delete(keys.feature_usage("seats"))
    found = inspect_scope(prefixed_redis, layout, "cus-1", None)
    assert found.readers[OLD].features == {"seats": "miss: metered, no usage key"}


def test_a_resource_scope_older_than_its_global_scope_is_a_miss(
    prefixed_redis: redis.Redis, prefix: str
) -> None:
    warm_cache(
        prefixed_redis,
        prefix,
        [
            factory.entitlements("cus-1", 2000, features={"sso": None}),
            factory.entitlements("cus-1", 1000, resource="site-1", features={"sso": None}),
        ],
    )
    found = inspect_scope(prefixed_redis, KeyLayout(prefix), "cus-1", "site-1")
    roles = {view.role for view in found.keys}
    assert {"map", "global map", "metadata"} <= roles
    for reader in READERS:
        assert found.readers[reader].scope == (
            "miss: the resource map (1000) is older than the global one (2000)"
        )


def test_a_signed_timestamp_reads_as_stiggs_parseint_reads_it(
    prefixed_redis: redis.Redis, prefix: str
) -> None:
    warm_cache(
        prefixed_redis,
        prefix,
        [
            factory.entitlements("cus-1", 2000, features={"sso": None}),
            factory.entitlements("cus-1", 3000, resource="site-1", features={"sso": None}),
        ],
    )
    resource_map = KeyLayout(prefix).customer("cus-1", "site-1").entitlements
    prefixed_redis.set(resource_map + "#timestamp", " +3000")  # parseInt(" +3000") is 3000
    found = inspect_scope(prefixed_redis, KeyLayout(prefix), "cus-1", "site-1")
    for reader in READERS:
        assert found.readers[reader].scope == "hit"


def test_an_empty_environment_shows_the_absent_map_and_a_miss(
    prefixed_redis: redis.Redis, prefix: str
) -> None:
    found = inspect_scope(prefixed_redis, KeyLayout(prefix), "nobody", None)
    assert [(view.role, view.type) for view in found.keys] == [
        ("map", "none"),
        ("metadata", "none"),
    ]
    assert {found.readers[reader].scope for reader in READERS} == {"miss: no map"}
