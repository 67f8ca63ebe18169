"""Our reader SDK on what Stigg's own SDK 3.95.0 wrote and answered (tests/stigg_golden).

Loaded into Redis, the golden contents are hits for our SDK with the answers Stigg's SDK
recorded, for every getter kind, without one Edge request and without a write. On an
empty Redis, the recorded miss makes our SDK send the recorded Edge requests, answer what
Stigg's SDK answered, and write what Stigg's SDK wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from cache_pipeline.client import EntitlementsCache, ReaderOptions
from cache_pipeline.contract.stigg_map import metered_usages
from tests.support.golden import (
    GOLDEN_CLOCK_MS,
    GOLDEN_FILES,
    GOLDEN_TTL,
    load_golden,
    parse_call,
    rekey,
    stored,
)
from tests.support.our_sdk import SINGLE_GETTERS, call_ours
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer
from tests.support.stigg_sdk import DEFAULT_API_KEY, run_stigg_sdk

AT_GOLDEN_TIME = ReaderOptions(upstream_retries=0, clock=lambda: GOLDEN_CLOCK_MS)


@pytest.fixture
def edge() -> Iterator[RecordingEdge]:
    with RecordingEdge() as stub:
        yield stub


def _cache(port: int, prefix: str, edge: RecordingEdge) -> EntitlementsCache:
    return EntitlementsCache(
        options=AT_GOLDEN_TIME,
        redis_port=port,
        environment_prefix=prefix,
        edge_api_url=edge.url,
        server_api_key=DEFAULT_API_KEY,
    )


def _hits(golden: dict[str, Any]) -> list[dict[str, Any]]:
    return [read for read in golden["sdkReads"] if not read.get("apiRequests")]


def test_the_golden_hits_cover_every_getter_kind() -> None:
    getters = {
        parse_call(read["call"])["getter"]
        for path in GOLDEN_FILES
        for read in _hits(load_golden(path))
    }
    assert getters >= {*SINGLE_GETTERS, "getEntitlements"}


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_our_sdk_answers_stiggs_writes_from_cache_as_stigg_did(
    path: Path,
    redis_server: RedisServer,
    prefixed_redis: redis.Redis,
    prefix: str,
    edge: RecordingEdge,
) -> None:
    golden = load_golden(path)
    contents = rekey(golden["redis"], prefix)
    for key, value in contents.items():
        prefixed_redis.set(key, value, ex=GOLDEN_TTL)

    with _cache(redis_server.port, prefix, edge) as cache:
        for read in _hits(golden):
            assert call_ours(cache, parse_call(read["call"])) == read["result"], read["call"]

    assert edge.requests == []
    assert stored(prefixed_redis, prefix) == contents, "a read changed Redis"


def _ours_only(golden: dict[str, Any], prefix: str) -> set[str]:
    """Keys our write-back adds to Stigg's: the metadata, and a usage key for a metered
    entry without usageUpdatedAt (Stigg's SDK writes none: every later read misses)."""
    extra: set[str] = set()
    for request, response in golden["edgeResponses"].items():
        path, _, query = request.split(" ", 1)[1].partition("?")
        scope = f"{prefix}:c_{path.split('/')[3]}"
        scope += f":r_{query.removeprefix('resourceId=')}" if query else ""
        extra |= {f"{scope}:metadata", f"{scope}:metadata#timestamp"}
        for feature_id, (_, version) in metered_usages(response["data"]["entitlements"]).items():
            if version is None:
                extra |= {f"{scope}:f_{feature_id}", f"{scope}:f_{feature_id}#timestamp"}
    return extra


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda path: path.stem)
def test_our_miss_asks_what_stigg_asked_answers_and_writes_what_stigg_did(
    path: Path, redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    golden = load_golden(path)
    first = golden["sdkReads"][0]
    assert first.get("apiRequests"), f"{path.name}: the first read is not the recorded miss"

    with (
        RecordingEdge(golden["edgeResponses"]) as edge,
        _cache(redis_server.port, prefix, edge) as cache,
    ):
        answer = call_ours(cache, parse_call(first["call"]))

    assert answer == first["result"]
    assert sorted(request.line for request in edge.entitlement_requests) == sorted(
        first["apiRequests"]
    )
    assert {request.headers["x-api-key"] for request in edge.requests} == {DEFAULT_API_KEY}
    ours = {
        key: prefixed_redis.get(key)
        for key in prefixed_redis.scan_iter(match=f"{prefix}:*")
        if "#" not in key or key.endswith("#timestamp")  # not our private keys
    }
    extra = _ours_only(golden, prefix)
    expected = rekey(golden.get("redisBeforeReports", golden["redis"]), prefix)
    assert {k: v for k, v in ours.items() if k not in extra} == expected
    for key in expected:
        assert GOLDEN_TTL - 60 <= prefixed_redis.ttl(key) <= GOLDEN_TTL


SNAPSHOT_FILES = [path for path in GOLDEN_FILES if "redisBeforeReports" not in load_golden(path)]


@pytest.mark.parametrize("path", SNAPSHOT_FILES, ids=lambda path: path.stem)
def test_after_stiggs_sdk_filled_redis_our_sdk_answers_its_reads_from_cache(
    path: Path, redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    golden = load_golden(path)
    first = parse_call(golden["sdkReads"][0]["call"])
    with RecordingEdge(golden["edgeResponses"]) as edge:
        run_stigg_sdk(redis_server.port, prefix, edge.url, [first], clock_ms=GOLDEN_CLOCK_MS)
    assert sorted(r.line for r in edge.entitlement_requests) == sorted(golden["apiRequests"])

    with RecordingEdge() as edge, _cache(redis_server.port, prefix, edge) as cache:
        for read in _hits(golden):
            assert call_ours(cache, parse_call(read["call"])) == read["result"], read["call"]
    assert edge.requests == []
