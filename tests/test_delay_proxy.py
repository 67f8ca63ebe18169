"""The bench's delay proxy forwards bytes intact and in order, both ways, and delays them.

Real loopback sockets against a small threaded server. Only lower bounds on the
added delay are asserted (a busy machine may add more, never less).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.delay_proxy import ProxyProcess, ThreadedProxy

DELAY = 0.02  # seconds, each way


class Server:
    """A loopback TCP server running ``handle(conn)`` in a thread per connection."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.handle = handle
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.handle(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        self.accepter.join(5)
        for thread in self.threads:
            thread.join(5)


def echo(conn: socket.socket) -> None:
    """Send back everything, until EOF; then close."""
    while data := conn.recv(65536):
        conn.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[Server]:
    server = Server(echo)
    yield server
    server.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = sock.recv(min(65536, size - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_bytes_come_back_intact_and_in_order_through_both_directions(
    echo_server: Server,
) -> None:
    """Many small writes and a large one, sent while the answers are read: same bytes back.

    The 50,000 writes are chunks in flight at once: a proxy that slept the delay per
    chunk would need 50,000 x 20 ms and hit the suite's timeout.
    """
    payload = b"".join(i.to_bytes(4, "big") for i in range(50_000)) + os.urandom(3 * 2**20)
    with ThreadedProxy(("127.0.0.1", echo_server.port), DELAY) as proxy, _connect(proxy.port) as s:

        def send() -> None:
            for start in range(0, 200_000, 4):  # 50,000 tiny writes: many chunks in flight
                s.sendall(payload[start : start + 4])
            s.sendall(payload[200_000:])
            s.shutdown(socket.SHUT_WR)  # the EOF travels through too

        sender = threading.Thread(target=send)
        sender.start()
        back = _read_to_eof(s)
        sender.join(30)
        counters = proxy.counters
    assert back == payload
    assert counters.bytes_up == counters.bytes_down == len(payload)


def test_a_round_trip_costs_at_least_twice_the_delay_more(echo_server: Server) -> None:
    with ThreadedProxy(("127.0.0.1", echo_server.port), DELAY) as proxy, _connect(proxy.port) as s:
        for _ in range(5):
            start = time.monotonic()
            s.sendall(b"ping")
            assert _read_exactly(s, 4) == b"ping"
            assert time.monotonic() - start >= 2 * DELAY


def test_each_direction_has_its_own_delay() -> None:
    """The server stamps when the request arrived: the way up alone takes the up delay."""
    arrived: list[float] = []

    def stamp(conn: socket.socket) -> None:
        while conn.recv(1):
            arrived.append(time.monotonic())
            conn.sendall(b"!")

    server = Server(stamp)
    try:
        with (
            ThreadedProxy(("127.0.0.1", server.port), 0.03, delay_down=0.0) as proxy,
            _connect(proxy.port) as s,
        ):
            sent = time.monotonic()
            s.sendall(b"?")
            assert s.recv(1) == b"!"
            back = time.monotonic()
    finally:
        server.close()
    assert arrived[0] - sent >= 0.03
    assert back - sent >= 0.03


def test_the_answer_direction_is_delayed_too() -> None:
    """A server that speaks first (a greeting): only the way down is crossed."""

    def greet(conn: socket.socket) -> None:
        conn.sendall(b"hello")
        conn.recv(1)  # until the client goes

    server = Server(greet)
    try:
        with (
            ThreadedProxy(("127.0.0.1", server.port), 0.0, delay_down=0.03) as proxy,
            _connect(proxy.port) as s,
        ):
            connected = time.monotonic()
            assert _read_exactly(s, 5) == b"hello"
            assert time.monotonic() - connected >= 0.03
    finally:
        server.close()


def test_many_connections_at_once(echo_server: Server) -> None:
    errors: list[BaseException] = []

    def client(proxy_port: int, n: int) -> None:
        try:
            with _connect(proxy_port) as s:
                for i in range(20):
                    message = f"{n}:{i};".encode() * 50
                    s.sendall(message)
                    assert _read_exactly(s, len(message)) == message
        except BaseException as exc:
            errors.append(exc)

    with ThreadedProxy(("127.0.0.1", echo_server.port), 0.005) as proxy:
        threads = [threading.Thread(target=client, args=(proxy.port, n)) for n in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert proxy.counters.connections == 40
    assert errors == []


def test_close_ends_open_connections_and_a_refused_target_closes_the_client(
    echo_server: Server,
) -> None:
    proxy = ThreadedProxy(("127.0.0.1", echo_server.port), DELAY).start()
    with _connect(proxy.port) as s:
        s.sendall(b"x")
        assert _read_exactly(s, 1) == b"x"
        proxy.close()
        assert _read_to_eof(s) == b""  # the proxy closed the connection
    proxy.close()  # idempotent

    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        dead = int(unused.getsockname()[1])
    with ThreadedProxy(("127.0.0.1", dead), DELAY) as nowhere, _connect(nowhere.port) as s:
        assert _read_to_eof(s) == b""
        assert nowhere.counters.failed_connects == 1


def test_the_command_line_proxy(echo_server: Server, tmp_path: Path) -> None:
    """``python -m bench.delay_proxy``: prints its port, forwards, prints its counters on exit."""
    proxy = ProxyProcess("echo", ("127.0.0.1", echo_server.port), 20.0, tmp_path / "proxy.log")
    try:
        with _connect(proxy.port) as s:
            start = time.monotonic()
            s.sendall(b"through a process")
            assert _read_exactly(s, 17) == b"through a process"
            assert time.monotonic() - start >= 0.04
    finally:
        counters = proxy.stop()
    assert counters["connections"] == 1
    assert counters["bytes_up"] == counters["bytes_down"] == 17
    assert proxy.process.returncode == 0
