"""Contract v2 write and invalidation scripts against a real redis-server.

They are the atomic steps the v2 store is built on: Stigg's key layout, plain
integer #timestamp siblings, per-key versions, and an invalidation that leaves
no tombstone behind, so that a Stigg SDK's own refill lands afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from redis.commands.core import Script

from cache_pipeline.client.reading import script_source
from cache_pipeline.plan import encode
from cache_pipeline.stigg_map import map_entitlements, usage_value
from tests.support.servers import RedisServer

TTL = 604800
SEATS = {
    "feature": {"refId": "feature-seats", "featureType": "NUMBER", "meterType": "Fluctuating"},
    "usageLimit": 10,
    "hasUnlimitedUsage": False,
    "currentUsage": 3,
}


def _script(client: redis.Redis, name: str) -> Script:
    return client.register_script(script_source(name))


@pytest.fixture
def client(redis_server: RedisServer, prefix: str) -> Any:
    connection = redis_server.client()
    yield connection
    for key in connection.scan_iter(match=f"{prefix}:*"):
        connection.unlink(key)
    connection.close()


def _json(client: redis.Redis, key: str) -> Any:
    raw = client.get(key)
    assert isinstance(raw, str), f"{key} holds no value"
    return json.loads(raw)


def _keys(scope: str) -> list[str]:
    return [scope, f"{scope}:metadata", f"{scope}#invalidated", f"{scope}#keys"]


def _write(
    client: redis.Redis,
    scope: str,
    version: int,
    *,
    gate: int | None = None,
    usage: tuple[int, int] | None = (3, 0),
    only_if_exists: bool = False,
) -> int:
    """Write the SEATS snapshot at ``version``; ``usage`` = (current usage, its version or 0)."""
    keys = _keys(scope)
    args: list[str] = [
        str(version),
        str(gate if gate is not None else version),
        str(TTL),
        "1" if only_if_exists else "0",
        encode(map_entitlements([SEATS])),
        encode({"accessDeniedReason": None}),
    ]
    if usage is not None:
        keys.append(f"{scope}:f_feature-seats")
        args += [encode(usage_value({**SEATS, "currentUsage": usage[0]})), str(usage[1] or version)]
    return int(_script(client, "v2_write_scope")(keys=keys, args=args))


def _invalidate(client: redis.Redis, scope: str, at: int) -> int:
    return int(_script(client, "v2_invalidate_scope")(keys=_keys(scope), args=(str(at), str(TTL))))


def test_a_snapshot_is_written_in_stiggs_layout(client: redis.Redis, prefix: str) -> None:
    scope = f"{prefix}:c_acme:eu"
    assert _write(client, scope, 1000, usage=(3, 1500)) == 3
    assert _json(client, scope)["feature-seats"]["calculatedEntitlement"]["usageLimit"] == 10
    assert client.get(scope + "#timestamp") == "1000"
    assert client.get(f"{scope}:metadata") == '{"accessDeniedReason":null}'
    assert client.get(f"{scope}:f_feature-seats") == '{"currentUsage":3}'
    assert client.get(f"{scope}:f_feature-seats#timestamp") == "1500"
    assert 0 < client.ttl(scope) <= TTL
    assert 0 < client.ttl(f"{scope}:f_feature-seats#timestamp") <= TTL


def test_each_key_keeps_its_newest_version(client: redis.Redis, prefix: str) -> None:
    scope = f"{prefix}:c_cus"
    _write(client, scope, 2000, usage=(5, 3000))
    assert _write(client, scope, 1000, usage=(4, 2500)) == 0
    assert client.get(f"{scope}:f_feature-seats") == '{"currentUsage":5}'
    assert _write(client, scope, 2000, usage=(6, 3000)) == 3  # equal versions are rewritten
    assert client.get(f"{scope}:f_feature-seats") == '{"currentUsage":6}'


@pytest.mark.parametrize(
    ("foreign", "written"),
    [("garbage", 3), ("2026-11-20T10:00:00Z", 3), ("99999999999999", 2)],
)
def test_foreign_timestamps_read_as_stiggs_sdk_reads_them(
    client: redis.Redis, prefix: str, foreign: str, written: int
) -> None:
    """parseInt semantics: leading digits ("2026-11-20T..." is 2026 ms), else no timestamp."""
    scope = f"{prefix}:c_cus"
    client.set(scope + "#timestamp", foreign)
    assert _write(client, scope, 5000) == written


def test_update_if_exists_skips_an_unknown_scope(client: redis.Redis, prefix: str) -> None:
    scope = f"{prefix}:c_cus"
    assert _write(client, scope, 1000, only_if_exists=True) == -1
    assert client.exists(scope) == 0
    _write(client, scope, 1000)
    assert _write(client, scope, 1001, only_if_exists=True) == 3


def test_invalidation_deletes_values_and_their_timestamps_whoever_wrote_them(
    client: redis.Redis, prefix: str
) -> None:
    scope = f"{prefix}:c_cus"
    _write(client, scope, 5000, usage=(3, 9000))
    # a usage key Stigg's SDK wrote for a feature of the map: not in our index
    stigg_map = _json(client, scope)
    stigg_map["feature-api"] = stigg_map["feature-seats"]
    client.set(scope, json.dumps(stigg_map))
    client.set(f"{scope}:f_feature-api", '{"currentUsage":1}')
    client.set(f"{scope}:f_feature-api#timestamp", "9999")
    assert _invalidate(client, scope, 4000) == 8
    left = sorted(client.scan_iter(match=f"{prefix}:*"))
    assert left == [f"{scope}#invalidated"]
    assert client.get(f"{scope}#invalidated") == "4000"


def test_after_invalidation_older_messages_are_refused_and_a_refill_lands(
    client: redis.Redis, prefix: str
) -> None:
    scope = f"{prefix}:c_cus"
    _write(client, scope, 1000)
    _invalidate(client, scope, 2000)
    assert _write(client, scope, 1500) == 0  # a queue message older than T
    assert client.exists(scope) == 0
    # a reader's write-back: its data is older than T, its request started after T
    assert _write(client, scope, 1500, gate=2100) == 3
    assert client.get(scope + "#timestamp") == "1500"


def test_the_invalidation_time_is_never_lowered(client: redis.Redis, prefix: str) -> None:
    scope = f"{prefix}:c_cus"
    _invalidate(client, scope, 2000)
    _invalidate(client, scope, 1000)
    assert client.get(f"{scope}#invalidated") == "2000"


def _usage(client: redis.Redis, scope: str, version: int, current: int) -> int:
    keys = [scope, f"{scope}:credit_ai-tokens", f"{scope}#invalidated", f"{scope}#keys"]
    value = encode({"currentUsage": current, "usageLimit": 100, "usagePeriodStart": None})
    return int(_script(client, "v2_write_usage")(keys=keys, args=(str(version), str(TTL), value)))


def test_a_credit_balance_needs_its_scope_and_keeps_its_newest_version(
    client: redis.Redis, prefix: str
) -> None:
    scope = f"{prefix}:c_user@example.com"
    assert _usage(client, scope, 1000, 5) == -1
    _write(client, scope, 1000)
    assert _usage(client, scope, 2000, 7) == 1
    assert _usage(client, scope, 1500, 6) == 0
    assert _json(client, f"{scope}:credit_ai-tokens")["currentUsage"] == 7
    assert client.get(f"{scope}:credit_ai-tokens#timestamp") == "2000"
    assert client.smembers(f"{scope}#keys") == {
        f"{scope}:credit_ai-tokens",
        f"{scope}:f_feature-seats",
    }


def test_a_credit_balance_older_than_the_invalidation_is_refused_and_then_deleted_by_the_next(
    client: redis.Redis, prefix: str
) -> None:
    scope = f"{prefix}:c_cus"
    _write(client, scope, 1000)
    _usage(client, scope, 1100, 5)
    _invalidate(client, scope, 3000)
    _write(client, scope, 1500, gate=3100)  # a reader's refill
    assert _usage(client, scope, 2000, 6) == 0
    assert _usage(client, scope, 3500, 8) == 1
    _invalidate(client, scope, 4000)
    assert client.exists(f"{scope}:credit_ai-tokens", f"{scope}:credit_ai-tokens#timestamp") == 0
