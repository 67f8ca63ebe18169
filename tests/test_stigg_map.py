"""The Edge → cache mapping against Redis contents Stigg's own SDK wrote (stigg-golden/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from cache_pipeline.contract.dates import edge_version
from cache_pipeline.contract.plan import encode
from cache_pipeline.contract.stigg_map import (
    entry_problem,
    map_entitlements,
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
        assert int(written[key + "#timestamp"]) == edge_version(entries, now=1)
        for feature_id, (value, version) in metered_usages(entries).items():
            usage_key = f"{key}:f_{feature_id}"
            if version is None:  # the SDK writes no usage key without usageUpdatedAt
                assert usage_key not in written
                continue
            assert encode(value) == written[usage_key], usage_key
            assert int(written[usage_key + "#timestamp"]) == version


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
