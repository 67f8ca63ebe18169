"""The current usage period of a metered feature, as Stigg's SDK 3.95.0 recomputes it.

``calculate_usage_period`` mirrors the SDK's ``calculateUsagePeriod`` (dayjs 1.11):
``k = floor(now.diff(anchor, unit, true))`` whole periods since the anchor, then the
period is ``[anchor + k units, anchor + (k + 1) units)``. Months and years are added
the dayjs way (the day of month is clamped to the target month's length) and their
fractional difference is moment's ``monthDiff``. Computed in UTC (the SDK uses the
process time zone; Stigg's servers and our goldens run in UTC). All values epoch ms.
"""

from __future__ import annotations

import calendar
import math
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIXED_MS = {"HOUR": 3_600_000, "DAY": 86_400_000, "WEEK": 7 * 86_400_000}
_MONTHS = {"MONTH": 1, "YEAR": 12}


class UnsupportedResetPeriod(ValueError):
    """The reset period is not HOUR, DAY, WEEK, MONTH or YEAR (the SDK throws too)."""


def calculate_usage_period(anchor_ms: int, now_ms: int, reset_period: str) -> tuple[int, int]:
    """``(usage_period_start, usage_period_end)`` of the period containing ``now_ms``."""
    if reset_period in _FIXED_MS:
        step = _FIXED_MS[reset_period]
        cycles = math.floor((now_ms - anchor_ms) / step)
        return anchor_ms + cycles * step, anchor_ms + (cycles + 1) * step
    if reset_period in _MONTHS:
        months = _MONTHS[reset_period]
        cycles = math.floor(month_diff(now_ms, anchor_ms) / months)
        return add_months(anchor_ms, cycles * months), add_months(anchor_ms, (cycles + 1) * months)
    raise UnsupportedResetPeriod(f"unsupported reset period {reset_period!r}")


def _utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _ms(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def add_months(ms: int, months: int) -> int:
    """``dayjs(ms).add(months, 'month')``: same time of day, day clamped to the month's end."""
    moment = _utc(ms)
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return _ms(moment.replace(year=year, month=month + 1, day=day))


def month_diff(a_ms: int, b_ms: int) -> float:
    """``dayjs(a).diff(b, 'month', true)``: moment's fractional month difference a - b."""
    a, b = _utc(a_ms), _utc(b_ms)
    if a.day < b.day:
        return -month_diff(b_ms, a_ms)
    whole = (b.year - a.year) * 12 + (b.month - a.month)
    anchor = add_months(a_ms, whole)
    before = b_ms - anchor < 0
    anchor2 = add_months(a_ms, whole + (-1 if before else 1))
    span = (anchor - anchor2) if before else (anchor2 - anchor)
    return -(whole + (b_ms - anchor) / span) or 0.0
