"""The decision layer against what Stigg's Node SDK 3.95.0 answered (stigg-golden) and §7 cases.

Golden replay: for every ``sdkReads`` call answered from the cache (no
``apiRequests``), the entry is rebuilt from ``redisDecoded`` (map field merged
with its usage key) and ``decide`` must give the recorded result, compared as the
Node SDK's camelCase JSON. Time: only the metered period roll-over reads the
clock. The goldens were recorded after their last write (the greatest
``#timestamp`` in the file) and before the earliest ``usagePeriodEnd`` (no result
shows a rolled-over period), so ``now`` is that greatest ``#timestamp``; dates in
results are the stored ms rendered as ISO strings, so nothing else needs
normalizing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cache_pipeline.client.answers import MeteredEntitlement
from cache_pipeline.client.decide import (
    GetterKind,
    UnsupportedEntry,
    credit_fallback,
    decide,
    decide_all,
    decide_credit,
    fallback_result,
    is_metered,
    list_fallback,
    merge_usage,
)
from cache_pipeline.client.usage_period import calculate_usage_period
from cache_pipeline.contract.dates import edge_version, epoch_ms
from cache_pipeline.errors import InvalidArgument
from tests.support.golden import GOLDEN_DIR

GETTERS: dict[str, GetterKind] = {
    "getBooleanEntitlement": "BOOLEAN",
    "getNumericEntitlement": "NUMERIC",
    "getMeteredEntitlement": "METERED",
    "getEnumEntitlement": "ENUM",
    "getEntitlement": "ENTITLEMENT",
}
CALL = re.compile(r"^(\w+)\((.*)\)\s*(\[.*\])?$")


def golden_files() -> list[Path]:
    files = sorted(GOLDEN_DIR.glob("*.json"))
    assert files, f"no golden files under {GOLDEN_DIR}"
    return files


def parse_call(call: str) -> tuple[str, list[str], dict[str, Any]]:
    """``getX(cus, feat, requestedUsage=7)`` → name, positional args, keyword args."""
    match = CALL.match(call.strip())
    assert match, call
    name, inner = match.group(1), match.group(2)
    args: list[str] = []
    kwargs: dict[str, Any] = {}
    for part in re.findall(r"\s*(\w+=\[[^\]]*\]|[^,]+)", inner):
        part = part.strip(" ,")
        if "=" not in part:
            args.append(part)
            continue
        key, value = part.split("=", 1)
        if value.startswith("["):
            kwargs[key] = [v.strip() for v in value[1:-1].split(",") if v.strip()]
        else:
            kwargs[key] = json.loads(value) if key == "requestedUsage" else value
    return name, args, kwargs


class Golden:
    """One golden file: its cache contents, read like the SDK reads them."""

    def __init__(self, path: Path) -> None:
        data = json.loads(path.read_text())
        self.prefix: str = data["environmentPrefix"]
        self.redis: dict[str, Any] = data["redisDecoded"]
        self.reads: list[dict[str, Any]] = data["sdkReads"]
        self.now_ms = max((v for k, v in self.redis.items() if k.endswith("#timestamp")), default=0)

    def scope(self, customer: str, resource: str | None) -> str:
        key = f"{self.prefix}:c_{customer}"
        return key if resource is None else f"{key}:r_{resource}"

    def entry(self, scope: str, feature: str) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = self.redis[scope].get(feature)
        usage = self.redis.get(f"{scope}:f_{feature}")
        if entry is not None and usage is not None:
            entry = merge_usage(entry, usage)
        return entry

    def answer(self, call: str) -> Any:
        name, args, kwargs = parse_call(call)
        if name == "getEntitlements":
            scope = self.scope(args[0], args[1] if len(args) > 1 else None)
            return [
                decide(
                    "ENTITLEMENT", self.entry(scope, f), True, now_ms=self.now_ms
                ).to_stigg_json()
                for f in self.redis[scope]
            ]
        scope = self.scope(args[0], kwargs.get("resourceId"))
        result = decide(
            GETTERS[name],
            self.entry(scope, args[1]),
            bool(self.redis[scope]),
            requested_usage=kwargs.get("requestedUsage"),
            requested_values=kwargs.get("requestedValues"),
            now_ms=self.now_ms,
        )
        return result.to_stigg_json()


def cache_hits() -> list[Any]:
    cases = []
    for path in golden_files():
        for index, read in enumerate(json.loads(path.read_text())["sdkReads"]):
            name = read["call"].split("(")[0]
            if read.get("apiRequests") or (name not in GETTERS and name != "getEntitlements"):
                continue
            cases.append(pytest.param(path, index, id=f"{path.stem}-{index}-{name}"))
    return cases


@pytest.mark.parametrize(("path", "index"), cache_hits())
def test_golden_cache_hit_gives_the_sdk_answer(path: Path, index: int) -> None:
    golden = Golden(path)
    read = golden.reads[index]
    assert golden.answer(read["call"]) == read["result"], read["call"]


def test_every_golden_file_has_cache_hits() -> None:
    covered = {case.values[0] for case in cache_hits()}
    assert covered == set(golden_files())


# ---- hand cases: every row of docs/stigg-compat.md §7 and the probes of §8 ----

NOW = 1796026500000  # 2026-11-30T08:15:00Z
DAY = 86_400_000


def ms(iso: str) -> int:
    value = epoch_ms(iso)
    assert value is not None
    return value


def cached(
    feature_type: str | None = "BOOLEAN",
    meter_type: str | None = "None",
    usage: dict[str, Any] | None = None,
    **calculated: Any,
) -> dict[str, Any]:
    """A map entry as Stigg writes it (§3.1); ``feature_type=None`` leaves out ``feature``."""
    feature: dict[str, Any] = {
        "id": "f",
        "featureType": feature_type,
        "units": "",
        "unitsPlural": "",
    }
    if meter_type is not None:
        feature["meterType"] = meter_type
    body: dict[str, Any] = {
        "usageLimit": None,
        "hasUnlimitedUsage": False,
        "hasSoftLimit": False,
        "enumValues": [],
    }
    if feature_type is not None:
        body = {"feature": feature} | body
    usage_part = {"resetPeriod": None, "resetPeriodConfiguration": None, "currentUsage": 0}
    return {"calculatedEntitlement": body | calculated, "featureUsage": usage_part | (usage or {})}


def seats(current: int, limit: int | None = 10, **calculated: Any) -> dict[str, Any]:
    return cached(
        "NUMBER", "Fluctuating", {"currentUsage": current}, usageLimit=limit, **calculated
    )


FEATURE_BOOL: dict[str, Any] = {"id": "f", "featureType": "BOOLEAN", "meterType": "None"}
FEATURE_BOOL |= {"units": "", "unitsPlural": "", "isMetered": False}
MISMATCH = "FeatureTypeMismatch"
NO_ENTITLEMENT = "NoFeatureEntitlementInSubscription"
EXCEEDING = "RequestedUsageExceedingLimit"

HAND_CASES: list[Any] = [
    # §7.2 type check, with the getter's fallback and isFallback true
    pytest.param(
        "BOOLEAN",
        seats(3),
        {},
        {"type": "BOOLEAN", "isFallback": True, "hasAccess": False, "accessDeniedReason": MISMATCH},
        id="7.2-boolean-on-metered",
    ),
    pytest.param(
        "NUMERIC",
        seats(3),
        {},
        {
            "type": "NUMERIC",
            "isFallback": True,
            "hasAccess": False,
            "isUnlimited": False,
            "accessDeniedReason": MISMATCH,
        },
        id="7.2-P20-metered-read-as-numeric",
    ),
    pytest.param(
        "METERED",
        cached("NUMBER", None, usageLimit=5),
        {},
        {
            "type": "METERED",
            "isFallback": True,
            "hasAccess": False,
            "isUnlimited": False,
            "hasSoftLimit": False,
            "currentUsage": 0,
            "requestedUsage": 1,
            "accessDeniedReason": MISMATCH,
        },
        id="7.2-metered-on-number-without-meterType",
    ),
    pytest.param(
        "ENUM",
        cached(None),
        {},
        {
            "type": "ENUM",
            "isFallback": True,
            "hasAccess": False,
            "enumValues": [],
            "accessDeniedReason": MISMATCH,
        },
        id="7.2-P2c-entry-without-feature",
    ),
    pytest.param(
        "BOOLEAN",
        cached("boolean"),
        {},
        {"type": "BOOLEAN", "isFallback": True, "hasAccess": False, "accessDeniedReason": MISMATCH},
        id="7.2-P19-lower-case-type",
    ),
    pytest.param(
        "BOOLEAN",
        seats(3),
        {"fallback": {"has_access": True}},
        {"type": "BOOLEAN", "isFallback": True, "hasAccess": True, "accessDeniedReason": MISMATCH},
        id="7.2-caller-fallback-kept",
    ),
    # §7.3 customer not found (empty map)
    pytest.param(
        "METERED",
        None,
        {"customer_exists": False, "requested_usage": 4},
        {
            "type": "METERED",
            "hasAccess": False,
            "accessDeniedReason": "CustomerNotFound",
            "currentUsage": 0,
            "isFallback": False,
            "isUnlimited": False,
            "hasSoftLimit": False,
            "requestedUsage": 4,
        },
        id="7.3-metered-customer-not-found",
    ),
    pytest.param(
        "ENTITLEMENT",
        None,
        {"customer_exists": False},
        {
            "type": "BOOLEAN",
            "isFallback": True,
            "hasAccess": False,
            "accessDeniedReason": "Unknown",
        },
        id="7.3-untyped-customer-not-found-is-fallback",
    ),
    # §7.4 no entry for the feature
    pytest.param(
        "NUMERIC",
        None,
        {},
        {
            "type": "NUMERIC",
            "hasAccess": False,
            "accessDeniedReason": NO_ENTITLEMENT,
            "isFallback": False,
            "isUnlimited": False,
        },
        id="7.4-numeric-no-entry",
    ),
    pytest.param(
        "ENUM",
        None,
        {"requested_values": ["a"]},
        {
            "type": "ENUM",
            "hasAccess": False,
            "accessDeniedReason": NO_ENTITLEMENT,
            "isFallback": False,
            "enumValues": [],
            "requestedValues": ["a"],
        },
        id="7.4-enum-no-entry",
    ),
    pytest.param(
        "ENTITLEMENT",
        None,
        {"requested_usage": 2, "fallback": {"has_access": True}},
        {
            "type": "METERED",
            "isFallback": True,
            "hasAccess": True,
            "isUnlimited": False,
            "hasSoftLimit": False,
            "currentUsage": 0,
            "requestedUsage": 1,
            "accessDeniedReason": "Unknown",
        },
        id="7.4-untyped-no-entry-metered-fallback",
    ),
    pytest.param(
        "ENTITLEMENT",
        None,
        {"fallback": {"value": 7}},
        {
            "type": "NUMERIC",
            "isFallback": True,
            "hasAccess": False,
            "isUnlimited": False,
            "value": 7,
            "accessDeniedReason": "Unknown",
        },
        id="7.4-untyped-no-entry-numeric-fallback",
    ),
    # §7.5 / P11 the entry's accessDeniedReason denies
    pytest.param(
        "BOOLEAN",
        cached(accessDeniedReason="Revoked"),
        {},
        {
            "type": "BOOLEAN",
            "isFallback": False,
            "hasAccess": False,
            "accessDeniedReason": "Revoked",
            "feature": FEATURE_BOOL,
        },
        id="7.5-P11-access-denied-reason",
    ),
    # §7.6 rules by type
    pytest.param(
        "ENUM",
        cached("ENUM", None, enumValues=["a", "b"]),
        {"requested_values": ["b", "c"]},
        {
            "type": "ENUM",
            "isFallback": False,
            "hasAccess": False,
            "accessDeniedReason": "RequestedValuesMismatch",
            "enumValues": ["a", "b"],
            "requestedValues": ["b", "c"],
            "feature": {
                "id": "f",
                "featureType": "ENUM",
                "units": "",
                "unitsPlural": "",
                "isMetered": False,
            },
        },
        id="7.6-enum-mismatch",
    ),
    pytest.param(
        "ENTITLEMENT",
        cached("NUMBER", "None", usageLimit=5),
        {"requested_usage": 1000},
        {
            "type": "NUMERIC",
            "isFallback": False,
            "hasAccess": True,
            "isUnlimited": False,
            "value": 5,
            "feature": {
                "id": "f",
                "featureType": "NUMBER",
                "meterType": "None",
                "units": "",
                "unitsPlural": "",
                "isMetered": False,
            },
        },
        id="7.6-requested-usage-ignored-on-non-metered-number",
    ),
    pytest.param(
        "ENTITLEMENT",
        cached("NUMBER", None, {"currentUsage": 5}, usageLimit=3),
        {},
        {
            "type": "NUMERIC",
            "isFallback": False,
            "hasAccess": False,
            "accessDeniedReason": EXCEEDING,
            "isUnlimited": False,
            "value": 3,
            "feature": {
                "id": "f",
                "featureType": "NUMBER",
                "units": "",
                "unitsPlural": "",
                "isMetered": False,
            },
        },
        id="7.6-number-without-meterType-uses-the-usage-rule",
    ),
    pytest.param(
        "METERED",
        seats(3, limit=None),
        {"requested_usage": 1},
        {"hasAccess": False, "accessDeniedReason": EXCEEDING, "currentUsage": 3},
        id="7.6-P23-null-limit-counts-as-zero",
    ),
    pytest.param(
        "METERED",
        seats(0, limit=None),
        {},
        {"hasAccess": True, "currentUsage": 0, "requestedUsage": 0},
        id="7.6-null-limit-nothing-requested",
    ),
    pytest.param(
        "METERED",
        seats(650, limit=500, hasSoftLimit=True),
        {"requested_usage": 100},
        {"hasAccess": True, "hasSoftLimit": True, "usageLimit": 500},
        id="7.6-soft-limit",
    ),
    pytest.param(
        "METERED",
        seats(10**6, limit=None, hasUnlimitedUsage=True),
        {"requested_usage": 10**6},
        {"hasAccess": True, "isUnlimited": True},
        id="7.6-unlimited",
    ),
    pytest.param(
        "METERED",
        cached("NUMBER", "Incremental", {"currentUsage": None}, usageLimit=2),
        {"requested_usage": 2},
        {"hasAccess": True},
        id="7.6-null-current-usage-is-zero",
    ),
    # §7.8 / P12 an expired validUntil does not deny
    pytest.param(
        "BOOLEAN",
        cached(validUntil=NOW - DAY),
        {},
        {"type": "BOOLEAN", "isFallback": False, "hasAccess": True, "feature": FEATURE_BOOL},
        id="7.8-P12-expired-valid-until-still-allows",
    ),
]


@pytest.mark.parametrize(("kind", "entry", "kwargs", "expected"), HAND_CASES)
def test_hand_case(
    kind: GetterKind, entry: dict[str, Any] | None, kwargs: dict[str, Any], expected: dict[str, Any]
) -> None:
    exists = kwargs.pop("customer_exists", True)
    answer = decide(kind, entry, exists, now_ms=NOW, **kwargs).to_stigg_json()
    assert {k: answer.get(k) for k in expected} == expected
    if "type" in expected:
        assert answer == expected


def rolled_over(**usage: Any) -> dict[str, Any]:
    base = {
        "currentUsage": 99,
        "resetPeriod": "MONTH",
        "usagePeriodAnchor": ms("2026-01-15"),
        "usagePeriodStart": ms("2026-10-15"),
        "usagePeriodEnd": ms("2026-11-15"),
    }
    return cached("NUMBER", "Incremental", base | usage, usageLimit=100)


def test_p13_expired_period_rolls_over_usage_to_zero() -> None:
    answer = decide("METERED", rolled_over(), True, requested_usage=50, now_ms=NOW)
    assert isinstance(answer, MeteredEntitlement)
    assert (answer.has_access, answer.current_usage) == (True, 0)
    assert answer.to_stigg_json()["usagePeriodStart"] == "2026-11-15T00:00:00.000Z"
    assert answer.to_stigg_json()["nextResetDate"] == "2026-12-15T00:00:00.000Z"


def test_roll_over_without_anchor_drops_the_period() -> None:
    answer = decide("METERED", rolled_over(usagePeriodAnchor=None), True, now_ms=NOW)
    assert isinstance(answer, MeteredEntitlement)
    assert (answer.current_usage, answer.usage_period_start, answer.next_reset_date) == (
        0,
        None,
        None,
    )


def test_untyped_getter_does_not_roll_over() -> None:
    answer = decide("ENTITLEMENT", rolled_over(), True, requested_usage=50, now_ms=NOW)
    assert (answer.has_access, answer.access_denied_reason) == (False, EXCEEDING)


def test_unsupported_reset_period_gives_the_fallback() -> None:
    answer = decide("METERED", rolled_over(resetPeriod="QUARTER"), True, now_ms=NOW)
    assert answer == fallback_result("METERED")


def test_fallback_defaults_of_section_7_1() -> None:
    assert fallback_result("BOOLEAN").to_stigg_json() == {
        "type": "BOOLEAN",
        "isFallback": True,
        "hasAccess": False,
        "accessDeniedReason": "Unknown",
    }
    assert fallback_result("ENUM", {"enum_values": ["x"]}).to_stigg_json()["enumValues"] == ["x"]
    assert fallback_result("ENTITLEMENT", requested_values=["x"]).to_stigg_json()["type"] == "ENUM"
    with pytest.raises(InvalidArgument):
        fallback_result("BOOLEAN", {"value": 3})


def test_merge_usage_spreads_the_usage_key_and_renames_next_reset_date() -> None:
    entry = rolled_over()
    merged = merge_usage(entry, {"currentUsage": 7, "nextResetDate": 5})  # P9b
    assert merged["featureUsage"]["currentUsage"] == 7
    assert merged["featureUsage"]["usagePeriodEnd"] == 5
    assert "nextResetDate" not in merged["featureUsage"]
    kept = merge_usage(entry, {"nextResetDate": 5, "usagePeriodEnd": 9})  # P9
    assert (kept["featureUsage"]["usagePeriodEnd"], kept["featureUsage"]["nextResetDate"]) == (9, 5)
    assert kept["featureUsage"]["resetPeriod"] == "MONTH"
    assert entry["featureUsage"]["currentUsage"] == 99  # not mutated


def test_is_metered() -> None:
    assert is_metered(seats(1))
    assert not is_metered(cached("NUMBER", "None"))
    assert not is_metered(cached("NUMBER", None))
    assert not is_metered(cached(None))
    assert not is_metered(None)


@pytest.mark.parametrize(
    ("anchor", "now", "period", "start", "end"),
    [
        # dayjs: Jan 31 + 1 month is Feb 28, so Feb 28 noon is already in the second period
        ("2026-01-31", "2026-02-28T12:00:00Z", "MONTH", "2026-02-28", "2026-03-31"),
        ("2026-01-31", "2026-02-27T12:00:00Z", "MONTH", "2026-01-31", "2026-02-28"),
        ("2026-01-31", "2026-03-01", "MONTH", "2026-02-28", "2026-03-31"),
        ("2024-02-29", "2026-03-01", "YEAR", "2026-02-28", "2027-02-28"),
        (
            "2026-11-02T09:00:00Z",
            "2026-11-30T08:15:00Z",
            "WEEK",
            "2026-11-23T09:00:00Z",
            "2026-11-30T09:00:00Z",
        ),
        (
            "2026-11-29T10:30:00Z",
            "2026-11-30T08:15:00Z",
            "DAY",
            "2026-11-29T10:30:00Z",
            "2026-11-30T10:30:00Z",
        ),
        (
            "2026-11-30T07:30:00Z",
            "2026-11-30T08:15:00Z",
            "HOUR",
            "2026-11-30T07:30:00Z",
            "2026-11-30T08:30:00Z",
        ),
    ],
)
def test_usage_period_arithmetic(anchor: str, now: str, period: str, start: str, end: str) -> None:
    assert calculate_usage_period(ms(anchor), ms(now), period) == (ms(start), ms(end))


def test_credit_decisions() -> None:
    credit = {
        "currentUsage": 2500,
        "usageLimit": 100000,
        "usagePeriodStart": None,
        "usagePeriodEnd": 1764547200000,
    }
    granted = decide_credit("ai-tokens", credit, requested_amount=97500)
    assert (granted.has_access, granted.remaining_balance) == (True, 97500)
    assert granted.to_stigg_json()["usagePeriodEnd"] == "2025-12-01T00:00:00.000Z"
    short = decide_credit("ai-tokens", credit, requested_amount=97501)
    assert (short.has_access, short.access_denied_reason) == (False, "InsufficientCredits")
    missing = decide_credit("ai-tokens", None)
    assert (missing.has_access, missing.access_denied_reason) == (False, NO_ENTITLEMENT)
    no_limit = decide_credit("x", {"currentUsage": 0, "usageLimit": None}, requested_amount=1)
    assert (no_limit.has_access, no_limit.remaining_balance) == (False, 0)
    unknown = decide_credit("ai-tokens", credit, customer_exists=False)
    assert (unknown.has_access, unknown.access_denied_reason) == (False, "CustomerNotFound")
    assert unknown.remaining_balance is None


def test_credit_fallback() -> None:
    assert credit_fallback("ai", 5).to_stigg_json() == {
        "type": "CREDIT",
        "currencyId": "ai",
        "hasAccess": False,
        "accessDeniedReason": "Unknown",
        "requestedAmount": 5,
        "isFallback": True,
    }


def test_decide_all_maps_every_entry_untyped_without_requests_or_roll_over() -> None:
    expired = seats(9)  # its period ended: getEntitlements does not roll it over
    expired["featureUsage"]["usagePeriodEnd"] = NOW - DAY
    entries = {"a": cached(), "b": seats(11), "c": cached("boolean"), "d": expired}
    answers = decide_all(entries, True)
    assert [a.to_stigg_json()["type"] for a in answers] == ["BOOLEAN", "METERED", "METERED"]
    assert (answers[1].has_access, answers[1].access_denied_reason) == (False, EXCEEDING)
    assert answers[2].to_stigg_json()["currentUsage"] == 9
    assert decide_all({}, False) == ()
    with pytest.raises(UnsupportedEntry):
        decide_all({"a": {"featureUsage": {}}}, True)


def test_list_fallback_takes_the_first_type_that_holds_the_fields() -> None:
    boolean = list_fallback("f", {"has_access": True})
    assert boolean.to_stigg_json() == {
        "type": "BOOLEAN",
        "hasAccess": True,
        "isFallback": True,
        "accessDeniedReason": "Unknown",
        "feature": {"id": "f", "isMetered": False},
    }
    metered = list_fallback("g", {"has_access": True, "usage_limit": 5})
    assert metered.to_stigg_json()["type"] == "METERED"
    with pytest.raises(InvalidArgument, match="fit no entitlement type"):
        list_fallback("h", {"has_acess": True})


def test_epoch_ms_and_edge_version() -> None:
    assert epoch_ms("2026-11-20T10:00:00.000Z") == 1795168800000
    assert epoch_ms("2026-11-20T11:00:00+01:00") == 1795168800000
    assert epoch_ms(1795168800000) == 1795168800000
    invalid: list[object] = [None, True, "soon", "", [], float("nan")]
    assert [epoch_ms(v) for v in invalid] == [None] * 6
    assert edge_version([]) == 0
    dated = [
        {"entitlementUpdatedAt": "bad"},
        {},
        {"entitlementUpdatedAt": "2026-11-20T10:00:00Z"},
        {"entitlementUpdatedAt": "2026-12-01T00:00:00Z"},
    ]
    assert edge_version(dated, now=5) == 1795168800000  # the first valid, not the newest (P25)
    assert edge_version([{"entitlementUpdatedAt": "bad"}], now=5) == 5
    assert edge_version([{"entitlementUpdatedAt": None}, dated[2]], now=5) == 5  # null stops it


def test_untyped_getter_on_entry_without_feature_maps_a_boolean() -> None:
    answer = decide("ENTITLEMENT", cached(None), True, now_ms=NOW)
    assert answer.to_stigg_json() == {
        "type": "BOOLEAN",
        "isFallback": False,
        "hasAccess": False,
        "accessDeniedReason": NO_ENTITLEMENT,
    }


def test_untyped_getter_on_unknown_feature_type_gives_the_fallback() -> None:
    answer = decide("ENTITLEMENT", cached("boolean"), True, now_ms=NOW)
    assert answer == fallback_result("BOOLEAN")


def test_entry_the_sdk_would_throw_on_gives_the_fallback() -> None:
    broken = {"calculatedEntitlement": seats(1)["calculatedEntitlement"]}  # no featureUsage
    assert decide("METERED", broken, True, now_ms=NOW) == fallback_result("METERED")
    assert decide("BOOLEAN", {"featureUsage": {}}, True, now_ms=NOW) == fallback_result("BOOLEAN")
