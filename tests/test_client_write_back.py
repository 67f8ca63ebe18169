"""The reader's write-back: its script call (pure), what it writes compared with what Stigg's
own SDK writes from the same Edge answer, and the invalidation gate (CONTRACT.md rule 3.4)."""

from __future__ import annotations

import threading
from typing import Any

import redis

from cache_pipeline.client import EntitlementsCache, ReaderOptions
from cache_pipeline.client.upstream import EdgeAnswer
from cache_pipeline.client.write_back import write_back_call, write_back_problem
from cache_pipeline.contract.dates import edge_version, now_ms
from cache_pipeline.keys import KeyLayout
from tests.support.edge_answers import answer, boolean, metered, request_line
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer, wait_until
from tests.support.stigg_sdk import DEFAULT_API_KEY, run_stigg_sdk, run_stigg_sdk_with_events
from tests.support.v2_writes import invalidate, write_scope

CUSTOMER, RESOURCE = "acme:eu", "user@example.com"
GLOBAL = [boolean("sso"), metered("seats", 10, 3)]
SCOPED = [metered("seats", 5, 1)]
ANSWERS = {
    request_line(CUSTOMER): answer(*GLOBAL),
    request_line(CUSTOMER, RESOURCE): answer(*SCOPED),
}
SEATS = {
    "getter": "getMeteredEntitlement",
    "customerId": CUSTOMER,
    "featureId": "seats",
    "resourceId": RESOURCE,
    "options": {"requestedUsage": 4},
}


def _ours(port: int, prefix: str, url: str, **options: Any) -> EntitlementsCache:
    return EntitlementsCache(
        options=ReaderOptions(**({"upstream_retries": 0} | options)),
        redis_port=port,
        environment_prefix=prefix,
        edge_api_url=url,
        server_api_key=DEFAULT_API_KEY,
    )


def _values(client: redis.Redis, prefix: str) -> dict[str, str]:
    """The keys Stigg's SDK writes, renamed to the prefix ``P``: no metadata, no private keys."""
    found: dict[str, str] = {}
    for key in client.scan_iter(match=f"{prefix}:c_*"):
        if ":metadata" in key or ("#" in key and not key.endswith("#timestamp")):
            continue
        found["P" + key[len(prefix) :]] = str(client.get(key))
    return found


def test_the_script_call_is_the_v2_snapshot_at_stiggs_version_gated_by_the_request() -> None:
    entries = [metered("seats", 10, 3)]
    answer = EdgeAnswer(entries, requested_at_ms=42)
    keys = KeyLayout("P").customer("acme:eu")
    call = write_back_call(keys, answer, ttl=-1, environment_gate="P:__invalidated__")
    assert call.script == "v2_write_scope"
    assert call.keys == (
        "P:c_acme:eu",
        "P:c_acme:eu:metadata",
        "P:c_acme:eu#invalidated",
        "P:c_acme:eu#keys",
        "P:c_acme:eu#deleted",
        "P:__invalidated__",
        "P:c_acme:eu:f_seats",
    )
    assert call.args[:4] == (str(edge_version(entries)), "42", "-1", "0")
    assert call.args[-2:] == ('{"currentUsage":3}', "1796026500000")
    assert write_back_problem(EdgeAnswer(entries, 42)) is None
    unsafe = EdgeAnswer([metered("a#timestamp", 1, 0)], 42)
    assert "'#'" in str(write_back_problem(unsafe))


def test_our_write_back_is_what_stiggs_sdk_writes_and_it_reads_as_a_hit(
    redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    with RecordingEdge(ANSWERS) as edge, _ours(redis_server.port, prefix, edge.url) as cache:
        ours = cache.get_metered_entitlement(CUSTOMER, "seats", RESOURCE, requested_usage=4)
    assert sorted(r.line for r in edge.requests) == [
        "GET /v1/c/acme:eu/entitlements.json",
        "GET /v1/c/acme:eu/entitlements.json?resourceId=user@example.com",
    ]
    assert {r.headers["x-api-key"] for r in edge.requests} == {DEFAULT_API_KEY}

    stigg_prefix = f"{prefix}:stigg"  # Stigg's own write of the same answers, beside ours
    with RecordingEdge(ANSWERS) as edge:
        stiggs = run_stigg_sdk(redis_server.port, stigg_prefix, edge.url, [SEATS], dates="iso")
    assert _values(prefixed_redis, stigg_prefix) == _values(prefixed_redis, prefix)
    assert stiggs == [ours.to_stigg_json()]

    with RecordingEdge() as edge:
        reads, events = run_stigg_sdk_with_events(
            redis_server.port, prefix, edge.url, [SEATS], dates="iso"
        )
    assert edge.requests == []
    assert events == [["cacheHit"]]
    assert reads == [ours.to_stigg_json()]


def test_after_an_invalidation_a_write_back_requested_later_lands(
    redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    layout = KeyLayout(prefix)
    write_scope(prefixed_redis, layout, CUSTOMER, GLOBAL)
    scope = layout.customer(CUSTOMER).entitlements
    invalidated_at = now_ms()
    invalidate(prefixed_redis, layout, CUSTOMER, at=invalidated_at)
    assert prefixed_redis.get(scope) is None

    with RecordingEdge(ANSWERS) as edge, _ours(redis_server.port, prefix, edge.url) as cache:
        assert cache.get_boolean_entitlement(CUSTOMER, "sso").has_access  # a miss
        assert cache.get_boolean_entitlement(CUSTOMER, "sso").has_access  # a hit
    assert len(edge.requests) == 1
    version = edge_version(GLOBAL)
    assert version < invalidated_at  # Stigg's version of the answer is older than T...
    assert prefixed_redis.get(scope + "#timestamp") == str(version)  # ...yet it landed

    with RecordingEdge() as edge:
        calls = [{"getter": "getBooleanEntitlement", "customerId": CUSTOMER, "featureId": "sso"}]
        reads, events = run_stigg_sdk_with_events(redis_server.port, prefix, edge.url, calls)
    assert (events, edge.requests) == ([["cacheHit"]], [])
    assert reads[0]["hasAccess"] is True


def test_a_write_back_requested_before_an_invalidation_is_kept_out(
    redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    layout = KeyLayout(prefix)
    scope = layout.customer(CUSTOMER).entitlements
    with RecordingEdge(ANSWERS, latency=0.5) as edge:
        cache = _ours(redis_server.port, prefix, edge.url)
        answers: list[bool] = []
        reader = threading.Thread(
            target=lambda: answers.append(cache.get_boolean_entitlement(CUSTOMER, "sso").has_access)
        )
        reader.start()
        wait_until(lambda: edge.requests, timeout=10, what="the Edge request in flight")
        # while it is in flight: strictly after the request started
        invalidate(prefixed_redis, layout, CUSTOMER, at=now_ms() + 1)
        reader.join(10)
        assert answers == [True]  # answered from the Edge API
        assert prefixed_redis.get(scope) is None  # but its write-back was refused
        cache.get_boolean_entitlement(CUSTOMER, "sso")
        cache.close()
    assert len(edge.requests) == 2  # so the next read missed again
    assert prefixed_redis.get(scope) is not None  # and that one, requested after T, landed
