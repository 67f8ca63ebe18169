"""Stigg's own SDK (3.95.0, real, via tests/interop) reads what the contract v2 writes produce.

The v2 scripts write each golden Edge answer onto an empty Redis; Stigg's SDK then answers
every recorded cache-hit read exactly as it did from the data it wrote itself, without one
Edge request. After a v2 invalidation, the SDK's own refill (with an ``entitlementUpdatedAt``
older than the invalidation) lands and the next read is a hit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from cache_pipeline.contract.dates import edge_version
from cache_pipeline.contract.plan import ScriptCall, invalidate_call, snapshot_call
from cache_pipeline.contract.stigg_map import metered_usages
from cache_pipeline.keys import CustomerKeys
from cache_pipeline.store.scripts import script_source
from tests.support.golden import (
    GOLDEN_CLOCK_MS,
    GOLDEN_TTL,
    edge_scope,
    load_golden,
    rekey,
    renamed,
    replay,
    snapshot_files,
)
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer

SNAPSHOT_FILES = snapshot_files()


@pytest.fixture
def client(prefixed_redis: redis.Redis) -> redis.Redis:
    return prefixed_redis


def _run(client: redis.Redis, call: ScriptCall) -> int:
    return int(client.register_script(script_source(call.script))(keys=call.keys, args=call.args))


def _scope(prefix: str, request: str) -> str:
    """``GET /v1/c/C/entitlements.json[?resourceId=R]`` → ``prefix:c_C[:r_R]``."""
    customer, resource = edge_scope(request)
    return f"{prefix}:c_{customer}" + (f":r_{resource}" if resource else "")


def _write_answers(client: redis.Redis, prefix: str, golden: dict[str, Any]) -> set[str]:
    """Write every Edge answer of a golden file with the v2 script; the usage keys Stigg's
    SDK would not have written (metered entries without usageUpdatedAt) are returned."""
    extra: set[str] = set()
    for request, response in golden["edgeResponses"].items():
        entries = response["data"]["entitlements"]
        scope = _scope(prefix, request)
        version = edge_version(entries, now=GOLDEN_CLOCK_MS)
        call = snapshot_call(
            CustomerKeys(scope),
            entries,
            version=version,
            gate=version,
            ttl=GOLDEN_TTL,
            only_if_exists=False,
        )
        assert _run(client, call) > 0
        for feature_id, (_, usage_version) in metered_usages(entries).items():
            if usage_version is None:
                extra |= {f"{scope}:f_{feature_id}", f"{scope}:f_{feature_id}#timestamp"}
    return extra


def _values(client: redis.Redis, prefix: str) -> dict[str, str]:
    """Stigg's keys only: the private keys (``#`` and ``__``) and metadata are ours."""
    keys = [
        key
        for key in client.scan_iter(match=f"{prefix}:*")
        if not key.endswith(("#keys", "#invalidated", "#deleted", "__")) and ":metadata" not in key
    ]
    return {key: client.get(key) for key in keys}  # type: ignore[misc]


@pytest.mark.parametrize("path", SNAPSHOT_FILES, ids=lambda path: path.stem)
def test_stiggs_sdk_answers_our_writes_from_cache_as_it_answered_its_own(
    path: Path, redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    golden = load_golden(path)
    extra = _write_answers(client, prefix, golden)
    written = _values(client, prefix)
    assert {k: v for k, v in written.items() if k not in extra} == rekey(golden["redis"], prefix)
    reads = [read for read in golden["sdkReads"] if not read.get("apiRequests")]
    with RecordingEdge() as edge:
        results, events = replay(redis_server.port, prefix, edge.url, reads)
    assert edge.entitlement_requests == []
    for read, result, call_events in zip(reads, results, events, strict=True):
        assert result == read["result"], read["call"]
        assert call_events == read["sdkEvents"], read["call"]
        assert set(call_events) == {"cacheHit"}, read["call"]


def test_raw_ids_with_colon_and_at_read_as_hits_in_both_scopes(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    resource_file = next(path for path in SNAPSHOT_FILES if path.stem == "resource-scoped")
    golden = renamed(
        load_golden(resource_file), {"cus-res": "acme:eu", "site-1": "user@example.com"}
    )
    _write_answers(client, prefix, golden)
    assert client.exists(f"{prefix}:c_acme:eu:r_user@example.com") == 1
    reads = [read for read in golden["sdkReads"] if not read.get("apiRequests")]
    with RecordingEdge() as edge:
        results = replay(redis_server.port, prefix, edge.url, reads)[0]
    assert edge.entitlement_requests == []
    assert results == [read["result"] for read in reads]


def test_after_an_invalidation_stiggs_refill_lands_and_the_next_read_is_a_hit(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    basic = next(path for path in SNAPSHOT_FILES if path.stem == "boolean-numeric-metered")
    golden = load_golden(basic)
    _write_answers(client, prefix, golden)
    scope = f"{prefix}:c_cus-basic"
    answer_version = int(client.get(scope + "#timestamp") or 0)
    newest = max(int(client.get(key) or 0) for key in client.scan_iter(f"{scope}*#timestamp"))
    # an invalidation newer than everything cached (rule 4 keeps what is newer than it)
    _run(client, invalidate_call(CustomerKeys(scope), at=newest + 86_400_000, ttl=GOLDEN_TTL))
    assert _values(client, prefix) == {}

    first = golden["sdkReads"][0]
    with RecordingEdge(golden["edgeResponses"]) as edge:
        miss = replay(redis_server.port, prefix, edge.url, [first])
        assert miss[1] == [["cacheMiss"]]
        assert len(edge.entitlement_requests) == 1
        # the refill's entitlementUpdatedAt is a day older than the invalidation: it landed
        assert client.get(scope + "#timestamp") == str(answer_version)
        edge.clear()
        hit = replay(redis_server.port, prefix, edge.url, [first])
        assert hit[1] == [["cacheHit"]]
        assert edge.entitlement_requests == []
    assert hit[0] == [golden["sdkReads"][0]["result"]]
