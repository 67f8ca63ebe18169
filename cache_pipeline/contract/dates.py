"""Dates as Stigg's SDK reads them: epoch milliseconds from ISO-8601 strings or numbers.

``epoch_ms`` accepts what JavaScript's ``new Date(x)`` gives a valid date for in the
forms the Edge API and the cache use (ISO-8601 strings with ``Z`` or an offset, and
integer epoch ms). ``edge_version`` is the version Stigg's SDK 3.95.0 gives an Edge
API answer when it writes it to Redis (docs/stigg-compat.md §5.1, §8 pitfall 6).
Pure; importable by the pipeline and the SDK alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# JavaScript dates are valid within ±8.64e15 ms of the epoch.
_JS_DATE_LIMIT_MS = 8_640_000_000_000_000


def epoch_ms(value: object) -> int | None:
    """Epoch ms of an ISO-8601 string (``Z``, offset or UTC when absent) or a number of ms.

    None for anything else: ``None``, booleans, unparseable strings, non-finite or
    out-of-range numbers.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) <= _JS_DATE_LIMIT_MS else None
    if isinstance(value, float):
        return _float_ms(value)
    if isinstance(value, str):
        return _iso_ms(value)
    return None


def _float_ms(value: float) -> int | None:
    if value != value or abs(value) > _JS_DATE_LIMIT_MS:  # NaN or out of range
        return None
    return int(value)  # JavaScript's Date truncates fractional ms


def _iso_ms(text: str) -> int | None:
    text = text.strip()
    if len(text) < 10 or not text[:4].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def now_ms() -> int:
    """The current time in epoch ms."""
    return time.time_ns() // 1_000_000


def edge_version(entries: Sequence[Mapping[str, Any]], *, now: int | None = None) -> int:
    """The version Stigg's SDK writes for an Edge API entitlements list (epoch ms).

    ``0`` for an empty list; else the FIRST ``entitlementUpdatedAt`` in list order
    that is a valid date; the current time (``now`` when given) when none is.
    As in the SDK, an explicit ``null`` (or ``0``) is a valid date that stops the
    search and yields the current time; an absent field or an unparseable value is
    skipped.
    """
    if not entries:
        return 0
    current = now_ms() if now is None else now
    for entry in entries:
        if "entitlementUpdatedAt" not in entry:
            continue
        value = entry["entitlementUpdatedAt"]
        if value is None:
            return current
        version = epoch_ms(value)
        if version is not None:
            return version or current
    return current
