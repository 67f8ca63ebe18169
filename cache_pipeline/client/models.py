"""Typed answers of the reader SDK.

``CustomerEntitlements`` is what ``get_entitlements`` returns: every entitlement
of one customer scope with its usage merged in. ``FeatureAccess`` and
``CreditAccess`` answer ``get_entitlement`` and ``get_credit_entitlement``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["cache", "upstream"]
Kind = Literal["FEATURE", "CREDIT"]
Number = int | float

CUSTOMER_NOT_FOUND = "CustomerNotFound"
RESOURCE_NOT_FOUND = "CustomerResourceNotFound"
ENTITLEMENT_NOT_FOUND = "EntitlementNotFound"
USAGE_EXCEEDING_LIMIT = "RequestedUsageExceedingLimit"
INSUFFICIENT_CREDITS = "InsufficientCredits"
UNKNOWN_REASON = "Unknown"


@dataclass(frozen=True, slots=True)
class Entitlement:
    """One entitlement entry as stored, with its usage (or credit balance) merged in.

    ``current_usage`` and the period come from the usage key (``P:C:f_<id>``)
    or credit key (``P:C:credit_<id>``) when it holds a value; ``usage_limit``
    of a credit comes from its credit key when that has one (the balance is
    newer than the snapshot).
    """

    kind: Kind
    id: str
    has_access: bool
    usage_limit: Number | None
    has_unlimited_usage: bool
    current_usage: Number | None
    usage_period_start: int | None
    usage_period_end: int | None
    access_denied_reason: str | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def remaining(self) -> Number | None:
        """``usage_limit - current_usage``; None when unlimited or no limit is known."""
        if self.has_unlimited_usage or self.usage_limit is None:
            return None
        return self.usage_limit - (self.current_usage or 0)


@dataclass(frozen=True, slots=True)
class CustomerEntitlements:
    """Every entitlement of one (customer, resource) scope.

    ``source`` says where the data came from; ``timestamp`` is its version
    (epoch ms), None only for an unknown customer; ``stale`` is True when the
    cache entry is out of date (its global entry is missing or newer) and was
    served because the upstream API could not be reached.
    """

    customer_id: str
    resource_id: str | None
    entitlements: tuple[Entitlement, ...]
    access_denied_reason: str | None
    source: Source
    timestamp: int | None
    stale: bool = False

    def find(self, kind: Kind, entitlement_id: str) -> Entitlement | None:
        """The entitlement of that kind and id, or None."""
        for entitlement in self.entitlements:
            if entitlement.kind == kind and entitlement.id == entitlement_id:
                return entitlement
        return None


@dataclass(frozen=True, slots=True)
class FeatureAccess:
    """Answer of ``get_entitlement``: may the customer use the feature, and how much."""

    customer_id: str
    resource_id: str | None
    feature_id: str
    has_access: bool
    access_denied_reason: str | None
    usage_limit: Number | None
    has_unlimited_usage: bool
    current_usage: Number | None
    usage_period_start: int | None
    usage_period_end: int | None
    source: Source
    timestamp: int | None
    entitlement: Entitlement | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class CreditAccess:
    """Answer of ``get_credit_entitlement``: the credit grant and its remaining balance."""

    customer_id: str
    resource_id: str | None
    currency_id: str
    has_access: bool
    access_denied_reason: str | None
    usage_limit: Number | None
    current_usage: Number | None
    remaining_balance: Number | None
    usage_period_start: int | None
    usage_period_end: int | None
    source: Source
    timestamp: int | None
    entitlement: Entitlement | None = field(repr=False)
