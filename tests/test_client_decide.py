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

from cache_pipeline.client.decide import GetterKind, decide, merge_usage

GOLDEN_DIR = Path("/work/shared/stigg-golden")
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
