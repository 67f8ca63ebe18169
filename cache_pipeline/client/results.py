"""Pure construction of the SDK's answers from cached values or an upstream answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from cache_pipeline.client.models import (
    CUSTOMER_NOT_FOUND,
    ENTITLEMENT_NOT_FOUND,
    INSUFFICIENT_CREDITS,
    RESOURCE_NOT_FOUND,
    UNKNOWN_REASON,
    USAGE_EXCEEDING_LIMIT,
    CreditAccess,
    CustomerEntitlements,
    Entitlement,
    FeatureAccess,
    Kind,
    Number,
    Source,
)
from cache_pipeline.messages import EntitlementsData

Entry = Mapping[str, Any]


def entitlement(entry: Entry, usage: Entry | None, customer_reason: str | None) -> Entitlement:
    """One stored entitlement entry with its usage (or credit balance) value merged in."""
    kind: Kind = "CREDIT" if entry.get("kind") == "CREDIT" else "FEATURE"
    has_access = bool(entry.get("hasAccess", entry.get("isGranted", False)))
    limit = _number(entry.get("usageLimit"))
    if kind == "CREDIT" and usage is not None and _number(usage.get("usageLimit")) is not None:
        limit = _number(usage.get("usageLimit"))
    reason = _text(entry.get("accessDeniedReason"))
    if not has_access and reason is None:
        reason = customer_reason or UNKNOWN_REASON
    source = usage if usage is not None else entry
    return Entitlement(
        kind=kind,
        id=str(entry.get("id", "")),
        has_access=has_access,
        usage_limit=limit,
        has_unlimited_usage=bool(entry.get("hasUnlimitedUsage", False)),
        current_usage=_number(source.get("currentUsage")),
        usage_period_start=_epoch(source.get("usagePeriodStart")),
        usage_period_end=_epoch(source.get("usagePeriodEnd")),
        access_denied_reason=None if has_access else reason,
        raw=entry,
    )


def from_entries(
    customer_id: str,
    resource_id: str | None,
    entries: Iterable[tuple[Entry, Entry | None]],
    *,
    access_denied_reason: str | None,
    source: Source,
    timestamp: int | None,
    stale: bool = False,
) -> CustomerEntitlements:
    """The answer of ``get_entitlements`` from (entry, usage) pairs."""
    return CustomerEntitlements(
        customer_id=customer_id,
        resource_id=resource_id,
        entitlements=tuple(entitlement(e, u, access_denied_reason) for e, u in entries),
        access_denied_reason=access_denied_reason,
        source=source,
        timestamp=timestamp,
        stale=stale,
    )


def from_upstream(data: EntitlementsData, timestamp: int) -> CustomerEntitlements:
    """The answer of ``get_entitlements`` from a validated upstream snapshot."""
    pairs: list[tuple[Entry, Entry | None]] = []
    for item in data.entitlements:
        stored = item.as_stored()
        usage: dict[str, Any] | None = None
        if item.usage is not None:
            usage = item.usage.model_dump(by_alias=True)
            if item.kind == "CREDIT":
                usage["usageLimit"] = stored.get("usageLimit")
        pairs.append((stored, usage))
    return from_entries(
        data.customer_id,
        data.resource_id,
        pairs,
        access_denied_reason=data.access_denied_reason,
        source="upstream",
        timestamp=timestamp,
    )


def customer_not_found(customer_id: str, resource_id: str | None) -> CustomerEntitlements:
    """The answer for a customer (or customer resource) the upstream API does not know."""
    return CustomerEntitlements(
        customer_id=customer_id,
        resource_id=resource_id,
        entitlements=(),
        access_denied_reason=CUSTOMER_NOT_FOUND if resource_id is None else RESOURCE_NOT_FOUND,
        source="upstream",
        timestamp=None,
    )


class _Answer(TypedDict):
    """The fields ``FeatureAccess`` and ``CreditAccess`` share."""

    customer_id: str
    resource_id: str | None
    has_access: bool
    access_denied_reason: str | None
    usage_limit: Number | None
    current_usage: Number | None
    usage_period_start: int | None
    usage_period_end: int | None
    source: Source
    timestamp: int | None
    entitlement: Entitlement | None


def feature_access(
    result: CustomerEntitlements, feature_id: str, requested_usage: Number = 0
) -> FeatureAccess:
    """May the customer use ``feature_id`` for ``requested_usage`` more units."""
    found = result.find("FEATURE", feature_id)
    return FeatureAccess(
        feature_id=feature_id,
        has_unlimited_usage=found.has_unlimited_usage if found else False,
        **_answer(result, found, requested_usage, USAGE_EXCEEDING_LIMIT),
    )


def credit_access(
    result: CustomerEntitlements, currency_id: str, requested_amount: Number = 0
) -> CreditAccess:
    """The credit grant of ``currency_id`` and whether ``requested_amount`` fits the balance."""
    found = result.find("CREDIT", currency_id)
    return CreditAccess(
        currency_id=currency_id,
        remaining_balance=found.remaining if found else None,
        **_answer(result, found, requested_amount, INSUFFICIENT_CREDITS),
    )


def _answer(
    result: CustomerEntitlements,
    found: Entitlement | None,
    requested: Number,
    exceeded_reason: str,
) -> _Answer:
    """Access to ``found`` for ``requested`` more, with its usage and the answer's origin."""
    has_access, reason = _access(result, found, requested, exceeded_reason)
    return _Answer(
        customer_id=result.customer_id,
        resource_id=result.resource_id,
        has_access=has_access,
        access_denied_reason=reason,
        usage_limit=found.usage_limit if found else None,
        current_usage=found.current_usage if found else None,
        usage_period_start=found.usage_period_start if found else None,
        usage_period_end=found.usage_period_end if found else None,
        source=result.source,
        timestamp=result.timestamp,
        entitlement=found,
    )


def _access(
    result: CustomerEntitlements,
    found: Entitlement | None,
    requested: Number,
    exceeded_reason: str,
) -> tuple[bool, str | None]:
    if found is None:
        return False, result.access_denied_reason or ENTITLEMENT_NOT_FOUND
    if not found.has_access:
        return False, found.access_denied_reason
    soft = bool(found.raw.get("hasSoftLimit", False))
    remaining = found.remaining
    if not soft and remaining is not None and requested > remaining:
        return False, exceeded_reason
    return True, None


def _number(value: Any) -> Number | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _epoch(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
