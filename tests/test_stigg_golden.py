"""The interop harness reproduces the golden runs of the real Stigg SDK 3.95.0.

tests/stigg_golden/*.json hold what the SDK wrote to Redis and what its getters answered
(README there). Replaying them through tests/support/stigg_sdk.py proves that the harness starts
the SDK the way those runs did, so other interop tests can trust it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.support.golden import (
    GOLDEN_DIR,
    GOLDEN_FILES,
    GOLDEN_PREFIX,
    GOLDEN_TTL,
    load_golden,
    rekey,
    replay,
    stored,
)
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer


@pytest.fixture
def sdk_redis(prefixed_redis: redis.Redis) -> redis.Redis:
    return prefixed_redis


def test_golden_files_are_present() -> None:
    assert len(GOLDEN_FILES) >= 5, f"no stigg-golden files in {GOLDEN_DIR}"


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_replayed_cache_hits_answer_as_recorded(
    path: Path, redis_server: RedisServer, sdk_redis: redis.Redis, prefix: str
) -> None:
    golden = load_golden(path)
    for key, value in rekey(golden["redis"], prefix).items():
        sdk_redis.set(key, value, ex=GOLDEN_TTL)
    reads = [read for read in golden["sdkReads"] if not read.get("apiRequests")]
    assert reads, f"{path.name} has no cache-hit reads"

    with RecordingEdge() as edge:
        results, events = replay(redis_server.port, prefix, edge.url, reads)

    for read, result, call_events in zip(reads, results, events, strict=True):
        assert result == read["result"], read["call"]
        assert call_events == read["sdkEvents"], read["call"]
    assert edge.entitlement_requests == []
    assert stored(sdk_redis, prefix) == rekey(golden["redis"], prefix), "a read changed Redis"


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_miss_fetches_from_edge_and_writes_the_golden_contents(
    path: Path, redis_server: RedisServer, sdk_redis: redis.Redis, prefix: str
) -> None:
    golden = load_golden(path)
    first = golden["sdkReads"][0]
    assert first.get("apiRequests"), f"{path.name}: the first read is not the recorded miss"

    with RecordingEdge(golden["edgeResponses"]) as edge:
        results, events = replay(redis_server.port, prefix, edge.url, [first])

    assert results == [first["result"]]
    assert events == [first["sdkEvents"]]
    # Both scopes of a resource read are fetched in parallel: their order is not part of the result.
    assert sorted(request.line for request in edge.entitlement_requests) == sorted(
        first["apiRequests"]
    )
    expected = golden.get("redisBeforeReports", golden["redis"])
    assert stored(sdk_redis, prefix) == rekey(expected, prefix)
    for key in expected:
        ttl = sdk_redis.ttl(f"{prefix}:{key[len(GOLDEN_PREFIX) :]}")
        assert GOLDEN_TTL - 60 <= ttl <= GOLDEN_TTL
