"""A recording stand-in for Stigg's Edge API, for driving the real Stigg SDK in tests.

Serves ``GET /v1/c/{customerId}/entitlements.json[?resourceId=R]`` from canned answers shaped
like the golden ``edgeResponses`` (``{"data": {"entitlements": [...]}}``), keyed by the request
line as the golden files spell it: ``"GET /v1/c/cus-1/entitlements.json?resourceId=site-1"``.
Every request (any method, any path) is recorded, so a test can assert that a cache hit made
none. An entitlements request without a canned answer gets 404; ``fail_with(503)`` answers
every entitlements request with that status instead; ``latency`` (seconds) delays every
answer, so that concurrent misses overlap. ``max_in_flight`` is the most requests it held
at once; with ``together=n`` it holds each answer until n requests are in flight (at
most ``HOLD_SECONDS``), so a test shows requests were sent at once without timing
them. Anything else (e.g. ``POST /graphql``)
gets 404 with a GraphQL-style error body: with ``realtimeUpdatesEnabled`` and
``enableRemoteConfig`` off, SDK 3.95.0 sends nothing at init (docs/stigg-compat.md §6).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

ENTITLEMENTS_PATH = re.compile(r"^/v1/c/(?P<customer>[^/]+)/entitlements\.json$")
HOLD_SECONDS = 5.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    target: str  # path and query exactly as sent
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def line(self) -> str:
        """``"GET /v1/c/C/entitlements.json?resourceId=R"``, the golden ``apiRequests`` form."""
        return f"{self.method} {self.target}"

    @property
    def is_entitlements(self) -> bool:
        return self.method == "GET" and ENTITLEMENTS_PATH.match(self.path) is not None


class RecordingEdge:
    """Thread-based HTTP server on a free loopback port; use as a context manager."""

    def __init__(
        self, responses: Mapping[str, Any] | None = None, latency: float = 0.0, together: int = 0
    ) -> None:
        self.responses: dict[str, Any] = dict(responses or {})
        self.latency = latency
        self.together = together
        self.failure_status: int | None = None
        self.max_in_flight = 0
        self._in_flight = 0
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RecordingEdge:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()

    def __enter__(self) -> RecordingEdge:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def fail_with(self, status: int | None) -> None:
        """Answer every entitlements request with ``status`` (e.g. 503); ``None`` restores."""
        self.failure_status = status

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def entitlement_requests(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.is_entitlements]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def arrived(self) -> None:
        """A request is in flight; with ``together``, wait for the others (or HOLD_SECONDS)."""
        with self._changed:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self._in_flight >= self.together, HOLD_SECONDS)

    def answered(self) -> None:
        with self._changed:
            self._in_flight -= 1

    def record(self, request: RecordedRequest) -> tuple[int, Any]:
        """Store ``request`` and decide the answer: (status, JSON body)."""
        with self._lock:
            self._requests.append(request)
        if not request.is_entitlements:
            return 404, {"errors": [{"message": f"not served by the stub: {request.line}"}]}
        if self.failure_status is not None:
            return self.failure_status, {"message": "failure injected by the stub"}
        if request.line in self.responses:
            return 200, self.responses[request.line]
        return 404, {"message": f"no canned answer for {request.line}"}


def _handler_for(edge: RecordingEdge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            url = urlsplit(self.path)
            request = RecordedRequest(
                method=self.command,
                target=self.path,
                path=url.path,
                query=parse_qs(url.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            status, body = edge.record(request)
            edge.arrived()
            try:
                time.sleep(edge.latency)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            finally:
                edge.answered()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the recorded requests are the log."""

    return Handler
