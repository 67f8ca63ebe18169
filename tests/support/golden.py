"""The golden files (tests/stigg_golden): Redis contents and reads of Stigg's SDK 3.95.0."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import redis

from tests.support.stigg_sdk import run_stigg_sdk_with_events


def _golden_dir() -> Path:
    """STIGG_GOLDEN_DIR, else tests/stigg_golden."""
    if "STIGG_GOLDEN_DIR" in os.environ:
        return Path(os.environ["STIGG_GOLDEN_DIR"])
    return Path(__file__).resolve().parents[1] / "stigg_golden"


GOLDEN_DIR = _golden_dir()
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.json"))
if len(GOLDEN_FILES) < 5:  # an empty parametrization would skip the tests, not fail them
    raise RuntimeError(f"the golden files are missing from {GOLDEN_DIR}")
GOLDEN_PREFIX = "golden:"
GOLDEN_TTL = 604800
# The SDK's clock during replays: inside the recorded usage periods (the shortest ends
# 2026-12-07), so period roll-over (docs/stigg-compat.md §7.7) never changes a recorded answer.
GOLDEN_CLOCK_MS = 1_796_083_200_000  # 2026-12-01T00:00:00Z

CALL = re.compile(r"^(?P<getter>\w+)\((?P<args>.*)\)(?:\s+\[.*\])?$")
ARG = re.compile(r"(?:(?P<name>\w+)=)?(?P<value>\[[^\]]*\]|[^,]+)(?:,\s*|$)")


def parse_call(text: str) -> dict[str, Any]:
    """``getMeteredEntitlement(cus, feat, requestedUsage=7)  [note]`` → a driver call."""
    match = CALL.match(text.strip())
    assert match is not None, f"unreadable golden call: {text}"
    call: dict[str, Any] = {"getter": match["getter"]}
    second = "resourceId" if match["getter"] == "getEntitlements" else "featureId"
    positional = ["customerId", second]
    options: dict[str, Any] = {}
    for arg in ARG.finditer(match["args"]):
        name, value = arg["name"], arg["value"].strip()
        if name is None:
            call[positional.pop(0)] = value
        elif name == "resourceId":
            call[name] = value
        elif name == "requestedValues":
            options[name] = [item.strip() for item in value[1:-1].split(",")]
        else:
            options[name] = int(value)
    if options:
        call["options"] = options
    return call


def load_golden(path: Path) -> dict[str, Any]:
    golden: dict[str, Any] = json.loads(path.read_text())
    return golden


def rekey(contents: dict[str, str], prefix: str) -> dict[str, str]:
    """Golden keys ``golden:…`` under the test's own ``prefix:…``."""
    assert all(key.startswith(GOLDEN_PREFIX) for key in contents)
    return {f"{prefix}:{key[len(GOLDEN_PREFIX) :]}": value for key, value in contents.items()}


def stored(client: redis.Redis, prefix: str) -> dict[str, str]:
    return {key: client.get(key) for key in client.scan_iter(match=f"{prefix}:*")}  # type: ignore[misc]


def replay(
    redis_port: int, prefix: str, edge_url: str, reads: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Stigg's SDK repeats golden reads (their ``call`` texts) at the golden clock.

    Returns its answers and cache events per read, in the golden files' forms.
    """
    calls = [parse_call(read["call"]) for read in reads]
    return run_stigg_sdk_with_events(
        redis_port, prefix, edge_url, calls, dates="iso", clock_ms=GOLDEN_CLOCK_MS
    )


def snapshot_files() -> list[Path]:
    """The golden files whose reads all follow one fetch (no ``reportUsage`` in between)."""
    return [path for path in GOLDEN_FILES if "redisBeforeReports" not in load_golden(path)]


def renamed(golden: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A golden file with ids replaced everywhere (``{"cus-res": "acme:eu"}``)."""
    text = json.dumps(golden)
    for old, new in names.items():
        text = text.replace(old, new)
    result: dict[str, Any] = json.loads(text)
    return result


def edge_scope(request: str) -> tuple[str, str | None]:
    """``GET /v1/c/C/entitlements.json[?resourceId=R]`` → (C, R)."""
    path, _, query = request.split(" ", 1)[1].partition("?")
    return path.split("/")[3], (query.removeprefix("resourceId=") or None)
