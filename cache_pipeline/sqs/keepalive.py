"""Keep-alive HTTP(S) connections to one endpoint, one per thread, on ``http.client``.

urllib3's pool and response layers cost about 0.3 ms of CPU per request on a
2.5 GHz core, as much as the request itself; ``cache_pipeline.sqs.wire`` sends
its calls over these plain connections instead, with certificate verification
(``verify``: True for the CA bundle botocore ships, a CA bundle path, or False)
and connect and read timeouts, which a call may shorten (``post``'s ``timeout``).
``close`` shuts every connection down, so that a thread still waiting on one
(a hung endpoint) wakes at once with an error, and refuses calls from then on.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from botocore.httpsession import get_cert_path


class KeepAlive:
    """POST to one endpoint over a keep-alive connection of the calling thread."""

    def __init__(
        self, url: str, *, verify: bool | str, connect_timeout: float, read_timeout: float
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an HTTP endpoint: {url!r}")
        self._host = parts.hostname
        self._port = parts.port
        self._context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._context = ssl.create_default_context(
                cafile=get_cert_path(verify) if verify else None  # type: ignore[arg-type]
            )
            if not verify:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout: float | None = None
    ) -> tuple[int, bytes]:
        """Send one request; return the status and the whole body.

        ``timeout`` (seconds) caps the connect and read timeouts for this call.
        Raises ``OSError`` or ``http.client.HTTPException`` (the connection is
        then dropped; the next call opens a new one).
        """
        if self._closed:
            raise ConnectionAbortedError("the connections to this endpoint are closed")
        connection = self._connection(timeout)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            raise

    def close(self) -> None:
        """Close every connection, whichever thread opened it, and refuse calls from now on.

        Each socket is shut down first: a thread waiting on it for an answer wakes
        with an error at once (closing alone would leave it waiting).
        """
        with self._lock:
            self._closed = True
            connections, self._all = self._all, []
        for connection in connections:
            sock: Any = connection.sock
            if sock is not None:  # the plain socket's shutdown, also under TLS (SSLSocket's
                with contextlib.suppress(OSError):  # would drop its TLS state under the reader)
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
            connection.close()

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._open()
            self._local.connection = connection
            with self._lock:
                self._all.append(connection)
        read_timeout = self._read_timeout if timeout is None else min(timeout, self._read_timeout)
        if connection.sock is None:  # new, or closed after an error or a "Connection: close"
            connection.timeout = min(self._connect_timeout, read_timeout)
            connection.connect()
        sock: Any = connection.sock
        if sock.gettimeout() != read_timeout:
            sock.settimeout(read_timeout)
        return connection

    def _open(self) -> http.client.HTTPConnection:
        if self._context is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._connect_timeout, context=self._context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._connect_timeout)
