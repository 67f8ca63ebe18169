"""The pieces of the Stigg SDK harness: the recording Edge stub and the node wrapper's failures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import stigg_sdk
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer
from tests.support.stigg_sdk import run_stigg_sdk, run_stigg_sdk_with_events

ANSWER: dict[str, object] = {"data": {"entitlements": []}}


@pytest.fixture
def edge() -> Iterator[RecordingEdge]:
    with RecordingEdge({"GET /v1/c/cus-1/entitlements.json?resourceId=site-1": ANSWER}) as stub:
        yield stub


def test_stub_serves_canned_answers_and_records_requests(edge: RecordingEdge) -> None:
    with httpx.Client(base_url=edge.url, timeout=5) as http:
        served = http.get("/v1/c/cus-1/entitlements.json?resourceId=site-1", headers={"X-A": "1"})
        unknown = http.get("/v1/c/cus-2/entitlements.json")
        graphql = http.post("/graphql", json={"query": "{ x }"})

    assert (served.status_code, served.json()) == (200, ANSWER)
    assert unknown.status_code == 404
    assert graphql.status_code == 404
    first, second, third = edge.requests
    assert first.line == "GET /v1/c/cus-1/entitlements.json?resourceId=site-1"
    assert (first.path, first.query, first.headers["x-a"]) == (
        "/v1/c/cus-1/entitlements.json",
        {"resourceId": ["site-1"]},
        "1",
    )
    assert third.body == b'{"query":"{ x }"}'
    assert edge.entitlement_requests == [first, second]


def test_stub_fails_on_demand(edge: RecordingEdge) -> None:
    edge.fail_with(503)
    with httpx.Client(base_url=edge.url, timeout=5) as http:
        assert http.get("/v1/c/cus-1/entitlements.json?resourceId=site-1").status_code == 503
        edge.fail_with(None)
        assert http.get("/v1/c/cus-1/entitlements.json?resourceId=site-1").status_code == 200
    edge.clear()
    assert edge.requests == []


def test_sdk_miss_with_failing_edge_returns_the_fallback(
    redis_server: RedisServer, edge: RecordingEdge, prefix: str
) -> None:
    edge.fail_with(503)
    calls = [
        {"getter": "getBooleanEntitlement", "customerId": "cus-1", "featureId": "f-1"},
        {"getter": "noSuchGetter"},
    ]

    # entitlementsTimeout 1 s leaves no budget for the SDK's 2 s retry delay: one attempt.
    results, events = run_stigg_sdk_with_events(
        redis_server.port, prefix, edge.url, calls, entitlements_timeout_ms=1000
    )

    assert results == [
        {
            "type": "BOOLEAN",
            "hasAccess": False,
            "isFallback": True,
            "accessDeniedReason": "Unknown",
        },
        {"error": "unknown getter: noSuchGetter"},
    ]
    assert events == [["cacheMiss"], []]
    assert [request.line for request in edge.requests] == ["GET /v1/c/cus-1/entitlements.json"]
    assert edge.requests[0].headers["x-api-key"] == stigg_sdk.DEFAULT_API_KEY


def test_driver_failure_shows_its_stderr(redis_server: RedisServer, edge: RecordingEdge) -> None:
    with pytest.raises(AssertionError, match=r"exited 2(.|\n)*API key"):
        run_stigg_sdk(redis_server.port, "p", edge.url, [], api_key="")


def test_missing_npm_install_is_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, edge: RecordingEdge
) -> None:
    monkeypatch.setattr(stigg_sdk, "SDK_PACKAGE", tmp_path / "absent")
    with pytest.raises(
        AssertionError, match=r"run `make install` \(npm ci --prefix tests/interop\)"
    ):
        run_stigg_sdk(6379, "p", edge.url, [])
