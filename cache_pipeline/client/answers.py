"""Typed answers of the entitlement getters, shaped like Stigg's Node SDK 3.95.0 results.

Each result is a frozen dataclass whose fields are the SDK's result fields in
snake_case; ``None`` stands for a field the SDK leaves ``undefined`` (absent from
its JSON). ``to_stigg_json()`` gives the camelCase JSON the Node SDK's result
serializes to (dates as ISO-8601 strings with milliseconds and ``Z``), so an
answer can be compared with the Node SDK's field for field.
``CreditEntitlement`` is this SDK's own (3.95.0 has no credit getter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

Number = int | float

CUSTOMER_NOT_FOUND = "CustomerNotFound"
FEATURE_TYPE_MISMATCH = "FeatureTypeMismatch"
INSUFFICIENT_CREDITS = "InsufficientCredits"
NO_FEATURE_ENTITLEMENT = "NoFeatureEntitlementInSubscription"
REQUESTED_USAGE_EXCEEDING_LIMIT = "RequestedUsageExceedingLimit"
REQUESTED_VALUES_MISMATCH = "RequestedValuesMismatch"
UNKNOWN = "Unknown"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_date(ms: int) -> str:
    """JavaScript's ``new Date(ms).toJSON()`` for years 0..9999."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@dataclass(frozen=True, slots=True)
class Feature:
    """The result's ``feature``: the cached ``calculatedEntitlement.feature`` plus ``isMetered``."""

    fields: Mapping[str, Any]
    is_metered: bool

    @property
    def id(self) -> str | None:
        return _str(self.fields.get("id"))

    @property
    def feature_type(self) -> str | None:
        return _str(self.fields.get("featureType"))

    @property
    def meter_type(self) -> str | None:
        return _str(self.fields.get("meterType"))

    @property
    def units(self) -> str | None:
        return _str(self.fields.get("units"))

    @property
    def units_plural(self) -> str | None:
        return _str(self.fields.get("unitsPlural"))

    def to_stigg_json(self) -> dict[str, Any]:
        """``{...feature, isMetered}`` as the SDK builds it."""
        return {**self.fields, "isMetered": self.is_metered}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class _StiggJson:
    """``to_stigg_json`` for the result dataclasses below."""

    __slots__ = ()
    TYPE: ClassVar[str]
    DATE_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def to_stigg_json(self) -> dict[str, Any]:
        """The camelCase JSON of the Node SDK's result; ``None`` fields are left out."""
        out: dict[str, Any] = {"type": self.TYPE}
        for spec in fields(self):  # type: ignore[arg-type]
            value = getattr(self, spec.name)
            if value is None:
                continue
            if isinstance(value, Feature):
                value = value.to_stigg_json()
            elif isinstance(value, tuple):
                value = list(value)
            elif spec.name in self.DATE_FIELDS:
                value = iso_date(value)
            out[_camel(spec.name)] = value
        return out


@dataclass(frozen=True, slots=True)
class BooleanEntitlement(_StiggJson):
    """Answer of ``get_boolean_entitlement``."""

    TYPE: ClassVar[str] = "BOOLEAN"

    has_access: bool
    is_fallback: bool
    access_denied_reason: str | None = None
    feature: Feature | None = None


@dataclass(frozen=True, slots=True)
class NumericEntitlement(_StiggJson):
    """Answer of ``get_numeric_entitlement``; ``value`` is the limit (None when unset)."""

    TYPE: ClassVar[str] = "NUMERIC"

    has_access: bool
    is_fallback: bool
    access_denied_reason: str | None = None
    is_unlimited: bool | None = None
    value: Number | None = None
    feature: Feature | None = None


@dataclass(frozen=True, slots=True)
class MeteredEntitlement(_StiggJson):
    """Answer of ``get_metered_entitlement``; dates are epoch ms."""

    TYPE: ClassVar[str] = "METERED"
    DATE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"usage_period_anchor", "usage_period_start", "usage_period_end", "next_reset_date"}
    )

    has_access: bool
    is_fallback: bool
    access_denied_reason: str | None = None
    is_unlimited: bool | None = None
    has_soft_limit: bool | None = None
    usage_limit: Number | None = None
    current_usage: Number | None = None
    requested_usage: Number | None = None
    reset_period: str | None = None
    usage_period_anchor: int | None = None
    usage_period_start: int | None = None
    usage_period_end: int | None = None
    next_reset_date: int | None = None
    feature: Feature | None = None


@dataclass(frozen=True, slots=True)
class EnumEntitlement(_StiggJson):
    """Answer of ``get_enum_entitlement``."""

    TYPE: ClassVar[str] = "ENUM"

    has_access: bool
    is_fallback: bool
    access_denied_reason: str | None = None
    feature: Feature | None = None
    enum_values: tuple[str, ...] | None = None
    requested_values: tuple[str, ...] | None = None


# What the untyped ``get_entitlement`` returns: one of the four, by the feature's type.
AnyEntitlement = BooleanEntitlement | NumericEntitlement | MeteredEntitlement | EnumEntitlement


@dataclass(frozen=True, slots=True)
class CreditEntitlement(_StiggJson):
    """A credit balance: granted ``usage_limit``, consumed ``current_usage``, what remains.

    ``has_access`` is False when the currency has no credit key (reason
    ``NoFeatureEntitlementInSubscription``) or when ``requested_amount`` exceeds
    ``remaining_balance`` (reason ``InsufficientCredits``).
    """

    TYPE: ClassVar[str] = "CREDIT"
    DATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"usage_period_start", "usage_period_end"})

    currency_id: str
    has_access: bool
    access_denied_reason: str | None = None
    usage_limit: Number | None = None
    current_usage: Number | None = None
    remaining_balance: Number | None = None
    requested_amount: Number = 0
    usage_period_start: int | None = None
    usage_period_end: int | None = None
    is_fallback: bool = field(default=False)
