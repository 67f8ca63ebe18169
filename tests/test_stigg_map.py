"""The Edge → cache mapping against Redis contents Stigg's own SDK wrote (stigg-golden/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cache_pipeline.plan import encode
from cache_pipeline.stigg_map import (
    entry_problem,
    epoch_ms,
    map_entitlements,
    map_version,
    metered_usages,
)
from tests.support.golden import GOLDEN_FILES


def _scope_key(prefix: str, request: str) -> str:
    """``GET /v1/c/C/entitlements.json?resourceId=R`` → ``prefix:c_C[:r_R]``."""
    url = urlsplit(request.split(" ", 1)[1])
    customer = url.path.split("/")[3]
    resource = parse_qs(url.query).get("resourceId", [None])[0]
    return f"{prefix}:c_{customer}" + (f":r_{resource}" if resource else "")


def _written(golden: dict[str, Any]) -> dict[str, str]:
    """What the SDK wrote right after its fetch (before any usage report)."""
    written: dict[str, str] = golden.get("redisBeforeReports") or golden["redis"]
    return written


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_mapping_writes_what_stiggs_sdk_wrote(path: Path) -> None:
    golden = json.loads(path.read_text())
    written = _written(golden)
    for request, response in golden["edgeResponses"].items():
        if not request.startswith("GET "):
            continue
        entries = response["data"]["entitlements"]
        key = _scope_key(golden["environmentPrefix"], request)
        assert encode(map_entitlements(entries)) == written[key], key
        assert int(written[key + "#timestamp"]) == map_version(entries, now_ms=1)
        for feature_id, (value, version) in metered_usages(entries).items():
            usage_key = f"{key}:f_{feature_id}"
            if version is None:  # the SDK writes no usage key without usageUpdatedAt
                assert usage_key not in written
                continue
            assert encode(value) == written[usage_key], usage_key
            assert int(written[usage_key + "#timestamp"]) == version


def test_map_version_is_the_first_valid_entitlement_updated_at() -> None:
    entries = [
        {"entitlementUpdatedAt": "not a date"},
        {"entitlementUpdatedAt": "2026-11-20T10:00:00.000Z"},
        {"entitlementUpdatedAt": "2026-11-29T10:00:00.000Z"},
    ]
    assert map_version(entries, now_ms=7) == 1795168800000
    assert map_version([], now_ms=7) == 0
    assert map_version([{"entitlementUpdatedAt": None}], now_ms=7) == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-20T10:00:00.000Z", 1795168800000),
        ("2026-11-20T11:00:00+01:00", 1795168800000),
        (1795168800000, 1795168800000),
        (None, None),
        ("", None),
        ("yesterday", None),
        (True, None),
        ("2026-11-20T10:00:00", None),
    ],
)
def test_epoch_ms(value: Any, expected: int | None) -> None:
    assert epoch_ms(value) == expected


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"feature": {"refId": "f", "featureType": "BOOLEAN"}}, None),
        ({"feature": {"featureType": "BOOLEAN"}}, "has no feature.refId"),
        ({"hasUnlimitedUsage": True}, "has no feature"),
        ({"feature": {"refId": "f", "featureType": "boolean"}}, "featureType 'boolean'"),
        ("FEATURE:f", "is not an object"),
    ],
)
def test_entry_problem_names_the_entry(entry: Any, problem: str | None) -> None:
    found = entry_problem(entry)
    assert found == problem if problem is None else (found is not None and problem in found)
