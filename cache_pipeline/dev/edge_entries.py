"""Edge API entries as the edge stub accepts, keeps and serves them. Pure, no I/O.

A scope's snapshot (``PUT`` body, one item of the stub's file) holds entries in the
shape of Stigg's Edge API (``data.entitlements[]`` of ``GET /v1/c/{customerId}/
entitlements.json``, docs/stigg-compat.md §6), possibly partial, plus the scope's
``accessDeniedReason`` and ``credits`` as contract v2's ``entitlements.updated`` has
them. ``snapshot_problem`` says what is wrong with one (first problem only, with its
path); ``served_entry`` completes a kept entry into every field of the Edge's
``EntitlementFragment``, in its order, as the stub answers it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from cache_pipeline.contract.dates import epoch_ms
from cache_pipeline.contract.stigg_map import entry_problem, is_metered
from cache_pipeline.keys import unsafe_id_problem

AccessDeniedReason = Literal[
    "BudgetExceeded",
    "CustomerIsArchived",
    "CustomerNotFound",
    "CustomerResourceNotFound",
    "FeatureNotFound",
    "FeatureTypeMismatch",
    "InsufficientCredits",
    "NoActiveSubscription",
    "NoFeatureEntitlementInSubscription",
    "RequestedUsageExceedingLimit",
    "RequestedValuesMismatch",
    "Revoked",
    "Unknown",
]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00.000Z
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_DATES = ("usagePeriodAnchor", "usagePeriodStart", "usagePeriodEnd")


def _date(value: int | str | None) -> int | str | None:
    if value is not None:
        ms = epoch_ms(value)
        if ms is None or not _MIN_MS <= ms <= _MAX_MS:
            raise ValueError("must be an ISO-8601 date or epoch ms between years 1 and 9999")
    return value


def _safe_id(value: str) -> str:
    problem = unsafe_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


Date = Annotated[int | str | None, AfterValidator(_date)]
Amount = float | None
SafeId = Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_safe_id)]
Reason = AccessDeniedReason | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class UnitTransformation(_Strict):
    typename: Literal["UnitTransformation"] | None = Field(None, alias="__typename")
    divide: float
    round: Literal["UP", "DOWN"]


class Feature(_Strict):
    typename: Literal["EntitlementFeature"] | None = Field(None, alias="__typename")
    ref_id: SafeId = Field(alias="refId")
    feature_type: Literal["BOOLEAN", "NUMBER", "ENUM"] = Field(alias="featureType")
    meter_type: Literal["None", "Fluctuating", "Incremental"] | None = Field(
        None, alias="meterType"
    )
    feature_units: str | None = Field(None, alias="featureUnits")
    feature_units_plural: str | None = Field(None, alias="featureUnitsPlural")
    description: str | None = None
    display_name: str | None = Field(None, alias="displayName")
    unit_transformation: UnitTransformation | None = Field(None, alias="unitTransformation")


class CreditRate(_Strict):
    typename: Literal["CreditRate"] | None = Field(None, alias="__typename")
    amount: float
    currency_id: str = Field(alias="currencyId")


class ResetPeriodConfiguration(_Strict):
    typename: str = Field(alias="__typename")
    monthly: str | None = Field(None, alias="monthlyAccordingTo")
    weekly: str | None = Field(None, alias="weeklyAccordingTo")
    yearly: str | None = Field(None, alias="yearlyAccordingTo")


class EdgeEntry(_Strict):
    """One Edge API entitlement entry (every field of the fragment, all optional but feature)."""

    typename: Literal["Entitlement"] | None = Field(None, alias="__typename")
    is_granted: bool | None = Field(None, alias="isGranted")
    access_denied_reason: Reason = Field(None, alias="accessDeniedReason")
    customer_id: str | None = Field(None, alias="customerId")
    resource_id: str | None = Field(None, alias="resourceId")
    usage_limit: Amount = Field(None, alias="usageLimit")
    has_unlimited_usage: bool | None = Field(None, alias="hasUnlimitedUsage")
    has_soft_limit: bool | None = Field(None, alias="hasSoftLimit")
    current_usage: Amount = Field(None, alias="currentUsage")
    requested_usage: Amount = Field(None, alias="requestedUsage")
    requested_values: list[str] | None = Field(None, alias="requestedValues")
    enum_values: list[str] | None = Field(None, alias="enumValues")
    entitlement_updated_at: Date = Field(None, alias="entitlementUpdatedAt")
    usage_updated_at: Date = Field(None, alias="usageUpdatedAt")
    usage_period_anchor: Date = Field(None, alias="usagePeriodAnchor")
    usage_period_start: Date = Field(None, alias="usagePeriodStart")
    usage_period_end: Date = Field(None, alias="usagePeriodEnd")
    next_reset_date: Date = Field(None, alias="nextResetDate")
    reset_period: Literal["HOUR", "DAY", "WEEK", "MONTH", "YEAR"] | None = Field(
        None, alias="resetPeriod"
    )
    valid_until: Date = Field(None, alias="validUntil")
    reset_period_configuration: ResetPeriodConfiguration | None = Field(
        None, alias="resetPeriodConfiguration"
    )
    feature: Feature
    credit_rate: CreditRate | None = Field(None, alias="creditRate")


class Credit(_Strict):
    """A credit balance of the scope, as contract v2's messages carry it."""

    currency_id: SafeId = Field(alias="currencyId")
    current_usage: float = Field(alias="currentUsage")
    usage_limit: Amount = Field(None, alias="usageLimit")
    usage_period_start: Date = Field(None, alias="usagePeriodStart")
    usage_period_end: Date = Field(None, alias="usagePeriodEnd")


class ScopeSnapshot(_Strict):
    """A PUT body: the scope's entries, and what the contract's message adds to them."""

    timestamp: int | None = Field(None, ge=1, le=2**53 - 1)
    access_denied_reason: Reason = Field(None, alias="accessDeniedReason")
    entitlements: list[dict[str, Any]]
    credits: list[dict[str, Any]] | None = None


def parse_json(raw: bytes) -> Any:
    """JSON text → value; ``ValueError`` for invalid JSON, NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a JSON number")

    return json.loads(raw, parse_constant=refuse)


def snapshot_problem(body: Any, customer_id: str, resource_id: str | None) -> str | None:
    """Why ``body`` is not a snapshot of the scope (the first problem, with its path), or None."""
    if not isinstance(body, Mapping):
        return "the body must be a JSON object"
    try:
        snapshot = ScopeSnapshot.model_validate(body)
    except ValidationError as exc:
        return _first(exc)
    seen: set[str] = set()
    for index, entry in enumerate(snapshot.entitlements):
        problem = _entry_problem(entry, customer_id, resource_id, seen)
        if problem is not None:
            return f"entitlements[{index}]: {problem}"
    currencies: set[str] = set()
    for index, credit in enumerate(snapshot.credits or []):
        try:
            currency = Credit.model_validate(credit).currency_id
        except ValidationError as exc:
            return f"credits[{index}].{_first(exc)}"
        if currency in currencies:
            return f"credits[{index}]: currency {currency!r} appears twice"
        currencies.add(currency)
    return None


def _entry_problem(
    entry: Mapping[str, Any], customer_id: str, resource_id: str | None, seen: set[str]
) -> str | None:
    problem = entry_problem(entry)
    if problem is not None:
        return problem
    try:
        parsed = EdgeEntry.model_validate(entry)
    except ValidationError as exc:
        return _first(exc)
    if parsed.customer_id not in (None, customer_id):
        return f"customerId {parsed.customer_id!r} is not the scope's customer {customer_id!r}"
    if parsed.resource_id not in (None, resource_id):
        return f"resourceId {parsed.resource_id!r} is not the scope's resource {resource_id!r}"
    if parsed.feature.ref_id in seen:
        return f"feature {parsed.feature.ref_id!r} appears twice"
    seen.add(parsed.feature.ref_id)
    return None


def _first(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    path = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{path}: {message}" if path else message


def iso(value: object) -> str | None:
    """A date (ISO-8601 or epoch ms) as the Edge writes it: ``2026-11-20T10:00:00.000Z``."""
    ms = epoch_ms(value)
    if ms is None:
        return None
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def served_entry(
    entry: Mapping[str, Any], customer_id: str, resource_id: str | None, version: int
) -> dict[str, Any]:
    """A kept entry with every field of the Edge's fragment, in its order (absent → null).

    The scope fills ``customerId``/``resourceId``; an absent ``isGranted`` is "no
    ``accessDeniedReason``"; an absent ``entitlementUpdatedAt`` (and, on a metered entry,
    ``usageUpdatedAt``) is ``version``; an absent ``nextResetDate`` is ``usagePeriodEnd``.
    Dates are ISO-8601 strings, ``validUntil`` epoch ms (as the Edge answers them).
    """
    feature = entry["feature"]
    served: dict[str, Any] = {
        "__typename": "Entitlement",
        "isGranted": entry.get("isGranted", not entry.get("accessDeniedReason")),
        "accessDeniedReason": entry.get("accessDeniedReason"),
        "customerId": customer_id,
        "resourceId": resource_id,
        "usageLimit": entry.get("usageLimit"),
        "hasUnlimitedUsage": entry.get("hasUnlimitedUsage", False),
        "hasSoftLimit": entry.get("hasSoftLimit", False),
        "currentUsage": entry.get("currentUsage"),
        "requestedUsage": entry.get("requestedUsage"),
        "requestedValues": entry.get("requestedValues"),
        "enumValues": entry.get("enumValues"),
        "entitlementUpdatedAt": iso(entry.get("entitlementUpdatedAt", version)),
        "usageUpdatedAt": iso(
            entry.get("usageUpdatedAt", version if is_metered(feature) else None)
        ),
    }
    served |= {name: iso(entry.get(name)) for name in _DATES}
    served["nextResetDate"] = iso(entry.get("nextResetDate", entry.get("usagePeriodEnd")))
    served["resetPeriod"] = entry.get("resetPeriod")
    served["validUntil"] = epoch_ms(entry.get("validUntil"))
    served["resetPeriodConfiguration"] = entry.get("resetPeriodConfiguration")
    served["feature"] = _served_feature(feature)
    rate = entry.get("creditRate")
    served["creditRate"] = None if rate is None else {"__typename": "CreditRate", **rate}
    return served


def _served_feature(feature: Mapping[str, Any]) -> dict[str, Any]:
    transformation = feature.get("unitTransformation")
    return {
        "__typename": "EntitlementFeature",
        "featureType": feature["featureType"],
        "meterType": feature.get("meterType"),
        "featureUnits": feature.get("featureUnits"),
        "featureUnitsPlural": feature.get("featureUnitsPlural"),
        "description": feature.get("description"),
        "displayName": feature.get("displayName", feature["refId"]),
        "refId": feature["refId"],
        "unitTransformation": None
        if transformation is None
        else {"__typename": "UnitTransformation", **transformation},
    }


def served_credit(credit: Mapping[str, Any]) -> dict[str, Any]:
    """A kept credit in the contract's form: every field, periods as epoch ms."""
    return {
        "currencyId": credit["currencyId"],
        "usageLimit": credit.get("usageLimit"),
        "currentUsage": credit["currentUsage"],
        "usagePeriodStart": epoch_ms(credit.get("usagePeriodStart")),
        "usagePeriodEnd": epoch_ms(credit.get("usagePeriodEnd")),
    }
