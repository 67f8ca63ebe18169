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

from cache_pipeline.contract.plan import ScriptCall, invalidate_call, snapshot_call, usage_call
from cache_pipeline.keys import CustomerKeys
from cache_pipeline.store.scripts import script_source

TTL = 604800
SEATS = {
    "feature": {"refId": "feature-seats", "featureType": "NUMBER", "meterType": "Fluctuating"},
    "usageLimit": 10,
    "hasUnlimitedUsage": False,
    "currentUsage": 3,
}


@pytest.fixture
def client(prefixed_redis: redis.Redis) -> redis.Redis:
    return prefixed_redis


def _json(client: redis.Redis, key: str) -> Any:
    raw = client.get(key)
    assert isinstance(raw, str), f"{key} holds no value"
    return json.loads(raw)


def _run(client: redis.Redis, call: ScriptCall) -> int:
    return int(client.register_script(script_source(call.script))(keys=call.keys, args=call.args))


def _write(
    client: redis.Redis,
    scope: str,
    version: int,
    *,
    gate: int | None = None,
    usage: tuple[int, int] = (3, 0),
    only_if_exists: bool = False,
) -> int:
    """Write the SEATS snapshot at ``version``; ``usage`` = (current usage, its version or 0)."""
    entry = {**SEATS, "currentUsage": usage[0], "usageUpdatedAt": usage[1] or None}
    call = snapshot_call(
        CustomerKeys(scope),
        [entry],
        version=version,
        gate=gate if gate is not None else version,
        ttl=TTL,
        only_if_exists=only_if_exists,
    )
    return _run(client, call)


def _invalidate(client: redis.Redis, scope: str, at: int) -> int:
    return _run(client, invalidate_call(CustomerKeys(scope), at=at, ttl=TTL))


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


def test_invalidation_deletes_values_not_newer_than_t_with_their_timestamps_whoever_wrote_them(
    client: redis.Redis, prefix: str
) -> None:
    scope = f"{prefix}:c_cus"
    _write(client, scope, 3000, usage=(3, 3500))
    # a usage key Stigg's SDK wrote for a feature of the map: not in our index
    stigg_map = _json(client, scope)
    stigg_map["feature-api"] = stigg_map["feature-seats"]
    client.set(scope, json.dumps(stigg_map))
    client.set(f"{scope}:f_feature-api", '{"currentUsage":1}')
    client.set(f"{scope}:f_feature-api#timestamp", "3900")
    assert _invalidate(client, scope, 4000) == 8
    left = sorted(client.scan_iter(match=f"{prefix}:*"))
    assert left == [f"{scope}#deleted", f"{scope}#invalidated"]
    assert client.get(f"{scope}#invalidated") == "4000"
    # what it deleted, so that no older usage lands where these were (private to the service)
    assert client.hgetall(f"{scope}#deleted") == {
        f"{scope}:f_feature-seats": "3500",
        f"{scope}:f_feature-api": "3900",
    }


def test_a_late_invalidation_removes_nothing_newer_than_itself(
    client: redis.Redis, prefix: str
) -> None:
    """Delivered after a newer snapshot: the snapshot stays; only its older usage may go, and
    no still older usage can take its place (rule 6: a miss, never a stale hit)."""
    scope = f"{prefix}:c_cus"
    _write(client, scope, 5000, usage=(3, 3000))
    _usage(client, scope, 6000, 9)
    assert _invalidate(client, scope, 4000) == 2  # the usage key (3000) and its version
    assert client.get(scope + "#timestamp") == "5000"
    assert client.get(f"{scope}:metadata#timestamp") == "5000"
    assert client.exists(f"{scope}:f_feature-seats", f"{scope}:f_feature-seats#timestamp") == 0
    assert _json(client, f"{scope}:credit_ai-tokens")["currentUsage"] == 9
    # what stays stays indexed, so the next invalidation still finds it
    assert client.smembers(f"{scope}#keys") == {f"{scope}:credit_ai-tokens"}
    assert _write(client, scope, 5500, usage=(2, 2000)) == 2  # map and metadata only
    assert client.exists(f"{scope}:f_feature-seats") == 0
    assert _write(client, scope, 5600, usage=(4, 3000)) == 3  # the version it deleted: lands
    assert client.get(f"{scope}:f_feature-seats#timestamp") == "3000"
    assert _invalidate(client, scope, 7000) == 8
    assert sorted(client.scan_iter(match=f"{prefix}:*")) == [
        f"{scope}#deleted",
        f"{scope}#invalidated",
    ]


def test_an_invalidation_and_a_write_at_the_same_time_end_alike_in_either_order(
    client: redis.Redis, prefix: str
) -> None:
    """T covers every version <= T: a write at T is removed by it, or refused after it."""
    first, second = f"{prefix}:c_a", f"{prefix}:c_b"
    _write(client, first, 4000)
    _invalidate(client, first, 4000)
    _invalidate(client, second, 4000)
    assert _write(client, second, 4000) == 0
    assert _usage(client, second, 4000, 1, only_if_exists=False) == 0
    assert sorted(client.scan_iter(match=f"{first}*")) == [
        f"{first}#deleted",
        f"{first}#invalidated",
    ]
    assert sorted(client.scan_iter(match=f"{second}*")) == [f"{second}#invalidated"]


def test_the_operators_purge_drops_newer_keys_too_and_may_lower_t(
    client: redis.Redis, prefix: str
) -> None:
    scope = f"{prefix}:c_cus"
    _invalidate(client, scope, 9000)
    _write(client, scope, 9500, usage=(3, 9600))
    assert _run(client, invalidate_call(CustomerKeys(scope), at=5000, ttl=TTL, force=True)) == 6
    assert sorted(client.scan_iter(match=f"{prefix}:*")) == [f"{scope}#invalidated"]  # no tombstone
    assert client.get(f"{scope}#invalidated") == "5000"


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


def _usage(
    client: redis.Redis, scope: str, version: int, current: int, *, only_if_exists: bool = True
) -> int:
    value = {"currentUsage": current, "usageLimit": 100, "usagePeriodStart": None}
    key = f"{scope}:credit_ai-tokens"
    keys = CustomerKeys(scope)
    call = usage_call(keys, key, value, version=version, ttl=TTL, only_if_exists=only_if_exists)
    return _run(client, call)


def test_under_upsert_a_balance_is_written_before_its_scope_and_the_scope_keeps_it(
    client: redis.Redis, prefix: str
) -> None:
    """v2.1 rule 2: UPSERT writes every message's keys, whatever order they come in."""
    scope = f"{prefix}:c_cus"
    assert _usage(client, scope, 2000, 7, only_if_exists=False) == 1
    assert client.exists(scope) == 0
    assert _write(client, scope, 1000) == 3
    assert _json(client, f"{scope}:credit_ai-tokens")["currentUsage"] == 7
    assert client.smembers(f"{scope}#keys") == {
        f"{scope}:credit_ai-tokens",
        f"{scope}:f_feature-seats",
    }


def test_under_update_if_exists_a_balance_needs_its_scope_and_keeps_its_newest_version(
    client: redis.Redis, prefix: str
) -> None:
    scope = f"{prefix}:c_user@example.com"
    assert _usage(client, scope, 1000, 5) == -1
    assert client.exists(f"{scope}:credit_ai-tokens") == 0
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
