"""A loopback HTTP server whose /readyz answers with a status the test sets.

Used to run the image's and compose's healthcheck commands for real: they
must succeed on 200 and fail on 503.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StatusServer(ThreadingHTTPServer):
    """Answers every GET with ``self.status`` and a small JSON body."""

    status = 200
    paths: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        body = b'{"status":"UP"}' if self.server.status == 200 else b'{"status":"DOWN"}'
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read ``paths`` instead."""


@contextmanager
def status_server(port: int = 0) -> Iterator[StatusServer]:
    """Serve on 127.0.0.1:``port`` (0: a free port) until the block ends."""
    server = StatusServer(("127.0.0.1", port), _Handler)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
