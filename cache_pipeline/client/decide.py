"""The entitlement decision of Stigg's Node SDK 3.95.0, as pure functions.

``decide`` answers one getter call from one cached entry (a value of the
entitlements map, its usage merged in with ``merge_usage``) exactly as the SDK's
``EntitlementsService`` getters, ``EntitlementDecisionService`` and ``ModelMapper``
do (docs/stigg-compat.md §7), quirks included; ``fallback_result`` is the answer when
the cache missed and the Edge API failed (§7.1). ``decide_credit`` is this SDK's
own credit check. No I/O; the time is passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from cache_pipeline.client.answers import (
    CUSTOMER_NOT_FOUND,
    FEATURE_TYPE_MISMATCH,
    INSUFFICIENT_CREDITS,
    NO_FEATURE_ENTITLEMENT,
    REQUESTED_USAGE_EXCEEDING_LIMIT,
    REQUESTED_VALUES_MISMATCH,
    UNKNOWN,
    AnyEntitlement,
    BooleanEntitlement,
    CreditEntitlement,
    EnumEntitlement,
    Feature,
    MeteredEntitlement,
    Number,
    NumericEntitlement,
)
from cache_pipeline.client.usage_period import UnsupportedResetPeriod, calculate_usage_period
from cache_pipeline.contract.dates import epoch_ms
from cache_pipeline.contract.stigg_map import is_metered as metered_feature
from cache_pipeline.errors import InvalidArgument

GetterKind = Literal["BOOLEAN", "NUMERIC", "METERED", "ENUM", "ENTITLEMENT"]
Entry = Mapping[str, Any]
Decision = tuple[bool, str | None]


class _Broken(Exception):
    """The entry lacks a part the SDK dereferences: the SDK throws and answers its fallback."""


def merge_usage(entry: Entry, usage: Mapping[str, Any]) -> dict[str, Any]:
    """The entry with its usage value spread over ``featureUsage`` (``#mergeEntitlementWithUsage``).

    A legacy ``nextResetDate`` becomes ``usagePeriodEnd`` when that is absent (or null).
    """
    merged_usage = dict(usage)
    if merged_usage.get("nextResetDate") is not None and merged_usage.get("usagePeriodEnd") is None:
        merged_usage["usagePeriodEnd"] = merged_usage.pop("nextResetDate")
    feature_usage = entry.get("featureUsage")
    base = dict(feature_usage) if isinstance(feature_usage, Mapping) else {}
    return {**entry, "featureUsage": {**base, **merged_usage}}


def _feature(entry: Entry | None) -> Mapping[str, Any] | None:
    calculated = entry.get("calculatedEntitlement") if entry is not None else None
    feature = calculated.get("feature") if isinstance(calculated, Mapping) else None
    return feature if isinstance(feature, Mapping) else None


def is_metered(entry: Entry | None) -> bool:
    """NUMBER with meterType Incremental or Fluctuating (SDK ``isMetered``)."""
    return metered_feature(_feature(entry))


def _type_matches(kind: GetterKind, entry: Entry) -> bool:
    feature = _feature(entry) or {}
    feature_type = feature.get("featureType")
    if kind == "BOOLEAN":
        return feature_type == "BOOLEAN"
    if kind == "NUMERIC":
        return feature_type == "NUMBER" and feature.get("meterType") in (None, "None")
    if kind == "METERED":
        return is_metered(entry)
    return feature_type == "ENUM"


def _truthy(value: Any) -> bool:
    """JavaScript truthiness of a JSON value."""
    if isinstance(value, float) and value != value:
        return False
    return value not in (None, False, 0, "")


def _calculated(entry: Entry) -> Mapping[str, Any]:
    calculated = entry.get("calculatedEntitlement")
    if not isinstance(calculated, Mapping):
        raise _Broken("calculatedEntitlement")
    return calculated


def _feature_usage(entry: Entry) -> Mapping[str, Any]:
    usage = entry.get("featureUsage")
    if not isinstance(usage, Mapping):
        raise _Broken("featureUsage")
    return usage


# ---- EntitlementDecisionService.decideEntitlementPolicy ------------------------------------


def policy(
    customer_exists: bool,
    entry: Entry | None,
    requested_usage: Number = 0,
    requested_values: Sequence[str] | None = None,
) -> Decision | None:
    """``(has_access, access_denied_reason)``; None for a feature type it does not know."""
    if not customer_exists:
        return False, CUSTOMER_NOT_FOUND
    if entry is None or not _truthy(_calculated(entry).get("feature")):
        return False, NO_FEATURE_ENTITLEMENT
    calculated = _calculated(entry)
    if _truthy(calculated.get("accessDeniedReason")):
        return False, str(calculated["accessDeniedReason"])
    feature = _feature(entry) or {}
    feature_type = feature.get("featureType")
    if feature_type == "BOOLEAN":
        return True, None
    if feature_type == "ENUM":
        return _enum_policy(calculated, requested_values)
    if feature_type == "NUMBER":
        return _number_policy(entry, feature.get("meterType"), requested_usage)
    return None


def _enum_policy(calculated: Mapping[str, Any], requested: Sequence[str] | None) -> Decision:
    allowed = calculated.get("enumValues") or []
    missing = [value for value in (requested or []) if value not in allowed]
    return (False, REQUESTED_VALUES_MISMATCH) if missing else (True, None)


def _number_policy(entry: Entry, meter_type: Any, requested: Number) -> Decision:
    if meter_type == "None":
        return True, None  # a requested usage is ignored here (SDK quirk)
    calculated = _calculated(entry)
    if _truthy(calculated.get("hasUnlimitedUsage")) or _truthy(calculated.get("hasSoftLimit")):
        return True, None
    limit = _number_or_none(calculated.get("usageLimit")) or 0  # `usageLimit || 0`
    raw = _feature_usage(entry).get("currentUsage", _MISSING)
    current = 0 if raw is None else _number_or_none(raw)  # JavaScript: null + n == n
    if current is not None and current + requested <= limit:
        return True, None
    return False, REQUESTED_USAGE_EXCEEDING_LIMIT  # undefined + n is NaN: never <= limit


_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---- EntitlementsService.handleUsagePeriodOver ---------------------------------------------


def roll_usage_period(entry: Entry, now_ms: int) -> Entry:
    """A metered entry whose period ended before ``now_ms``: usage 0, period recomputed.

    Without ``usagePeriodAnchor`` or ``resetPeriod`` the new period is unknown (both
    dates dropped). Other entries are returned unchanged. Raises
    ``UnsupportedResetPeriod`` for a reset period the SDK cannot compute either.
    """
    usage = entry.get("featureUsage")
    if not is_metered(entry) or not isinstance(usage, Mapping):
        return entry
    end = _number_or_none(usage.get("usagePeriodEnd"))  # a date string compares as NaN
    if not (end and end < now_ms):
        return entry
    start_ms: int | None = None
    end_ms: int | None = None
    anchor, period = usage.get("usagePeriodAnchor"), usage.get("resetPeriod")
    if _truthy(anchor) and _truthy(period):
        anchor_ms = epoch_ms(anchor)
        if anchor_ms is not None:  # an invalid anchor gives Invalid Dates: no period
            start_ms, end_ms = calculate_usage_period(anchor_ms, now_ms, str(period))
        elif str(period) not in ("HOUR", "DAY", "WEEK", "MONTH", "YEAR"):
            raise UnsupportedResetPeriod(str(period))
    rolled = {**usage, "currentUsage": 0, "usagePeriodStart": start_ms, "usagePeriodEnd": end_ms}
    return {**entry, "featureUsage": rolled}


# ---- ModelMapper -------------------------------------------------------------------------


def _result_feature(entry: Entry, metered: bool) -> Feature | None:
    feature = _calculated(entry).get("feature")
    if not _truthy(feature) or not isinstance(feature, Mapping):
        return None
    fields = dict(feature)
    if metered and not _truthy(fields.get("meterType")):
        fields.pop("meterType", None)  # `meterType || undefined`
    return Feature(fields=fields, is_metered=metered)


def _number_or_none(value: Any) -> Number | None:
    return value if _is_number(value) else None


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _date(value: Any) -> int | None:
    """``mapDate``: a truthy value as a Date, else undefined."""
    return epoch_ms(value) if _truthy(value) else None


def map_boolean(entry: Entry, decision: Decision) -> BooleanEntitlement:
    """``ModelMapper.mapBooleanEntitlement``."""
    return BooleanEntitlement(
        has_access=decision[0],
        is_fallback=False,
        access_denied_reason=decision[1],
        feature=_result_feature(entry, metered=False),
    )


def map_numeric(entry: Entry, decision: Decision) -> NumericEntitlement:
    """``ModelMapper.mapNumericEntitlement``: ``value`` is the usage limit."""
    calculated = _calculated(entry)
    return NumericEntitlement(
        has_access=decision[0],
        is_fallback=False,
        access_denied_reason=decision[1],
        is_unlimited=_bool_or_none(calculated.get("hasUnlimitedUsage")),
        value=_number_or_none(calculated.get("usageLimit")),
        feature=_result_feature(entry, metered=False),
    )


def map_metered(
    entry: Entry, decision: Decision, requested_usage: Number | None
) -> MeteredEntitlement:
    """``ModelMapper.mapMeteredEntitlement``: usage and period from ``featureUsage``."""
    calculated, usage = _calculated(entry), _feature_usage(entry)
    period = usage.get("resetPeriod")
    return MeteredEntitlement(
        has_access=decision[0],
        is_fallback=False,
        access_denied_reason=decision[1],
        is_unlimited=_bool_or_none(calculated.get("hasUnlimitedUsage")),
        has_soft_limit=_truthy(calculated.get("hasSoftLimit")),
        usage_limit=_number_or_none(calculated.get("usageLimit")),
        current_usage=_number_or_none(usage.get("currentUsage")),
        requested_usage=requested_usage or 0,
        reset_period=period if isinstance(period, str) else None,
        usage_period_anchor=_date(usage.get("usagePeriodAnchor")),
        usage_period_start=_date(usage.get("usagePeriodStart")),
        usage_period_end=_date(usage.get("usagePeriodEnd")),
        next_reset_date=_date(usage.get("usagePeriodEnd")),
        feature=_result_feature(entry, metered=True),
    )


def map_enum(
    entry: Entry, decision: Decision, requested_values: Sequence[str] | None
) -> EnumEntitlement:
    """``ModelMapper.mapEnumEntitlement``: ``requested_values`` echoed as given."""
    values = _calculated(entry).get("enumValues")
    return EnumEntitlement(
        has_access=decision[0],
        is_fallback=False,
        access_denied_reason=decision[1],
        feature=_result_feature(entry, metered=False),
        enum_values=tuple(values) if isinstance(values, list) else (),
        requested_values=None if requested_values is None else tuple(requested_values),
    )


def map_any(
    entry: Entry,
    decision: Decision | None,
    requested_usage: Number | None,
    requested_values: Sequence[str] | None,
) -> AnyEntitlement | None:
    """``ModelMapper.mapEntitlement``: by feature type; None for an unknown type."""
    if not _truthy(_calculated(entry).get("feature")):
        return map_boolean(entry, decision or (False, NO_FEATURE_ENTITLEMENT))
    feature = _feature(entry)
    if decision is None or feature is None:
        return None
    feature_type = feature.get("featureType")
    if feature_type == "BOOLEAN":
        return map_boolean(entry, decision)
    if feature_type == "ENUM":
        return map_enum(entry, decision, requested_values)
    if feature_type != "NUMBER":
        return None
    if is_metered(entry):
        return map_metered(entry, decision, requested_usage)
    return map_numeric(entry, decision)


# ---- fallbacks (models.ts *_DEFAULT_FALLBACK_ENTITLEMENT and client.ts) --------------------

_DEFAULT_FALLBACKS: dict[str, AnyEntitlement] = {
    "BOOLEAN": BooleanEntitlement(has_access=False, is_fallback=True, access_denied_reason=UNKNOWN),
    "NUMERIC": NumericEntitlement(
        has_access=False, is_fallback=True, access_denied_reason=UNKNOWN, is_unlimited=False
    ),
    "METERED": MeteredEntitlement(
        has_access=False,
        is_fallback=True,
        access_denied_reason=UNKNOWN,
        is_unlimited=False,
        has_soft_limit=False,
        current_usage=0,
        requested_usage=1,
    ),
    "ENUM": EnumEntitlement(
        has_access=False, is_fallback=True, access_denied_reason=UNKNOWN, enum_values=()
    ),
}


def fallback_result(
    getter_kind: GetterKind,
    fallback: Mapping[str, Any] | None = None,
    *,
    requested_usage: Number | None = None,
    requested_values: Sequence[str] | None = None,
) -> AnyEntitlement:
    """The getter's fallback: its default (§7.1) with the caller's ``fallback`` fields on top.

    ``fallback`` uses the result's snake_case field names (``{"has_access": True}``).
    The untyped getter picks the metered default when a usage is requested, the
    enum one when values are, the numeric one when ``fallback`` has a ``value``,
    else the boolean one. Raises ``InvalidArgument`` for a field the result lacks.
    """
    kind = getter_kind
    if kind == "ENTITLEMENT":
        kind = _untyped_fallback_kind(fallback, requested_usage, requested_values)
    base = _DEFAULT_FALLBACKS[kind]
    if not fallback:
        return base
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in fallback.items()
    }
    try:
        return dataclasses.replace(base, **values)
    except TypeError:
        raise InvalidArgument(
            f"fallback fields {sorted(fallback)} do not all belong to a {kind} entitlement"
        ) from None


def list_fallback(feature_id: str, fallback: Mapping[str, Any]) -> AnyEntitlement:
    """One entry of ``getEntitlements``' fallback list (``mapGetEntitlementsFallback``).

    Stigg returns ``{isFallback: true, accessDeniedReason: "Unknown", feature: {id},
    ...fallback}`` untyped; here it is the first answer type (boolean, numeric, metered,
    enum) whose fields hold ``fallback``, with ``feature.id`` set. Raises
    ``InvalidArgument`` when no type holds them.
    """
    kinds: tuple[GetterKind, ...] = ("BOOLEAN", "NUMERIC", "METERED", "ENUM")
    for kind in kinds:
        try:
            base = fallback_result(kind, fallback)
        except InvalidArgument:
            continue
        if "feature" in fallback:
            return base
        return dataclasses.replace(base, feature=Feature({"id": feature_id}, kind == "METERED"))
    raise InvalidArgument(
        f"fallback fields {sorted(fallback)} of {feature_id!r} fit no entitlement type"
    )


def _untyped_fallback_kind(
    fallback: Mapping[str, Any] | None,
    requested_usage: Number | None,
    requested_values: Sequence[str] | None,
) -> GetterKind:
    if requested_usage is not None:
        return "METERED"
    if requested_values is not None:
        return "ENUM"
    return "NUMERIC" if fallback and "value" in fallback else "BOOLEAN"


# ---- the getters -----------------------------------------------------------------------------


def decide(
    getter_kind: GetterKind,
    entry: Entry | None,
    customer_exists: bool,
    *,
    requested_usage: Number | None = None,
    requested_values: Sequence[str] | None = None,
    now_ms: int,
    fallback: Mapping[str, Any] | None = None,
) -> AnyEntitlement:
    """The answer of one getter from a cache hit, as Stigg's SDK 3.95.0 gives it (§7).

    ``entry`` is the map value for the feature with its usage merged in
    (``merge_usage``), None when the map has no such field; ``customer_exists`` is
    False for an empty map. ``getter_kind`` ``ENTITLEMENT`` is the untyped getter.
    An entry the SDK would throw on (no ``calculatedEntitlement``/``featureUsage``,
    an unsupported reset period) gives the fallback, as the SDK's error handler does.
    """
    try:
        if getter_kind == "ENTITLEMENT":
            return _decide_untyped(
                entry, customer_exists, requested_usage, requested_values, fallback
            )
        return _decide_typed(
            getter_kind,
            entry,
            customer_exists,
            requested_usage,
            requested_values,
            now_ms,
            fallback,
        )
    except (_Broken, UnsupportedResetPeriod):
        return fallback_result(
            getter_kind,
            fallback,
            requested_usage=requested_usage,
            requested_values=requested_values,
        )


def _decide_typed(
    kind: GetterKind,
    entry: Entry | None,
    customer_exists: bool,
    requested_usage: Number | None,
    requested_values: Sequence[str] | None,
    now_ms: int,
    fallback: Mapping[str, Any] | None,
) -> AnyEntitlement:
    if kind == "METERED" and entry is not None:
        entry = roll_usage_period(entry, now_ms)
    usage = (requested_usage or 0) if kind == "METERED" else 0
    decision = policy(customer_exists, entry, usage, requested_values if kind == "ENUM" else None)
    if entry is not None and not _type_matches(kind, entry):
        mismatch = fallback_result(kind, fallback)
        return dataclasses.replace(mismatch, access_denied_reason=FEATURE_TYPE_MISMATCH)
    assert decision is not None  # a matching type always gets a decision
    if entry is None:
        return _no_entry(kind, decision, requested_usage, requested_values)
    if kind == "BOOLEAN":
        return map_boolean(entry, decision)
    if kind == "NUMERIC":
        return map_numeric(entry, decision)
    if kind == "METERED":
        return map_metered(entry, decision, requested_usage)
    return map_enum(entry, decision, requested_values)


def _no_entry(
    kind: GetterKind,
    decision: Decision,
    requested_usage: Number | None,
    requested_values: Sequence[str] | None,
) -> AnyEntitlement:
    """A typed getter's answer when the map has no entry (or the customer none at all)."""
    has_access, reason = decision
    if kind == "NUMERIC":
        return NumericEntitlement(has_access, False, reason, is_unlimited=False)
    if kind == "METERED":
        return MeteredEntitlement(
            has_access,
            False,
            reason,
            is_unlimited=False,
            has_soft_limit=False,
            current_usage=0,
            requested_usage=requested_usage or 0,
        )
    if kind == "ENUM":
        values = tuple(requested_values or ())
        return EnumEntitlement(has_access, False, reason, enum_values=(), requested_values=values)
    return BooleanEntitlement(has_access, False, reason)


def _decide_untyped(
    entry: Entry | None,
    customer_exists: bool,
    requested_usage: Number | None,
    requested_values: Sequence[str] | None,
    fallback: Mapping[str, Any] | None,
) -> AnyEntitlement:
    decision = policy(customer_exists, entry, requested_usage or 0, requested_values)
    answer = None
    if entry is not None:
        answer = map_any(entry, decision, requested_usage, requested_values)
    if answer is not None:
        return answer
    # No entry (or a type the mapper does not know): the fallback, marked as such.
    result = fallback_result(
        "ENTITLEMENT",
        fallback,
        requested_usage=requested_usage,
        requested_values=requested_values,
    )
    return dataclasses.replace(result, is_fallback=True)


# ---- getEntitlements ---------------------------------------------------------------------------


def decide_all(entries: Mapping[str, Entry], customer_exists: bool) -> tuple[AnyEntitlement, ...]:
    """``getEntitlements``: every entry (usage merged) by the untyped mapper, in map order.

    No requested usage or values and no period roll-over, as in the SDK. An entry of a
    feature type the mapper does not know is left out (the SDK maps it to ``undefined``).
    Raises ``UnsupportedEntry`` where the SDK throws (then its fallback list answers).
    """
    answers: list[AnyEntitlement] = []
    try:
        for entry in entries.values():
            if not isinstance(entry, Mapping):
                raise _Broken("entry")
            answer = map_any(entry, policy(customer_exists, entry), None, None)
            if answer is not None:
                answers.append(answer)
    except _Broken as exc:
        raise UnsupportedEntry(str(exc)) from None
    return tuple(answers)


class UnsupportedEntry(ValueError):
    """A cached entry the SDK throws on (a part it dereferences is missing)."""


# ---- credits (this SDK's own; Stigg 3.95.0 has no credit getter) ------------------------------


def decide_credit(
    currency_id: str,
    credit: Mapping[str, Any] | None,
    *,
    requested_amount: Number = 0,
    customer_exists: bool = True,
) -> CreditEntitlement:
    """The balance of a credit key ``{currentUsage, usageLimit, usagePeriodStart, usagePeriodEnd}``.

    Balance = ``usageLimit`` (null counts as 0) minus ``currentUsage``; a
    ``requested_amount`` above it is denied with ``InsufficientCredits``; no credit
    key (None) is denied with ``NoFeatureEntitlementInSubscription``, and a scope whose
    map is empty (``customer_exists`` False) with ``CustomerNotFound``.
    """
    if not customer_exists or credit is None:
        return CreditEntitlement(
            currency_id=currency_id,
            has_access=False,
            access_denied_reason=NO_FEATURE_ENTITLEMENT if customer_exists else CUSTOMER_NOT_FOUND,
            requested_amount=requested_amount,
        )
    limit = _number_or_none(credit.get("usageLimit"))
    used = _number_or_none(credit.get("currentUsage")) or 0
    balance = (limit or 0) - used
    allowed = requested_amount <= balance
    return CreditEntitlement(
        currency_id=currency_id,
        has_access=allowed,
        access_denied_reason=None if allowed else INSUFFICIENT_CREDITS,
        usage_limit=limit,
        current_usage=used,
        remaining_balance=balance,
        requested_amount=requested_amount,
        usage_period_start=epoch_ms(credit.get("usagePeriodStart")),
        usage_period_end=epoch_ms(credit.get("usagePeriodEnd")),
    )


def credit_fallback(currency_id: str, requested_amount: Number = 0) -> CreditEntitlement:
    """The answer when no credit balance can be read (Redis unreachable, Edge API failed)."""
    return CreditEntitlement(
        currency_id=currency_id,
        has_access=False,
        access_denied_reason=UNKNOWN,
        requested_amount=requested_amount,
        is_fallback=True,
    )
