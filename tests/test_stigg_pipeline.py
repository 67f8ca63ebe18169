"""The whole pipeline, read by Stigg's own SDK: SQS (moto server) → our worker → Redis → SDK 3.95.0.

Each golden Edge answer is published as a contract v2 ``entitlements.updated`` message (the
Edge entries forwarded as they are, versioned as Stigg's SDK versions them); the real worker
applies them; Stigg's SDK, its API pointed at a recording Edge, then answers every recorded
cache-hit read exactly as it did from the data it wrote itself, without one Edge request. Ids
with ``:`` and ``@`` work. An invalidation through the queue then lets Stigg's refill land,
and one that arrives late (older than the snapshot it follows) leaves the snapshot readable.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from cache_pipeline.contract.dates import edge_version
from tests.support.golden import (
    GOLDEN_CLOCK_MS,
    edge_scope,
    load_golden,
    renamed,
    replay,
    snapshot_files,
)
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.stigg_sdk import run_stigg_sdk_with_events
from tests.support.worker import Workers, queue_depth, send

SNAPSHOT_FILES = snapshot_files()


def _messages(golden: dict[str, Any]) -> list[dict[str, Any]]:
    """One v2 snapshot message per Edge answer of a golden file."""
    bodies = []
    for request, response in golden["edgeResponses"].items():
        customer, resource = edge_scope(request)
        entries = response["data"]["entitlements"]
        bodies.append(
            {
                "id": str(uuid.uuid4()),
                "type": "entitlements.updated",
                "timestamp": edge_version(entries, now=GOLDEN_CLOCK_MS) or 1,
                "data": {"customerId": customer, "resourceId": resource, "entitlements": entries},
            }
        )
    return bodies


def _through_the_worker(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    client: redis.Redis,
    prefix: str,
    bodies: list[dict[str, Any]],
) -> None:
    workers.start()
    send(sqs_server, queue_url, bodies)
    scopes = [
        f"{prefix}:c_{b['data']['customerId']}"
        + (f":r_{b['data']['resourceId']}" if b["data"]["resourceId"] else "")
        for b in bodies
    ]
    wait_until(lambda: client.exists(*scopes) == len(scopes), what="every scope written")
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, what="queue drained")


def _hit_reads(golden: dict[str, Any]) -> list[dict[str, Any]]:
    return [read for read in golden["sdkReads"] if not read.get("apiRequests")]


@pytest.mark.parametrize(
    "path", [p for p in SNAPSHOT_FILES if p.stem != "customer-not-found"], ids=lambda p: p.stem
)
def test_stiggs_sdk_reads_what_the_worker_wrote_as_hits_with_its_own_answers(
    path: Path,
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    golden = load_golden(path)
    if path.stem == "resource-scoped":
        golden = renamed(golden, {"cus-res": "acme:eu", "site-1": "user@example.com"})
    _through_the_worker(workers, sqs_server, queue_url, redis_client, prefix, _messages(golden))
    reads = _hit_reads(golden)
    assert reads
    with RecordingEdge() as edge:
        results, events = replay(redis_server.port, prefix, edge.url, reads)
    assert edge.requests == []
    for read, result, call_events in zip(reads, results, events, strict=True):
        assert result == read["result"], read["call"]
        assert call_events == read["sdkEvents"], read["call"]
        assert set(call_events) == {"cacheHit"}, read["call"]


def test_after_an_invalidation_through_the_queue_stiggs_refill_lands(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    golden = load_golden(next(p for p in SNAPSHOT_FILES if p.stem == "boolean-numeric-metered"))
    bodies = _messages(golden)
    _through_the_worker(workers, sqs_server, queue_url, redis_client, prefix, bodies)
    scope = f"{prefix}:c_cus-basic"
    version = int(redis_client.get(scope + "#timestamp") or 0)
    invalidation = {
        "id": "inv-1",
        "type": "cache.invalidated",
        "timestamp": version + 86_400_000,  # a day after the data the refill will carry
        "data": {"customers": [{"customerId": "cus-basic", "resourceId": None}]},
    }
    send(sqs_server, queue_url, [invalidation])
    wait_until(lambda: redis_client.exists(scope) == 0, what="scope invalidated")
    assert redis_client.exists(scope + "#timestamp") == 0  # no tombstone to refuse the refill
    first = golden["sdkReads"][0]
    with RecordingEdge(golden["edgeResponses"]) as edge:
        miss = replay(redis_server.port, prefix, edge.url, [first])
        assert miss[1] == [["cacheMiss"]]
        assert len(edge.entitlement_requests) == 1
        assert redis_client.get(scope + "#timestamp") == str(version)  # Stigg's refill landed
        edge.clear()
        hit = replay(redis_server.port, prefix, edge.url, [first])
        assert hit == ([first["result"]], [["cacheHit"]])
        assert edge.requests == []
    # a queue message older than the invalidation is refused for the refilled scope
    send(sqs_server, queue_url, [{**bodies[0], "id": "late-1"}])
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, what="queue drained")
    assert redis_client.get(scope + "#timestamp") == str(version)


def test_the_worker_adopts_a_keyspace_stiggs_sdk_wrote(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """Stigg's SDK fills the scope from the Edge; the worker's usage update and snapshot land
    on its keys (UPDATE_IF_EXISTS sees its map) and Stigg's SDK reads them as hits."""
    golden = load_golden(next(p for p in SNAPSHOT_FILES if p.stem == "boolean-numeric-metered"))
    seats = {"getter": "getMeteredEntitlement", "customerId": "cus-basic",
             "featureId": "feature-seats"}  # fmt: skip
    with RecordingEdge(golden["edgeResponses"]) as edge:
        filled = replay(redis_server.port, prefix, edge.url, [golden["sdkReads"][0]])
        assert filled[1] == [["cacheMiss"]]
        scope = f"{prefix}:c_cus-basic"
        version = int(redis_client.get(scope + "#timestamp") or 0)
        used_at = int(redis_client.get(f"{scope}:f_feature-seats#timestamp") or 0)
        assert used_at > 0  # Stigg's SDK wrote the usage key (its usageUpdatedAt)
        workers.start(CACHE_UPDATE_POLICY="UPDATE_IF_EXISTS")
        usage = {
            "id": "use-1",
            "type": "usage.updated",
            "timestamp": used_at + 1000,
            "data": {"customerId": "cus-basic", "featureId": "feature-seats", "currentUsage": 9},
        }
        send(sqs_server, queue_url, [usage])
        wait_until(
            lambda: redis_client.get(f"{scope}:f_feature-seats#timestamp") == str(used_at + 1000),
            what="the usage update on Stigg's key",
        )
        edge.clear()
        results, events = run_stigg_sdk_with_events(
            redis_server.port, prefix, edge.url, [seats], clock_ms=GOLDEN_CLOCK_MS
        )
        assert events == [["cacheHit"]]
        assert results[0]["currentUsage"] == 9
        snapshot = _messages(golden)[0]
        snapshot["timestamp"] = version + 2000
        snapshot["data"]["entitlements"] = [
            e for e in snapshot["data"]["entitlements"] if e["feature"]["refId"] != "feature-sso"
        ]
        send(sqs_server, queue_url, [snapshot])
        wait_until(
            lambda: redis_client.get(scope + "#timestamp") == str(version + 2000),
            what="the snapshot on Stigg's map",
        )
        sso = {"getter": "getBooleanEntitlement", "customerId": "cus-basic",
               "featureId": "feature-sso"}  # fmt: skip
        results, events = run_stigg_sdk_with_events(
            redis_server.port, prefix, edge.url, [sso], clock_ms=GOLDEN_CLOCK_MS
        )
        assert events == [["cacheHit"]]
        assert results[0]["hasAccess"] is False  # the worker's snapshot dropped the feature
        assert edge.requests == []


def test_a_late_invalidation_leaves_a_newer_snapshot_readable_as_hits(
    workers: Workers,
    sqs_server: SqsServer,
    queue_url: str,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> None:
    """Contract v2.1 rule 4: reordered or redelivered, an invalidation removes nothing newer."""
    golden = load_golden(next(p for p in SNAPSHOT_FILES if p.stem == "boolean-numeric-metered"))
    bodies = _messages(golden)
    _through_the_worker(workers, sqs_server, queue_url, redis_client, prefix, bodies)
    scope = f"{prefix}:c_cus-basic"
    version = int(redis_client.get(scope + "#timestamp") or 0)
    late = {
        "id": "inv-late",
        "type": "cache.invalidated",
        "timestamp": version - 86_400_000,  # sent after the snapshot, from a day before it
        "data": {"customers": [{"customerId": "cus-basic", "resourceId": None}]},
    }
    send(sqs_server, queue_url, [late])
    wait_until(
        lambda: redis_client.exists(scope + "#invalidated") == 1, what="invalidation applied"
    )
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, what="queue drained")
    assert redis_client.get(scope + "#timestamp") == str(version)
    reads = _hit_reads(golden)
    with RecordingEdge() as edge:
        results, events = replay(redis_server.port, prefix, edge.url, reads)
    assert edge.requests == []
    for read, result, call_events in zip(reads, results, events, strict=True):
        assert result == read["result"], read["call"]
        assert set(call_events) == {"cacheHit"}, read["call"]
