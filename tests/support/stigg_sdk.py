"""Runs the real ``@stigg/node-server-sdk`` (pinned in tests/interop/package.json) on a Redis.

``run_stigg_sdk`` feeds ``tests/interop/stigg_reader.mjs`` one JSON document and returns what the
SDK answered per call, as plain JSON. A missing ``node`` or npm install is a failure, never a skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

INTEROP_DIR = Path(__file__).resolve().parent.parent / "interop"
DRIVER = INTEROP_DIR / "stigg_reader.mjs"
SDK_PACKAGE = INTEROP_DIR / "node_modules" / "@stigg" / "node-server-sdk"
SDK_VERSION = "3.95.0"
DEFAULT_API_KEY = "server-interop-test-key"


def require_stigg_sdk() -> str:
    """The path of ``node``, after checking that the pinned SDK is installed."""
    node = shutil.which("node")
    if node is None:
        raise AssertionError(
            "node is not on PATH: install Node.js 18+ (e.g. apt-get install nodejs)"
        )
    manifest = SDK_PACKAGE / "package.json"
    if not manifest.is_file():
        raise AssertionError(
            f"{SDK_PACKAGE} is missing: run `make install` (npm ci --prefix tests/interop)"
        )
    version = json.loads(manifest.read_text())["version"]
    if version != SDK_VERSION:
        raise AssertionError(f"installed SDK is {version}, not {SDK_VERSION}: run `make install`")
    return node


class SdkOptions(TypedDict, total=False):
    api_key: str  # default DEFAULT_API_KEY
    redis_host: str  # default 127.0.0.1
    redis_db: int  # default 0
    ttl: int  # the SDK's redis.ttl in seconds; SDK default 604800
    entitlements_timeout_ms: int  # the SDK's entitlementsTimeout; SDK default 10000
    dates: Literal["ms", "iso"]  # default "ms"
    clock_ms: int  # the SDK's wall clock starts at this epoch ms and runs on; default real time
    timeout: float  # seconds for the whole node run; default 60


def run_stigg_sdk(
    redis_port: int,
    prefix: str,
    edge_url: str,
    calls: Sequence[Mapping[str, Any]],
    **options: Unpack[SdkOptions],
) -> list[dict[str, Any]]:
    """The SDK's answer to each call, in order (``{"error": msg}`` where it threw).

    A call is ``{"getter": "getMeteredEntitlement", "customerId": ..., "featureId": ...,
    "resourceId"?: ..., "options"?: {"requestedUsage"?, "requestedValues"?}}``, or
    ``{"getter": "getEntitlements", "customerId": ..., "resourceId"?: ...}``; any other public
    method of the Stigg client takes the call's fields as its one argument. ``edge_url`` is the
    SDK's baseUri and baseEdgeUri. Dates come back as epoch ms, or with ``dates="iso"`` as ISO
    strings (the form of stigg-golden ``sdkReads``).
    """
    return run_stigg_sdk_with_events(redis_port, prefix, edge_url, calls, **options)[0]


def run_stigg_sdk_with_events(
    redis_port: int,
    prefix: str,
    edge_url: str,
    calls: Sequence[Mapping[str, Any]],
    **options: Unpack[SdkOptions],
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """``run_stigg_sdk`` plus the SDK's cache events per call, spelled as golden ``sdkEvents``:
    ``"cacheHit"``, ``"cacheMiss"``, ``"cacheMiss(globalCustomerMissing)"``."""
    document: dict[str, Any] = {
        "redis": {
            "host": options.get("redis_host", "127.0.0.1"),
            "port": redis_port,
            "db": options.get("redis_db", 0),
        },
        "environmentPrefix": prefix,
        "edgeUrl": edge_url,
        "apiKey": options.get("api_key", DEFAULT_API_KEY),
        "dates": options.get("dates", "ms"),
        "calls": list(calls),
    }
    if "ttl" in options:
        document["ttl"] = options["ttl"]
    if "clock_ms" in options:
        document["clockMs"] = options["clock_ms"]
    if "entitlements_timeout_ms" in options:
        document["entitlementsTimeoutMs"] = options["entitlements_timeout_ms"]
    output = _run_driver(json.dumps(document), options.get("timeout", 60))
    results: list[dict[str, Any]] = output["results"]
    events: list[list[str]] = output["events"]
    return results, events


def _run_driver(stdin: str, timeout: float) -> dict[str, Any]:
    node = require_stigg_sdk()
    try:
        completed = subprocess.run(
            [node, str(DRIVER)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=INTEROP_DIR,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"stigg_reader.mjs did not finish within {timeout}s; stderr:\n{_text(exc.stderr)}"
        ) from None
    if completed.returncode != 0:
        raise AssertionError(
            f"stigg_reader.mjs exited {completed.returncode}; stderr:\n{completed.stderr[-4000:]}"
        )
    try:
        output: dict[str, Any] = json.loads(completed.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"stigg_reader.mjs printed no JSON document: {completed.stdout[:2000]!r}; "
            f"stderr:\n{completed.stderr[-4000:]}"
        ) from None
    return output


def _text(stream: str | bytes | None) -> str:
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")[-4000:]
    return (stream or "")[-4000:]
