"""Reader SDK (contract v2) against a real redis-server and a recording Edge API over real HTTP."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from cache_pipeline.client import (
    BooleanEntitlement,
    EntitlementsCache,
    InvalidArgument,
    MeteredEntitlement,
    ReaderOptions,
)
from cache_pipeline.contract.dates import edge_version
from cache_pipeline.keys import KeyLayout
from tests.support.edge_answers import (
    answer,
    boolean,
    enum,
    metered,
    numeric,
    request_line,
)
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer
from tests.support.v2_writes import credit, write_scope, write_usage

API_KEY = "sdk-test-key"
FAST = ReaderOptions(upstream_retries=0, upstream_timeout_seconds=2, redis_retry_after_seconds=0)
ENTRIES = [
    boolean("sso"),
    numeric("projects", 20),
    metered("seats", 10, 3),
    metered(
        "api-calls",
        1000,
        120,
        "Incremental",
        resetPeriod="MONTH",
        usagePeriodAnchor="2026-01-15T00:00:00.000Z",
        usagePeriodStart="2099-11-15T00:00:00.000Z",
        usagePeriodEnd="2099-12-15T00:00:00.000Z",
    ),
    enum("region", ["us", "eu"]),
]
VERSION = edge_version(ENTRIES)
USAGE_VERSION = 1796026500000  # the entries' usageUpdatedAt


@pytest.fixture
def customer() -> str:
    return f"cus-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def edge() -> Iterator[RecordingEdge]:
    with RecordingEdge() as stub:
        yield stub


@pytest.fixture
def make_cache(
    redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str, edge: RecordingEdge
) -> Iterator[Callable[..., EntitlementsCache]]:
    """``make_cache(options=..., **settings)`` → a cache on the test's prefix and Edge stub."""
    made: list[EntitlementsCache] = []

    def build(options: ReaderOptions = FAST, **settings: Any) -> EntitlementsCache:
        values: dict[str, Any] = {
            "redis_port": redis_server.port,
            "environment_prefix": prefix,
            "edge_api_url": edge.url,
            "server_api_key": API_KEY,
            "redis_timeout_secs": 1,
        }
        cache = EntitlementsCache(options=options, **(values | settings))
        made.append(cache)
        return cache

    yield build
    for cache in made:
        cache.close()


def own_cache(port: int, url: str, prefix: str) -> EntitlementsCache:
    """A cache on a redis-server the test starts and stops itself."""
    return EntitlementsCache(
        options=ReaderOptions(upstream_retries=0, redis_retry_after_seconds=0),
        redis_port=port,
        redis_timeout_secs=1,
        environment_prefix=prefix,
        edge_api_url=url,
        server_api_key=API_KEY,
    )


def test_hits_answer_every_getter_kind_from_the_v2_layout(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
    edge: RecordingEdge,
) -> None:
    write_scope(prefixed_redis, layout, customer, ENTRIES, credits={"ai": credit(2500, 100000)})
    seats_key = layout.customer(customer).feature_usage("seats")
    later = USAGE_VERSION + 1  # newer than the snapshot's usageUpdatedAt
    write_usage(prefixed_redis, layout, customer, seats_key, {"currentUsage": 7}, version=later)
    cache = make_cache()

    sso = cache.get_boolean_entitlement(customer, "sso")
    assert (sso.has_access, sso.is_fallback, sso.feature and sso.feature.id) == (True, False, "sso")
    assert cache.get_numeric_entitlement(customer, "projects").value == 20
    seats = cache.get_metered_entitlement(customer, "seats", requested_usage=3)
    assert (seats.has_access, seats.current_usage, seats.usage_limit) == (True, 7, 10)  # usage key
    over = cache.get_metered_entitlement(customer, "seats", requested_usage=4)
    assert (over.has_access, over.access_denied_reason) == (False, "RequestedUsageExceedingLimit")
    calls = cache.get_metered_entitlement(customer, "api-calls")
    assert (calls.current_usage, calls.reset_period) == (120, "MONTH")
    region = cache.get_enum_entitlement(customer, "region", requested_values=["eu"])
    assert (region.has_access, region.enum_values) == (True, ("us", "eu"))
    mars = cache.get_enum_entitlement(customer, "region", requested_values=["eu", "mars"])
    assert (mars.has_access, mars.access_denied_reason) == (False, "RequestedValuesMismatch")
    assert isinstance(cache.get_entitlement(customer, "seats"), MeteredEntitlement)
    missing = cache.get_boolean_entitlement(customer, "nope")
    assert (missing.has_access, missing.access_denied_reason, missing.is_fallback) == (
        False,
        "NoFeatureEntitlementInSubscription",
        False,
    )
    mismatch = cache.get_numeric_entitlement(customer, "seats")
    assert (mismatch.access_denied_reason, mismatch.is_fallback) == ("FeatureTypeMismatch", True)

    ai = cache.get_credit_entitlement(customer, "ai", requested_amount=97500)
    assert (ai.has_access, ai.usage_limit, ai.current_usage, ai.remaining_balance) == (
        True,
        100000,
        2500,
        97500,
    )
    short = cache.get_credit_entitlement(customer, "ai", requested_amount=97501)
    assert (short.has_access, short.access_denied_reason) == (False, "InsufficientCredits")
    other = cache.get_credit_entitlement(customer, "other")
    assert other.access_denied_reason == "NoFeatureEntitlementInSubscription"

    everything = cache.get_entitlements(customer)
    assert (everything.source, everything.timestamp) == ("cache", VERSION)
    assert [e.feature and e.feature.id for e in everything.entitlements] == [
        "sso",
        "projects",
        "seats",
        "api-calls",
        "region",
    ]
    found = everything.find("seats")
    assert isinstance(found, MeteredEntitlement)
    assert found.current_usage == 7
    assert edge.requests == []


def test_metadata_reason_is_reported_but_does_not_decide(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
) -> None:
    write_scope(prefixed_redis, layout, customer, [boolean("sso")], access_denied_reason="Revoked")
    cache = make_cache()
    assert cache.get_entitlements(customer).access_denied_reason == "Revoked"
    assert cache.get_boolean_entitlement(customer, "sso").has_access  # as Stigg 3.95.0 decides


class CountingRedis(redis.Redis):
    """A client that records every command it sends (a pipeline would bypass it)."""

    sent: list[str]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]))
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


def test_a_hit_is_one_redis_round_trip(
    make_cache: Callable[..., EntitlementsCache],
    redis_server: RedisServer,
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
) -> None:
    write_scope(prefixed_redis, layout, customer, ENTRIES)
    write_scope(
        prefixed_redis, layout, customer, ENTRIES, resource="r1", credits={"c": credit(1, 5)}
    )
    counting = CountingRedis(port=redis_server.port, decode_responses=True)
    counting.sent = []
    cache = make_cache(redis=counting)
    cache.get_entitlements(customer)  # loads the script
    reads: list[Callable[[], object]] = [
        lambda: cache.get_entitlements(customer),
        lambda: cache.get_boolean_entitlement(customer, "sso"),
        lambda: cache.get_metered_entitlement(customer, "seats", "r1", requested_usage=1),
        lambda: cache.get_enum_entitlement(customer, "region", "r1", requested_values=["eu"]),
        lambda: cache.get_entitlement(customer, "projects"),
        lambda: cache.get_credit_entitlement(customer, "c", "r1"),
    ]
    for read in reads:
        counting.sent.clear()
        calls = prefixed_redis.info("commandstats")["cmdstat_evalsha"]["calls"]
        answer_ = read()
        assert not getattr(answer_, "is_fallback", False)
        assert counting.sent == ["EVALSHA"]
        assert prefixed_redis.info("commandstats")["cmdstat_evalsha"]["calls"] == calls + 1
    counting.close()


def test_miss_asks_the_edge_api_writes_back_and_then_hits(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
    edge: RecordingEdge,
) -> None:
    edge.responses[request_line(customer)] = answer(*ENTRIES)
    cache = make_cache()

    first = cache.get_metered_entitlement(customer, "seats", requested_usage=7)
    second = cache.get_metered_entitlement(customer, "seats", requested_usage=7)
    everything = cache.get_entitlements(customer)

    assert first == second
    assert (first.has_access, first.current_usage) == (True, 3)
    (request,) = edge.requests
    assert request.line == f"GET /v1/c/{customer}/entitlements.json"
    assert (request.headers["x-api-key"], request.headers["x-api-version"]) == (API_KEY, "1")
    assert (everything.source, everything.timestamp) == ("cache", VERSION)
    keys = layout.customer(customer)
    assert prefixed_redis.get(keys.entitlements + "#timestamp") == str(VERSION)
    assert prefixed_redis.get(keys.feature_usage("seats")) == '{"currentUsage":3}'
    assert 0 < prefixed_redis.ttl(keys.entitlements) <= 604800
    assert prefixed_redis.exists(keys.lock) == 0


def test_write_back_honours_no_expiry(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
    edge: RecordingEdge,
) -> None:
    edge.responses[request_line(customer)] = answer(*ENTRIES)
    make_cache(keys_ttl_in_secs=-1).get_entitlements(customer)
    keys = layout.customer(customer)
    for key in (keys.entitlements, keys.metadata, keys.feature_usage("seats")):
        assert prefixed_redis.ttl(key) == -1
        assert prefixed_redis.ttl(key + "#timestamp") == -1


def test_write_back_never_overwrites_newer_cache_data(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
    edge: RecordingEdge,
) -> None:
    keys = layout.customer(customer)
    newer = str(VERSION + 86_400_000)
    prefixed_redis.set(keys.entitlements + "#timestamp", newer)  # a tombstone (no map)
    edge.responses[request_line(customer)] = answer(*ENTRIES)
    cache = make_cache()

    sso = cache.get_boolean_entitlement(customer, "sso")
    again = cache.get_boolean_entitlement(customer, "sso")

    assert sso.has_access  # answered from the Edge API, as Stigg does
    assert again.has_access
    assert prefixed_redis.get(keys.entitlements) is None  # but not written
    assert prefixed_redis.get(keys.entitlements + "#timestamp") == newer
    assert len(edge.entitlement_requests) == 2  # so every read still misses


def test_unknown_customer_is_cached_as_customer_not_found(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
    edge: RecordingEdge,
) -> None:
    edge.responses[request_line(customer)] = answer()
    cache = make_cache()

    first = cache.get_boolean_entitlement(customer, "sso")
    everything = cache.get_entitlements(customer)
    ai = cache.get_credit_entitlement(customer, "ai")

    assert (first.has_access, first.access_denied_reason, first.is_fallback) == (
        False,
        "CustomerNotFound",
        False,
    )
    assert (everything.entitlements, everything.source, everything.timestamp) == ((), "cache", 0)
    assert (ai.has_access, ai.access_denied_reason) == (False, "CustomerNotFound")
    assert prefixed_redis.get(layout.customer(customer).entitlements) == "{}"
    assert len(edge.requests) == 1


@pytest.mark.parametrize("failure", [503, 404, 401])
def test_edge_failure_gives_the_fallbacks_and_writes_nothing(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    prefix: str,
    customer: str,
    edge: RecordingEdge,
    failure: int,
) -> None:
    edge.fail_with(failure)
    configured = {"seats": {"has_access": True, "usage_limit": 5}}
    cache = make_cache(  # asked on every call: no rest after a failure
        ReaderOptions(
            upstream_retries=0, entitlements_fallback=configured, edge_retry_after_seconds=0
        )
    )

    assert cache.get_boolean_entitlement(customer, "sso").to_stigg_json() == {
        "type": "BOOLEAN",
        "hasAccess": False,
        "isFallback": True,
        "accessDeniedReason": "Unknown",
    }
    own = cache.get_boolean_entitlement(customer, "sso", fallback={"has_access": True})
    assert (own.has_access, own.is_fallback) == (True, True)
    seats = cache.get_metered_entitlement(customer, "seats", requested_usage=2)
    assert (seats.has_access, seats.usage_limit, seats.is_fallback) == (True, 5, True)
    untyped = cache.get_entitlement(customer, "region", requested_values=["eu"])
    assert untyped.to_stigg_json()["type"] == "ENUM"
    everything = cache.get_entitlements(customer)
    assert (everything.source, everything.timestamp) == ("fallback", None)
    assert [e.feature and e.feature.id for e in everything.entitlements] == ["seats"]
    ai = cache.get_credit_entitlement(customer, "ai", requested_amount=1)
    assert (ai.has_access, ai.is_fallback, ai.access_denied_reason) == (False, True, "Unknown")

    assert len(edge.entitlement_requests) == 6
    assert list(prefixed_redis.scan_iter(match=f"{prefix}:*")) == []


def test_resource_scope_hits_when_its_global_map_is_not_newer(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
    edge: RecordingEdge,
) -> None:
    write_scope(prefixed_redis, layout, customer, [boolean("a")], version=100)
    write_scope(prefixed_redis, layout, customer, [boolean("b")], resource="r1", version=100)
    result = make_cache().get_entitlements(customer, "r1")
    assert (result.source, result.resource_id, result.timestamp) == ("cache", "r1", 100)
    assert [e.feature and e.feature.id for e in result.entitlements] == ["b"]
    assert edge.requests == []


def test_resource_scope_without_global_map_fetches_both_scopes(
    make_cache: Callable[..., EntitlementsCache],
    customer: str,
    edge: RecordingEdge,
) -> None:
    edge.responses[request_line(customer)] = answer(boolean("a"))
    edge.responses[request_line(customer, "r1")] = answer(boolean("b"))
    cache = make_cache()

    first = cache.get_boolean_entitlement(customer, "b", "r1")
    second = cache.get_boolean_entitlement(customer, "b", "r1")
    global_ = cache.get_boolean_entitlement(customer, "a")

    assert first == second
    assert first.has_access
    assert global_.has_access
    assert sorted(r.line for r in edge.requests) == [
        request_line(customer),
        request_line(customer, "r1"),
    ]


def test_resource_scope_with_newer_global_map_refetches_both_scopes(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
    edge: RecordingEdge,
) -> None:
    write_scope(prefixed_redis, layout, customer, [boolean("b")], resource="r1", version=100)
    write_scope(prefixed_redis, layout, customer, [boolean("a")], version=200)
    newer = "2026-11-21T10:00:00.000Z"
    edge.responses[request_line(customer)] = answer(boolean("a"))
    edge.responses[request_line(customer, "r1")] = answer(
        numeric("b", 3, entitlementUpdatedAt=newer)
    )
    cache = make_cache()

    first = cache.get_entitlements(customer, "r1")
    second = cache.get_entitlements(customer, "r1")

    assert (first.source, second.source) == ("upstream", "cache")
    assert first.entitlements == second.entitlements
    assert second.timestamp == edge_version([{"entitlementUpdatedAt": newer}])
    assert sorted(r.line for r in edge.requests) == [
        request_line(customer),
        request_line(customer, "r1"),
    ]


def test_resource_scope_missing_under_a_cached_global_map_fetches_the_resource_only(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
    edge: RecordingEdge,
) -> None:
    write_scope(prefixed_redis, layout, customer, [boolean("a")])
    edge.responses[request_line(customer, "r1")] = answer(boolean("b"))
    cache = make_cache()
    assert cache.get_boolean_entitlement(customer, "b", "r1").has_access
    assert cache.get_boolean_entitlement(customer, "b", "r1").has_access
    assert [r.line for r in edge.requests] == [request_line(customer, "r1")]


BAD_CALLS: list[Any] = [
    pytest.param("customer_id", lambda c: c.get_entitlements("a#b"), id="hash"),
    pytest.param("customer_id", lambda c: c.get_entitlements("a:r_b"), id="resource-marker"),
    pytest.param("customer_id", lambda c: c.get_entitlements("a{b}"), id="hash-tag"),
    pytest.param("customer_id", lambda c: c.get_entitlements("a/b"), id="slash"),
    pytest.param("customer_id", lambda c: c.get_entitlements("a?b"), id="question-mark"),
    pytest.param("customer_id", lambda c: c.get_entitlements(""), id="empty"),
    pytest.param("customer_id", lambda c: c.get_entitlements("a\nb"), id="control"),
    pytest.param("customer_id", lambda c: c.get_entitlements("x" * 257), id="long"),
    pytest.param("customer_id", lambda c: c.get_entitlements(42), id="not-a-string"),
    pytest.param("resource_id", lambda c: c.get_entitlements("cus", ""), id="empty-resource"),
    pytest.param("resource_id", lambda c: c.get_entitlements("cus", "r&s"), id="ampersand"),
    pytest.param("feature_id", lambda c: c.get_boolean_entitlement("cus", "f:f_x"), id="usage"),
    pytest.param("feature_id", lambda c: c.get_entitlement("cus", None), id="no-feature"),
    pytest.param("currency_id", lambda c: c.get_credit_entitlement("cus", "c#t"), id="currency"),
    pytest.param(
        "requested_usage",
        lambda c: c.get_metered_entitlement("cus", "f", requested_usage="1"),
        id="usage-string",
    ),
    pytest.param(
        "requested_usage",
        lambda c: c.get_metered_entitlement("cus", "f", requested_usage=True),
        id="usage-bool",
    ),
    pytest.param(
        "requested_usage",
        lambda c: c.get_entitlement("cus", "f", requested_usage=math.inf),
        id="usage-infinite",
    ),
    pytest.param(
        "requested_values",
        lambda c: c.get_enum_entitlement("cus", "f", requested_values="eu"),
        id="values-string",
    ),
    pytest.param(
        "requested_amount",
        lambda c: c.get_credit_entitlement("cus", "c", requested_amount=None),
        id="amount-none",
    ),
    pytest.param(
        "fallback fields",
        lambda c: c.get_boolean_entitlement("cus", "f", fallback={"value": 3}),
        id="fallback-of-another-type",
    ),
]


@pytest.mark.parametrize(("named", "call"), BAD_CALLS)
def test_bad_arguments_fail_before_any_io(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    prefix: str,
    edge: RecordingEdge,
    named: str,
    call: Callable[[EntitlementsCache], object],
) -> None:
    edge.fail_with(None)
    cache = make_cache()
    with pytest.raises(InvalidArgument, match=named) as caught:
        call(cache)
    assert isinstance(caught.value, ValueError)
    assert list(prefixed_redis.scan_iter(match=f"{prefix}:*")) == []
    assert edge.requests == []


def test_bad_options_and_settings_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="upstream_timeout_seconds"):
        ReaderOptions(upstream_timeout_seconds=0)
    with pytest.raises(InvalidArgument, match="local_ttl_seconds"):
        ReaderOptions(local_ttl_seconds=-1)
    with pytest.raises(InvalidArgument, match="fit no entitlement type"):
        ReaderOptions(entitlements_fallback={"f": {"has_acess": True}})
    with pytest.raises(Exception, match="EDGE_API_URL"):
        EntitlementsCache(edge_api_url="ftp://nowhere")
    with pytest.raises(Exception, match="unknown setting 'redis_hots'"):
        EntitlementsCache(redis_hots="x")


def test_script_flush_is_survived(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    customer: str,
    edge: RecordingEdge,
) -> None:
    edge.responses[request_line(customer)] = answer(*ENTRIES)
    cache = make_cache()
    assert cache.get_entitlements(customer).source == "upstream"
    prefixed_redis.script_flush()
    assert cache.get_entitlements(customer).source == "cache"
    prefixed_redis.script_flush()
    prefixed_redis.delete(KeyLayout(cache.layout.prefix).customer(customer).entitlements)
    assert cache.get_entitlements(customer).source == "upstream"  # the write script reloads too
    assert cache.get_entitlements(customer).source == "cache"


def test_local_cache_serves_without_redis_and_is_bounded(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    prefix: str,
    customer: str,
    edge: RecordingEdge,
) -> None:
    for suffix in ("a", "b", "c"):
        edge.responses[request_line(customer + suffix)] = answer(*ENTRIES)
    local = make_cache(ReaderOptions(upstream_retries=0, local_ttl_seconds=60, local_max_entries=2))
    plain = make_cache()
    for suffix in ("a", "b", "c"):
        local.get_entitlements(customer + suffix)  # a miss: written back, not kept
        local.get_entitlements(customer + suffix)  # a hit: kept
    assert len(local.local) == 2
    for key in prefixed_redis.scan_iter(match=f"{prefix}:*"):
        prefixed_redis.unlink(key)
    edge.clear()

    seats = local.get_metered_entitlement(customer + "c", "seats", requested_usage=7)
    assert (seats.has_access, seats.current_usage) == (True, 3)  # from the process
    assert edge.requests == []
    assert plain.get_entitlements(customer + "c").source == "upstream"  # off by default
    assert len(edge.requests) == 1


def test_redis_down_answers_from_the_edge_api(prefix: str, customer: str) -> None:
    own = RedisServer().start()
    with RecordingEdge({request_line(customer): answer(*ENTRIES)}) as edge:
        cache = own_cache(own.port, edge.url, prefix)
        try:
            assert cache.get_entitlements(customer).source == "upstream"
            assert cache.get_entitlements(customer).source == "cache"
            own.stop()
            down = cache.get_metered_entitlement(customer, "seats")
            assert (down.has_access, down.current_usage, down.is_fallback) == (True, 3, False)
            assert cache.get_credit_entitlement(customer, "ai").is_fallback  # only Redis knows
            assert len(edge.requests) == 2
            own.start()  # empty again (no persistence): the SDK refills it
            assert cache.get_entitlements(customer).source == "upstream"
            assert cache.get_entitlements(customer).source == "cache"
        finally:
            cache.close()
            own.stop()


def test_edge_down_answers_from_the_cache_and_both_down_give_the_fallback(
    prefix: str, customer: str
) -> None:
    own = RedisServer().start()
    with RecordingEdge({request_line(customer): answer(*ENTRIES)}) as edge:
        cache = own_cache(own.port, edge.url, prefix)
        try:
            assert cache.get_entitlements(customer).source == "upstream"
            edge.fail_with(503)
            assert not cache.get_boolean_entitlement(customer, "sso").is_fallback  # a hit
            assert cache.get_entitlements(customer + "-other").source == "fallback"  # a miss
            own.stop()
            both = cache.get_boolean_entitlement(customer, "sso")
            assert (both.has_access, both.is_fallback) == (False, True)
            assert len(edge.requests) == 2  # the Edge API rests after it failed: not asked
        finally:
            cache.close()
            own.stop()


def test_an_unreachable_edge_api_gives_the_fallback(
    make_cache: Callable[..., EntitlementsCache], customer: str
) -> None:
    with RecordingEdge() as gone:
        url = gone.url  # a port nothing listens on once it is stopped
    cache = make_cache(edge_api_url=url)
    metered_ = cache.get_metered_entitlement(customer, "seats", requested_usage=1)
    assert (metered_.has_access, metered_.is_fallback, metered_.requested_usage) == (
        False,
        True,
        1,
    )


def test_a_hanging_redis_is_bounded_by_its_timeout(prefix: str, customer: str) -> None:
    own = RedisServer().start()
    with RecordingEdge({request_line(customer): answer(*ENTRIES)}) as edge:
        cache = EntitlementsCache(
            options=ReaderOptions(upstream_retries=0, redis_retry_after_seconds=30),
            redis_port=own.port,
            redis_timeout_secs=0.3,
            environment_prefix=prefix,
            edge_api_url=edge.url,
            server_api_key=API_KEY,
        )
        try:
            assert cache.get_entitlements(customer).source == "upstream"
            own.pause()  # accepts nothing, answers nothing
            assert cache.get_entitlements(customer).source == "upstream"
            assert cache.get_entitlements(customer).source == "upstream"  # Redis skipped
            assert len(edge.requests) == 3
        finally:
            own.resume()
            cache.close()
            own.stop()


def test_results_serialize_as_the_node_sdk_does(
    make_cache: Callable[..., EntitlementsCache],
    prefixed_redis: redis.Redis,
    layout: KeyLayout,
    customer: str,
) -> None:
    write_scope(prefixed_redis, layout, customer, [boolean("sso")])
    sso = make_cache().get_entitlement(customer, "sso")
    assert isinstance(sso, BooleanEntitlement)
    assert sso.to_stigg_json() == {
        "type": "BOOLEAN",
        "hasAccess": True,
        "isFallback": False,
        "feature": {
            "id": "sso",
            "featureType": "BOOLEAN",
            "meterType": "None",
            "units": "",
            "unitsPlural": "",
            "isMetered": False,
        },
    }
