"""Decision parity: our reader SDK and Stigg's own Node SDK 3.95.0 (real, via tests/interop)
answer a table of calls identically from the same Redis, all as cache hits.

Whoever filled Redis: Stigg's SDK from the Edge API (its own misses), our SDK from the Edge
API (its miss path and write-back), or the v2 pipeline's write; credit keys are added the
pipeline's way (Stigg's SDK ignores them, ours answers credit checks from them). The table
covers boolean, numeric, metered with requested usage (hard, soft, unlimited, credit-rated,
no limit, an expired period rolled over), enum with requested values, the untyped getter and
``getEntitlements``, type mismatches and missing features, in a global and a resource scope,
with ids holding ``:`` and ``@``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from cache_pipeline.client import EntitlementsCache, ReaderOptions
from cache_pipeline.keys import KeyLayout
from tests.support.edge_answers import answer, boolean, enum, metered, numeric, request_line
from tests.support.golden import GOLDEN_CLOCK_MS
from tests.support.our_sdk import call_ours
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer
from tests.support.stigg_sdk import DEFAULT_API_KEY, run_stigg_sdk, run_stigg_sdk_with_events
from tests.support.v2_writes import credit, write_scope, write_usage

CUSTOMER, RESOURCE, OTHER = "acme:eu", "user@example.com", "user@example.com"
CLOCK = GOLDEN_CLOCK_MS  # 2026-12-01T00:00:00Z, for both SDKs
ROLLED = {
    "resetPeriod": "MONTH",
    "usagePeriodAnchor": "2026-01-15T00:00:00.000Z",
    "usagePeriodStart": "2026-09-15T00:00:00.000Z",
    "usagePeriodEnd": "2026-10-15T00:00:00.000Z",  # over at CLOCK: usage back to 0
}
GLOBAL = [
    boolean("sso"),
    boolean("revoked", accessDeniedReason="Revoked"),
    numeric("projects", 20),
    numeric("storage", None, hasUnlimitedUsage=True),
    metered("seats", 10, 3),
    metered("api-calls", 100, 99, "Incremental", **ROLLED),
    metered("emails", 500, 650, "Incremental", hasSoftLimit=True),
    metered(
        "ai-tokens",
        None,
        41000,
        "Incremental",
        hasUnlimitedUsage=True,
        creditRate={"__typename": "CreditRate", "amount": 2, "currencyId": "ai"},
    ),
    metered("no-limit", None, 0),
    enum("region", ["us", "eu"]),
]
SCOPED = [metered("seats", 5, 1), boolean("site-analytics")]
ANSWERS = {
    request_line(CUSTOMER): answer(*GLOBAL),
    request_line(CUSTOMER, RESOURCE): answer(*SCOPED),
    request_line(OTHER): answer(boolean("sso")),
}
FILL = [
    {"getter": "getEntitlements", "customerId": CUSTOMER},
    {"getter": "getEntitlements", "customerId": CUSTOMER, "resourceId": RESOURCE},
    {"getter": "getEntitlements", "customerId": OTHER},
]


def call(getter: str, feature: str, resource: str | None = None, **options: Any) -> dict[str, Any]:
    made: dict[str, Any] = {"getter": getter, "customerId": CUSTOMER, "featureId": feature}
    if resource is not None:
        made["resourceId"] = resource
    if options:
        made["options"] = options
    return made


TABLE: list[dict[str, Any]] = [
    call("getBooleanEntitlement", "sso"),
    call("getBooleanEntitlement", "revoked"),
    call("getBooleanEntitlement", "not-in-plan"),
    call("getBooleanEntitlement", "seats"),
    call("getNumericEntitlement", "projects"),
    call("getNumericEntitlement", "storage"),
    call("getNumericEntitlement", "seats"),
    call("getMeteredEntitlement", "seats", requestedUsage=7),
    call("getMeteredEntitlement", "seats", requestedUsage=8),
    call("getMeteredEntitlement", "api-calls", requestedUsage=100),
    call("getMeteredEntitlement", "api-calls", requestedUsage=101),
    call("getMeteredEntitlement", "emails", requestedUsage=100),
    call("getMeteredEntitlement", "ai-tokens", requestedUsage=1000000),
    call("getMeteredEntitlement", "no-limit", requestedUsage=1),
    call("getMeteredEntitlement", "projects", requestedUsage=1),
    call("getMeteredEntitlement", "not-in-plan", requestedUsage=1),
    call("getEnumEntitlement", "region", requestedValues=["eu"]),
    call("getEnumEntitlement", "region", requestedValues=["eu", "mars"]),
    call("getEnumEntitlement", "region"),
    call("getEnumEntitlement", "sso", requestedValues=["eu"]),
    call("getEntitlement", "seats", requestedUsage=7),
    call("getEntitlement", "region", requestedValues=["us"]),
    call("getEntitlement", "projects"),
    call("getEntitlement", "not-in-plan"),
    call("getMeteredEntitlement", "seats", RESOURCE, requestedUsage=4),
    call("getMeteredEntitlement", "seats", RESOURCE, requestedUsage=5),
    call("getBooleanEntitlement", "site-analytics", RESOURCE),
    call("getBooleanEntitlement", "site-analytics"),
    {"getter": "getBooleanEntitlement", "customerId": OTHER, "featureId": "sso"},
    {"getter": "getEntitlements", "customerId": CUSTOMER},
    {"getter": "getEntitlements", "customerId": CUSTOMER, "resourceId": RESOURCE},
]
# A few answers fixed by hand (docs/stigg-compat.md §7): both SDKs cannot agree on a wrong one.
EXPECTED_ACCESS = {
    7: (True, None),
    8: (False, "RequestedUsageExceedingLimit"),
    9: (True, None),  # the period rolled over: 0 + 100 <= 100
    10: (False, "RequestedUsageExceedingLimit"),
    11: (True, None),  # soft limit
    13: (False, "RequestedUsageExceedingLimit"),  # limit null counts as 0
    17: (False, "RequestedValuesMismatch"),
    24: (True, None),  # 1 + 4 <= 5 in the resource scope
    25: (False, "RequestedUsageExceedingLimit"),
    27: (False, "NoFeatureEntitlementInSubscription"),
}


def fill_by_stigg(port: int, prefix: str, client: redis.Redis) -> None:
    with RecordingEdge(ANSWERS) as edge:
        run_stigg_sdk(port, prefix, edge.url, FILL, clock_ms=CLOCK)
    assert sorted(r.line for r in edge.entitlement_requests) == sorted(ANSWERS)


def fill_by_ours(port: int, prefix: str, client: redis.Redis) -> None:
    with RecordingEdge(ANSWERS) as edge, _ours(port, prefix, edge.url) as cache:
        for fill in FILL:
            assert call_ours(cache, fill)
    assert sorted(r.line for r in edge.entitlement_requests) == sorted(ANSWERS)
    assert {r.headers["x-api-key"] for r in edge.requests} == {DEFAULT_API_KEY}


def fill_by_pipeline(port: int, prefix: str, client: redis.Redis) -> None:
    layout = KeyLayout(prefix)
    write_scope(client, layout, CUSTOMER, GLOBAL)
    write_scope(client, layout, CUSTOMER, SCOPED, resource=RESOURCE)
    write_scope(client, layout, OTHER, [boolean("sso")])


WRITERS: dict[str, Callable[[int, str, redis.Redis], None]] = {
    "stigg": fill_by_stigg,
    "ours": fill_by_ours,
    "pipeline": fill_by_pipeline,
}


def _ours(port: int, prefix: str, url: str) -> EntitlementsCache:
    return EntitlementsCache(
        options=ReaderOptions(upstream_retries=0, clock=lambda: CLOCK),
        redis_port=port,
        environment_prefix=prefix,
        edge_api_url=url,
        server_api_key=DEFAULT_API_KEY,
    )


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_both_sdks_answer_the_table_alike_from_cache(
    writer: str, redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    WRITERS[writer](redis_server.port, prefix, prefixed_redis)
    layout = KeyLayout(prefix)
    ai = layout.customer(CUSTOMER).credit("ai")
    assert write_usage(prefixed_redis, layout, CUSTOMER, ai, credit(2500, 10000), version=1) == 1

    with RecordingEdge() as edge:  # no canned answers: a miss would show and fail
        stigg, events = run_stigg_sdk_with_events(
            redis_server.port, prefix, edge.url, TABLE, dates="iso", clock_ms=CLOCK
        )
        with _ours(redis_server.port, prefix, edge.url) as cache:
            ours = [call_ours(cache, made) for made in TABLE]
            balance = cache.get_credit_entitlement(CUSTOMER, "ai", requested_amount=7500)
            short = cache.get_credit_entitlement(CUSTOMER, "ai", requested_amount=7501)
            scoped = cache.get_credit_entitlement(CUSTOMER, "ai", RESOURCE)

    assert edge.requests == []
    assert [set(found) for found in events] == [{"cacheHit"}] * len(TABLE)
    for made, mine, theirs in zip(TABLE, ours, stigg, strict=True):
        assert mine == theirs, made
    for index, expected in EXPECTED_ACCESS.items():
        assert (ours[index]["hasAccess"], ours[index].get("accessDeniedReason")) == expected
    assert (balance.has_access, balance.remaining_balance) == (True, 7500)
    assert (short.has_access, short.access_denied_reason) == (False, "InsufficientCredits")
    assert scoped.access_denied_reason == "NoFeatureEntitlementInSubscription"
