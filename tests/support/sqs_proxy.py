"""An HTTP proxy in front of the SQS server that answers chosen operations with an error.

Every request is forwarded to the real server unchanged, except those whose
``X-Amz-Target`` names an operation in ``faults``: they get the error SQS
itself sends (``ThrottlingException``, 400, in the JSON protocol), and never
reach the server. ``faults`` can change while the worker runs.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

THROTTLED = (400, "com.amazonaws.sqs#ThrottlingException", "Rate exceeded")


class SqsFaultProxy:
    """Forwards to ``upstream`` (an http:// endpoint); ``faults`` maps operation → error."""

    def __init__(self, upstream: str) -> None:
        self.faults: dict[str, tuple[int, str, str]] = {}
        self.refused: dict[str, int] = {}
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                fault = proxy.faults.get(operation)
                if fault is not None:
                    proxy.refused[operation] = proxy.refused.get(operation, 0) + 1
                    status, code, message = fault
                    self._answer(status, json.dumps({"__type": code, "message": message}).encode())
                    return
                upstream_connection = http.client.HTTPConnection(
                    target.hostname or "127.0.0.1", target.port, timeout=30
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    upstream_connection.request("POST", self.path, body=body, headers=headers)
                    response = upstream_connection.getresponse()
                    self._answer(response.status, response.read())
                except (OSError, http.client.HTTPException):  # the server went away: so do we
                    self.close_connection = True
                finally:
                    upstream_connection.close()

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> SqsFaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
