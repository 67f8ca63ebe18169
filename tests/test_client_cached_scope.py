"""The v2 read script and its verdict on keys Stigg's SDK wrote (stigg-golden) and on probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from cache_pipeline.client.cached_scope import (
    CachedScope,
    ScopeMiss,
    UsageKind,
    decode,
    judge,
    parse_timestamp,
    read_call,
)
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.scripts import script_source
from tests.support.golden import GOLDEN_FILES, load_golden, rekey


@pytest.fixture
def client(prefixed_redis: redis.Redis) -> redis.Redis:
    return prefixed_redis


def _read(
    client: redis.Redis,
    prefix: str,
    customer: str,
    resource: str | None = None,
    what: UsageKind = "all",
    wanted: str | None = None,
) -> list[Any]:
    layout = KeyLayout(prefix)
    global_keys = layout.customer(customer) if resource else None
    keys, args = read_call(layout.customer(customer, resource), global_keys, what, wanted)
    reply: list[Any] = client.register_script(script_source("v2_read_scope"))(keys=keys, args=args)
    return reply


def _load(client: redis.Redis, prefix: str, path: Path) -> dict[str, Any]:
    golden = load_golden(path)
    for key, value in rekey(golden["redis"], prefix).items():
        client.set(key, value)
    return golden


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_every_scope_stiggs_sdk_wrote_is_a_hit_with_its_usage(
    path: Path, client: redis.Redis, prefix: str
) -> None:
    golden = _load(client, prefix, path)
    decoded = golden["redisDecoded"]
    scopes = [k for k in decoded if ":f_" not in k and "#" not in k]
    assert scopes, path.name
    for key in scopes:
        customer, _, resource = key.removeprefix("golden:c_").partition(":r_")
        verdict = judge(_read(client, prefix, customer, resource or None), resource=bool(resource))
        assert isinstance(verdict, CachedScope), key
        assert verdict.entries == decoded[key]
        assert verdict.version == decoded[key + "#timestamp"]
        for feature_id, usage in verdict.usages.items():
            assert usage == decoded[f"{key}:f_{feature_id}"]


def test_a_single_check_reads_its_own_usage_key(client: redis.Redis, prefix: str) -> None:
    _load(client, prefix, next(p for p in GOLDEN_FILES if p.stem == "boolean-numeric-metered"))
    reply = _read(client, prefix, "cus-basic", what="feature", wanted="feature-seats")
    verdict = judge(reply, resource=False, feature_id="feature-seats")
    assert isinstance(verdict, CachedScope)
    assert verdict.usages == {"feature-seats": {"currentUsage": 3}}
    client.delete(f"{prefix}:c_cus-basic:f_feature-seats")
    reply = _read(client, prefix, "cus-basic", what="feature", wanted="feature-seats")
    assert judge(reply, resource=False, feature_id="feature-seats") == ScopeMiss(
        "metered feature 'feature-seats' has no usage key"
    )
    # a non-metered feature of the same scope is still a hit, and so is a missing one
    reply = _read(client, prefix, "cus-basic", what="feature", wanted="feature-sso")
    assert isinstance(judge(reply, resource=False, feature_id="feature-sso"), CachedScope)
    assert isinstance(judge(reply, resource=False, feature_id="nope"), CachedScope)


SEATS = {"calculatedEntitlement": {"feature": {"id": "s", "featureType": "BOOLEAN"}}}


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ({}, ScopeMiss("no readable map")),
        ({"map": ""}, ScopeMiss("no readable map")),
        ({"map": "{oops"}, ScopeMiss("no readable map")),
        ({"map": "null"}, ScopeMiss("no readable map")),
        ({"map": "{}"}, "not found"),
        ({"map": "[]"}, "not found"),
        ({"map": json.dumps({"s": {"x": 1}})}, ScopeMiss("entry 's' has no calculatedEntitlement")),
        ({"map": json.dumps({"s": SEATS}), "meta": '{"accessDeniedReason":"Revoked"}'}, "Revoked"),
    ],
)
def test_global_scope_verdicts_follow_stiggs_sdk(
    client: redis.Redis, prefix: str, stored: dict[str, str], expected: Any
) -> None:
    scope = f"{prefix}:c_cus"
    if "map" in stored:
        client.set(scope, stored["map"])  # 3.95.0 reads a global map without its #timestamp
    if "meta" in stored:
        client.set(f"{scope}:metadata", stored["meta"])
    verdict = judge(_read(client, prefix, "cus"), resource=False)
    if isinstance(expected, ScopeMiss):
        assert verdict == expected
    elif expected == "not found":
        assert isinstance(verdict, CachedScope)
        assert not verdict.customer_exists
    else:
        assert isinstance(verdict, CachedScope)
        assert verdict.access_denied_reason == expected


@pytest.mark.parametrize(
    ("resource_ts", "global_ts", "resource_map", "expected"),
    [
        ("200", "100", True, None),
        ("100", "100", True, None),
        ("100", "200", True, ScopeMiss("resource map older than the global one", True)),
        (None, "100", True, ScopeMiss("resource map older than the global one", True)),
        ("100", None, True, ScopeMiss("resource map older than the global one", True)),
        (None, "100", False, ScopeMiss("no resource map", False)),
        (None, None, False, ScopeMiss("no resource map", True)),
        ("2026-11-20T10:00:00Z", "100", True, None),  # parseInt: 2026 >= 100
    ],
)
def test_resource_scope_freshness_follows_stiggs_sdk(
    client: redis.Redis,
    prefix: str,
    resource_ts: str | None,
    global_ts: str | None,
    resource_map: bool,
    expected: ScopeMiss | None,
) -> None:
    scope = f"{prefix}:c_cus:r_site"
    if resource_map:
        client.set(scope, json.dumps({"s": SEATS}))
    if resource_ts is not None:
        client.set(scope + "#timestamp", resource_ts)
    if global_ts is not None:
        client.set(f"{prefix}:c_cus#timestamp", global_ts)
    verdict = judge(_read(client, prefix, "cus", "site"), resource=True)
    if expected is None:
        assert isinstance(verdict, CachedScope)
    else:
        assert verdict == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1795168800000", 1795168800000), ("0", 0), (" 12abc", 12), ("abc", None), (None, None)],
)
def test_timestamps_parse_like_parse_int(raw: str | None, expected: int | None) -> None:
    assert parse_timestamp(raw) == expected


def test_a_credit_read_needs_only_the_map(client: redis.Redis, prefix: str) -> None:
    _load(client, prefix, next(p for p in GOLDEN_FILES if p.stem == "boolean-numeric-metered"))
    client.delete(f"{prefix}:c_cus-basic:f_feature-seats")  # a metered usage key is gone
    client.set(f"{prefix}:c_cus-basic:credit_ai", '{"currentUsage":1,"usageLimit":5}')
    reply = _read(client, prefix, "cus-basic", what="credit", wanted="ai")
    verdict = judge(reply, resource=False, credit=True)
    assert isinstance(verdict, CachedScope)
    assert verdict.usages == {"ai": {"currentUsage": 1, "usageLimit": 5}}
    assert isinstance(judge(reply, resource=False), ScopeMiss)  # not so for getEntitlements


def test_an_expired_entry_misses_for_its_own_check_and_for_the_whole_scope(
    client: redis.Redis, prefix: str
) -> None:
    feature = SEATS["calculatedEntitlement"]["feature"]
    entry = {"calculatedEntitlement": {"feature": feature, "validUntil": 1000}}
    client.set(f"{prefix}:c_cus", json.dumps({"s": entry, "t": SEATS}))
    reply = _read(client, prefix, "cus")
    expired = ScopeMiss("entry 's' expired (validUntil)")
    assert judge(reply, resource=False, now_ms=1000) == expired
    assert judge(reply, resource=False, feature_id="s", now_ms=1000) == expired
    assert isinstance(judge(reply, resource=False, feature_id="t", now_ms=1000), CachedScope)
    assert isinstance(judge(reply, resource=False, now_ms=999), CachedScope)


def test_a_reply_decoded_once_is_judged_as_the_raw_one(client: redis.Redis, prefix: str) -> None:
    _load(client, prefix, next(p for p in GOLDEN_FILES if p.stem == "resource-scoped"))
    reply = _read(client, prefix, "cus-res", "site-1")
    decoded = decode(reply)
    for feature_id in (None, "feature-seats", "feature-site-analytics", "nope"):
        for resource in (True, False):
            raw = judge(reply, resource=resource, feature_id=feature_id)
            assert judge(decoded, resource=resource, feature_id=feature_id) == raw
    assert isinstance(judge(decoded, resource=True), CachedScope)
