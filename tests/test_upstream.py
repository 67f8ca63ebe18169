"""The upstream client against real HTTP servers: a scripted one and the edge stub."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cache_pipeline.errors import UpstreamError, UpstreamUnavailable
from cache_pipeline.upstream import (
    API_KEY_HEADER,
    AsyncUpstreamClient,
    UpstreamClient,
    UpstreamOptions,
)
from tests.support.edge import STUB_API_KEY, EdgeStub, snapshot_body
from tests.support.servers import free_port

Reply = tuple[int, Any, float]  # status, JSON body, delay in seconds


def answer(customer: str, resource: str | None = None, timestamp: int = 100) -> dict[str, Any]:
    data = {"customerId": customer, "resourceId": resource, "accessDeniedReason": None}
    return {"timestamp": timestamp, "data": data | {"entitlements": []}}


class ScriptedServer:
    """Answers each request with the next scripted reply (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.seen: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append((self.path, dict(self.headers)))
                status, body, delay = (
                    server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                )
                time.sleep(delay)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.seen = []


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(5)


@pytest.fixture
def client(scripted: ScriptedServer) -> Iterator[UpstreamClient]:
    options = UpstreamOptions(scripted.url, "k-1", timeout=0.5, retries=2, backoff_base=0.01)
    upstream = UpstreamClient(options)
    yield upstream
    upstream.close()


def test_fetch_sends_the_key_and_quotes_the_ids(
    scripted: ScriptedServer, client: UpstreamClient
) -> None:
    scripted.script((200, answer("a/b c", "r#1"), 0))
    got = client.fetch("a/b c", "r#1")
    assert got is not None
    assert (got.timestamp, got.data.customer_id, got.data.resource_id) == (100, "a/b c", "r#1")
    path, headers = scripted.seen[0]
    assert path == "/v1/customers/a%2Fb%20c/entitlements?resourceId=r%231"
    assert headers[API_KEY_HEADER] == "k-1"
    message = got.to_message()
    assert (message.type, message.timestamp, message.data) == (
        "entitlements.updated",
        100,
        got.data,
    )


def test_unknown_customer_is_none(scripted: ScriptedServer, client: UpstreamClient) -> None:
    scripted.script((404, {"detail": "unknown"}, 0))
    assert client.fetch("cus") is None
    assert len(scripted.seen) == 1


def test_transient_failures_are_retried_with_backoff(
    scripted: ScriptedServer, client: UpstreamClient
) -> None:
    scripted.script((503, {}, 0), (429, {}, 0), (200, answer("cus"), 0))
    got = client.fetch("cus")
    assert got is not None
    assert got.data.customer_id == "cus"
    assert len(scripted.seen) == 3


def test_retries_are_bounded(scripted: ScriptedServer, client: UpstreamClient) -> None:
    scripted.script((502, {}, 0))
    with pytest.raises(UpstreamUnavailable, match="502"):
        client.fetch("cus")
    assert len(scripted.seen) == 3  # one attempt and two retries


def test_timeouts_are_retried_then_reported(
    scripted: ScriptedServer, client: UpstreamClient
) -> None:
    scripted.script((200, answer("cus"), 1.0))
    with pytest.raises(UpstreamUnavailable, match="Timeout"):
        client.fetch("cus")
    assert len(scripted.seen) == 3


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ((401, {}, 0), "API key"),
        ((400, {"detail": "no"}, 0), "400"),
        ((200, b"not json", 0), "invalid body"),
        ((200, {"timestamp": 0, "data": {}}, 0), "invalid body"),
        ((200, answer("someone-else"), 0), "someone-else"),
        ((200, answer("cus", "r1"), 0), "'r1'"),
    ],
)
def test_answers_that_retrying_cannot_fix_fail_at_once(
    scripted: ScriptedServer, client: UpstreamClient, reply: Reply, error: str
) -> None:
    scripted.script(reply)
    with pytest.raises(UpstreamError, match=error):
        client.fetch("cus")
    assert len(scripted.seen) == 1


def test_unreachable_upstream() -> None:
    options = UpstreamOptions(f"http://127.0.0.1:{free_port()}", retries=1, backoff_base=0.01)
    upstream = UpstreamClient(options)
    try:
        with pytest.raises(UpstreamUnavailable, match="ConnectError"):
            upstream.fetch("cus")
    finally:
        upstream.close()


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="http"):
        UpstreamOptions("edge.example.com")
    with pytest.raises(ValueError, match="timeout"):
        UpstreamOptions("http://x", timeout=0)


def test_async_client_retries_and_reads(scripted: ScriptedServer) -> None:
    scripted.script((500, {}, 0), (200, answer("cus"), 0))

    async def scenario() -> tuple[Any, Any]:
        options = UpstreamOptions(scripted.url, "k", timeout=0.5, retries=1, backoff_base=0.01)
        upstream = AsyncUpstreamClient(options)
        try:
            first = await upstream.fetch("cus")
            scripted.script((404, {}, 0))
            return first, await upstream.fetch("cus")
        finally:
            await upstream.aclose()

    first, second = asyncio.run(scenario())
    assert first is not None
    assert first.data.customer_id == "cus"
    assert second is None


def test_against_the_edge_stub() -> None:
    stub = EdgeStub().start()
    good = UpstreamClient(UpstreamOptions(stub.url, STUB_API_KEY, retries=0))
    bad = UpstreamClient(UpstreamOptions(stub.url, "wrong", retries=0))
    try:
        stub.put("cus-1", snapshot_body(features={"a": 1}, timestamp=500))
        stub.put("cus-1", snapshot_body(features={"b": 1}, timestamp=400), resource="r1")
        got = good.fetch("cus-1")
        assert got is not None
        assert got.timestamp == 500
        scoped = good.fetch("cus-1", "r1")
        assert scoped is not None
        assert (scoped.timestamp, scoped.data.entitlements[0].id) == (500, "b")
        assert good.fetch("cus-2") is None
        assert [(c.customer_id, c.resource_id) for c in good.customers()] == [
            ("cus-1", None),
            ("cus-1", "r1"),
        ]
        with pytest.raises(UpstreamError, match="401"):
            bad.fetch("cus-1")
    finally:
        good.close()
        bad.close()
        stub.stop()
