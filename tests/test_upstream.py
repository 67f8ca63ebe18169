"""The Edge API client against a real local HTTP server (no mocks).

The server records each request's raw target and headers and answers from a
script. Delays and budgets are scaled down from Stigg's (2 s base, 10 s budget).
Retries are judged by what the client did (its requests, the waits it made
between them, the timeout of each attempt), never by the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from cache_pipeline.client.upstream import (
    AsyncEdgeClient,
    EdgeClient,
    EdgeOptions,
    entitlements_url,
)
from cache_pipeline.errors import (
    InvalidArgument,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRefused,
    UpstreamUnavailable,
)
from tests.support.servers import free_port

Reply = tuple[int, Any, float]  # status, JSON body (or raw bytes), delay in seconds
HOLD = math.inf  # a delay that holds the answer until the test releases it
HOLD_SECONDS = 30.0  # ... or until this long has passed
ENTRY = {"feature": {"refId": "feature-seats", "featureType": "NUMBER"}, "usageLimit": 10}
OK: Reply = (200, {"data": {"entitlements": [ENTRY]}}, 0.0)


class ScriptedServer:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = [OK]
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.answered = 0
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append((self.path, dict(self.headers)))
                replies = server.replies
                status, body, delay = replies.pop(0) if len(replies) > 1 else replies[0]
                if delay == HOLD:
                    server.release.wait(HOLD_SECONDS)
                else:
                    time.sleep(delay)
                server.answered += 1
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def options(self, **overrides: Any) -> EdgeOptions:
        values: dict[str, Any] = {
            "url": self.url,
            "api_key": "key-123",
            "budget_seconds": 5.0,
            "base_delay_seconds": 0.01,
            "jitter": 0.0,
        }
        return EdgeOptions(**(values | overrides))


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    scripted.thread.start()
    yield scripted
    scripted.release.set()
    scripted.httpd.shutdown()
    scripted.httpd.server_close()


@dataclass
class Calls:
    """What the Edge client did: the waits between its attempts, each attempt's timeout."""

    waits: list[float] = field(default_factory=list)
    timeouts: list[float] = field(default_factory=list)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Records the client's waits and attempt timeouts; it still waits and sends them all."""
    seen = Calls()

    def sleep(seconds: float) -> None:
        seen.waits.append(seconds)
        time.sleep(seconds)

    real_get = httpx.Client.get

    def get(self: httpx.Client, url: Any, **kwargs: Any) -> httpx.Response:
        seen.timeouts.append(kwargs["timeout"])
        return real_get(self, url, **kwargs)

    clock = SimpleNamespace(monotonic=time.monotonic, sleep=sleep)
    monkeypatch.setattr("cache_pipeline.client.upstream.time", clock)
    monkeypatch.setattr(httpx.Client, "get", get)
    return seen


def fetch(
    server: ScriptedServer, customer: str = "cus-1", resource: str | None = None, **overrides: Any
) -> Any:
    client = EdgeClient(server.options(**overrides))
    try:
        return client.fetch(customer, resource)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("customer", "resource", "target"),
    [
        ("acme:eu", None, "/v1/c/acme:eu/entitlements.json"),
        (
            "user@example.com",
            "site-1",
            "/v1/c/user@example.com/entitlements.json?resourceId=site-1",
        ),
        ("cus 1", "site 1", "/v1/c/cus%201/entitlements.json?resourceId=site%201"),
        ("cus-1", "", "/v1/c/cus-1/entitlements.json"),
    ],
)
def test_path_and_query_carry_raw_ids(
    server: ScriptedServer, customer: str, resource: str | None, target: str
) -> None:
    fetch(server, customer, resource)
    assert [path for path, _ in server.seen] == [target]


def test_headers_and_answer(server: ScriptedServer) -> None:
    before = time.time_ns() // 1_000_000
    answer = fetch(server)
    headers = {k.lower(): v for k, v in server.seen[0][1].items()}
    assert headers["x-api-key"] == "key-123"
    assert headers["x-api-version"] == "1"
    assert headers["accept"] == "application/json"
    assert answer.entitlements == [ENTRY]
    assert before <= answer.requested_at_ms <= time.time_ns() // 1_000_000


def test_a_client_handed_in_sends_the_headers_too(server: ScriptedServer) -> None:
    with httpx.Client() as http:
        EdgeClient(server.options(), http).fetch("cus-1")

    async def scenario() -> None:
        async with httpx.AsyncClient() as http:
            await AsyncEdgeClient(server.options(), http).fetch("cus-1")

    asyncio.run(scenario())
    for _, headers in server.seen:
        assert {k.lower(): v for k, v in headers.items()}["x-api-key"] == "key-123"
    assert len(server.seen) == 2


@pytest.mark.parametrize("bad", ["a/b", "a?b", "a&b", "a#b", "", "a\nb"])
def test_ids_that_would_corrupt_the_url_are_refused(server: ScriptedServer, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        fetch(server, bad)
    with pytest.raises(InvalidArgument):
        entitlements_url(server.url, "cus-1", bad or "x/y")
    assert server.seen == []


def test_503_is_retried_three_times_then_unavailable(server: ScriptedServer) -> None:
    server.replies = [(503, {}, 0.0)]
    with pytest.raises(UpstreamUnavailable):
        fetch(server)
    assert len(server.seen) == 4


def test_429_then_200_succeeds(server: ScriptedServer) -> None:
    server.replies = [(429, {}, 0.0), (500, {}, 0.0), OK]
    assert fetch(server).entitlements == [ENTRY]
    assert len(server.seen) == 3


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, UpstreamError), (401, UpstreamRefused), (403, UpstreamRefused), (404, UpstreamNotFound)],
)
def test_4xx_is_not_retried(server: ScriptedServer, status: int, kind: type[Exception]) -> None:
    server.replies = [(status, {"message": "no"}, 0.0)]
    with pytest.raises(UpstreamError) as caught:
        fetch(server)
    assert type(caught.value) is kind
    assert str(status) in str(caught.value)
    assert len(server.seen) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"entitlements": []}, "errors": [{"message": "boom"}]},
        b"not json",
        {"data": {}},
        {"data": {"entitlements": [1]}},
        {"data": {"entitlements": [{"feature": {"refId": 7}}]}},
    ],
)
def test_unusable_200_is_an_error_without_retry(server: ScriptedServer, body: Any) -> None:
    server.replies = [(200, body, 0.0)]
    with pytest.raises(UpstreamError):
        fetch(server)
    assert len(server.seen) == 1


def test_empty_errors_and_entries_without_feature_are_fine(server: ScriptedServer) -> None:
    server.replies = [(200, {"data": {"entitlements": [{"usageLimit": 1}]}, "errors": []}, 0.0)]
    assert fetch(server).entitlements == [{"usageLimit": 1}]


def test_a_retry_needs_more_budget_than_its_delay(server: ScriptedServer, calls: Calls) -> None:
    # Stigg's P27 scaled by 1/10: delays 0.4 s then 0.8 s within 1 s -> exactly two attempts.
    server.replies = [(503, {}, 0.0)]
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        fetch(server, base_delay_seconds=0.2, budget_seconds=1.0)
    print(f"gave up after {time.monotonic() - started:.3f} s")
    assert len(server.seen) == 2
    assert calls.waits == [pytest.approx(0.4)]  # the 0.8 s retry did not fit: not waited for


def test_a_timed_out_attempt_leaves_no_budget(server: ScriptedServer, calls: Calls) -> None:
    server.replies = [(200, {"data": {"entitlements": []}}, HOLD)]  # no answer while we wait
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        fetch(server, budget_seconds=0.3)
    print(f"gave up after {time.monotonic() - started:.3f} s")
    assert server.answered == 0  # the client stopped waiting on its own
    assert len(calls.timeouts) == len(server.seen) == 1
    assert 0 < calls.timeouts[0] <= 0.3  # the attempt had what the budget held
    assert calls.waits == []  # nothing left for a retry


def test_a_refused_connection_is_not_retried(calls: Calls) -> None:
    """Unlike Stigg's SDK (a retry 4 s later): the caller's request waits for nothing."""
    options = EdgeOptions(f"http://127.0.0.1:{free_port()}", base_delay_seconds=0.05, jitter=0.0)
    with pytest.raises(UpstreamUnavailable, match="ConnectError"):
        EdgeClient(options).fetch("cus-1")
    assert len(calls.timeouts) == 1  # the attempt alone
    assert calls.waits == []


def test_delay_is_exponential_with_up_to_20_percent_jitter() -> None:
    options = EdgeOptions("http://edge")
    assert 4.0 <= options.delay(1) <= 4.8
    assert 8.0 <= options.delay(2) <= 9.6


def test_asyncio_twin(server: ScriptedServer) -> None:
    async def scenario() -> tuple[Any, Exception | None]:
        client = AsyncEdgeClient(server.options())
        try:
            answer = await client.fetch("acme:eu", "site-1")
            server.replies = [(503, {}, 0.0)]
            try:
                await client.fetch("acme:eu")
            except UpstreamUnavailable as exc:
                return answer, exc
            return answer, None
        finally:
            await client.aclose()

    answer, error = asyncio.run(scenario())
    assert answer.entitlements == [ENTRY]
    assert isinstance(error, UpstreamUnavailable)
    assert server.seen[0][0] == "/v1/c/acme:eu/entitlements.json?resourceId=site-1"
    assert len(server.seen) == 1 + 4


def test_asyncio_twin_does_not_retry_errors_in_a_200(server: ScriptedServer) -> None:
    server.replies = [(200, {"data": None, "errors": [{"message": "boom"}]}, 0.0)]

    async def scenario() -> None:
        client = AsyncEdgeClient(server.options())
        try:
            await client.fetch("cus-1")
        finally:
            await client.aclose()

    with pytest.raises(UpstreamError):
        asyncio.run(scenario())
    assert len(server.seen) == 1
