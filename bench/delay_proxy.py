"""A TCP proxy that adds a fixed one-way delay to every chunk, in each direction.

Production pays 10-30 ms per SQS call and 0.3-1 ms per Redis round trip; on
loopback both cost microseconds. ``DelayProxy`` sits in front of a server and
makes every byte arrive ``delay`` seconds later than it would, without limiting
throughput: each direction of a connection is a *delay line*. A reader task
stamps every chunk with its arrival time and queues it at once; a writer task
forwards each chunk at arrival + delay, in arrival order. Chunks in flight
overlap (a chunk that arrives 1 ms after another leaves 1 ms after it), so a
client that pipelines or opens many connections sees only the added latency,
never a serialized sleep per chunk. A round trip through the proxy (a Redis
PING, an HTTP request and its answer) costs 2 x the delay more than a direct one.

What is not modelled: connection setup is not delayed (keep-alive clients pay
it once), there is no bandwidth limit, no jitter and no loss. A half-close
(EOF) travels down the line like data, after the delay. When more than
``HIGH_WATER`` bytes wait in one line, reading from its source pauses until
the line drains (memory bound; far above what the bench sends).

Timers: asyncio's epoll selector rounds every timeout up to a whole
millisecond, which would turn a 0.25 ms delay into about 1 ms. The loop here
waits on the epoll descriptor with ``select()`` (microsecond timeouts) and
then collects the events with a zero-timeout epoll, so sub-millisecond delays
hold to within the kernel's timer slack (about 50 µs).

Library::

    with ThreadedProxy(("127.0.0.1", 6379), delay=0.00025) as proxy:
        redis.Redis(port=proxy.port).ping()

Command line (prints ``listening on HOST:PORT`` once ready; SIGTERM or Ctrl-C
stops it and prints its counters)::

    python -m bench.delay_proxy --listen 127.0.0.1:0 --target 127.0.0.1:6379 --delay-ms 0.25
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import re
import select
import selectors
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

HIGH_WATER = 16 * 2**20  # bytes queued in one delay line before its source is paused
STARTUP_SECONDS = 30.0
PR_SET_TIMERSLACK = 29

Address = tuple[str, int]


class PreciseEpollSelector(selectors.EpollSelector):
    """epoll for readiness, ``select()`` on the epoll descriptor for sub-millisecond timeouts."""

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout > 0:
            # The epoll descriptor is readable when events are pending: wait on it with
            # select()'s microsecond timeout, then collect what is there without waiting.
            with contextlib.suppress(InterruptedError):
                select.select([self.fileno()], [], [], timeout)
            timeout = 0
        return super().select(timeout)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """An event loop whose timers hold to microseconds (see the module docstring).

    Call it in the thread that runs the loop: it also sets that thread's timer slack
    to 1 ns (Linux; the default 50 µs would be added to every wake-up).
    """
    _tight_timer_slack()
    return asyncio.SelectorEventLoop(PreciseEpollSelector())


def _tight_timer_slack() -> None:
    """prctl(PR_SET_TIMERSLACK, 1) for the calling thread; nothing where it is not Linux."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)


@dataclass
class Counters:
    """What a proxy has forwarded, and how late its delay lines ran."""

    connections: int = 0
    active: int = 0
    failed_connects: int = 0
    chunks_up: int = 0
    chunks_down: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    max_late_ms: float = 0.0  # worst time a chunk left after arrival + delay
    late_over_1ms: int = 0  # chunks that left more than 1 ms after arrival + delay
    paused: int = 0  # times a line held more than HIGH_WATER bytes

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


class _Line:
    """One direction of one connection: chunks leave at arrival + delay, in arrival order.

    No task per chunk: arrivals go into a deque, and one timer at a time (the oldest
    chunk's due time) writes every chunk that is due, so a burst costs one wake-up.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, delay: float, counters: Counters, up: bool
    ) -> None:
        self.loop = loop
        self.delay = delay
        self.counters = counters
        self.up = up
        self.source: asyncio.Transport | None = None  # paused while the line is too full
        self.sink: asyncio.Transport | None = None
        self.queue: deque[tuple[float, bytes]] = deque()  # (due, chunk); b"" is EOF
        self.queued = 0
        self.timer: asyncio.TimerHandle | None = None
        self.ended = False  # the EOF went out
        self.full = False  # paused for HIGH_WATER
        self.blocked = False  # paused because the sink's buffer is full
        self.on_end: Callable[[], None] = lambda: None

    def push(self, chunk: bytes) -> None:
        due = self.loop.time() + self.delay
        self.queue.append((due, chunk))
        self.queued += len(chunk)
        if self.timer is None and self.sink is not None:
            self.timer = self.loop.call_at(due, self.flush)
        if self.queued > HIGH_WATER and not self.full:
            self.full = True
            self.counters.paused += 1
            self._pause(True)

    def connected(self, sink: asyncio.Transport) -> None:
        """The sink exists (the target answered the connect): start delivering."""
        self.sink = sink
        if self.queue and self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        sink = self.sink
        if sink is None or sink.is_closing():
            self.queue.clear()
            return
        now = self.loop.time()
        counters = self.counters
        out: list[bytes] = []
        eof = False
        while self.queue and self.queue[0][0] <= now:
            due, chunk = self.queue.popleft()
            late = (now - due) * 1000
            if late > counters.max_late_ms:
                counters.max_late_ms = late
            if late > 1.0:
                counters.late_over_1ms += 1
            if not chunk:
                eof = True
                break
            out.append(chunk)
        if out:
            data = b"".join(out)
            self.queued -= len(data)
            if self.up:
                counters.chunks_up += len(out)
                counters.bytes_up += len(data)
            else:
                counters.chunks_down += len(out)
                counters.bytes_down += len(data)
            sink.write(data)
        if eof:
            self.ended = True
            if sink.can_write_eof():
                sink.write_eof()
            self.on_end()
            return
        if self.full and self.queued <= HIGH_WATER:
            self.full = False
            self._pause(False)
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def sink_blocked(self, blocked: bool) -> None:
        """The sink's write buffer went over (or back under) its high-water mark."""
        self.blocked = blocked
        self._pause(blocked)

    def _pause(self, pause: bool) -> None:
        source = self.source
        if source is None or source.is_closing():
            return
        if pause:
            source.pause_reading()
        elif not self.full and not self.blocked:
            source.resume_reading()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it reads goes into ``outgoing``."""

    def __init__(self, connection: _Connection, outgoing: _Line, incoming: _Line) -> None:
        self.connection = connection
        self.outgoing = outgoing  # reads from this socket, after the delay to the other
        self.incoming = incoming  # writes into this socket
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.outgoing.source = transport
        self.incoming.connected(transport)

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.push(b"")
        return True  # stay open: the other direction may still be talking (half-close)

    def pause_writing(self) -> None:
        self.incoming.sink_blocked(True)

    def resume_writing(self) -> None:
        self.incoming.sink_blocked(False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection.close()


class _Connection:
    """A client connection and its connection to the target, joined by two delay lines."""

    def __init__(self, proxy: DelayProxy, loop: asyncio.AbstractEventLoop) -> None:
        self.proxy = proxy
        self.up = _Line(loop, proxy.delay_up, proxy.counters, up=True)
        self.down = _Line(loop, proxy.delay_down, proxy.counters, up=False)
        self.up.on_end = self.down.on_end = self._maybe_done
        self.client = _Side(self, outgoing=self.up, incoming=self.down)
        self.target = _Side(self, outgoing=self.down, incoming=self.up)
        self.closed = False

    def _maybe_done(self) -> None:
        if self.up.ended and self.down.ended:
            self.close()

    def close(self) -> None:
        """Close both sockets (after both EOFs, on a reset, or when the proxy closes)."""
        if self.closed:
            return
        self.closed = True
        self.up.cancel()
        self.down.cancel()
        for side in (self.client, self.target):
            if side.transport is not None:
                side.transport.close()
        self.proxy._connections.discard(self)
        self.proxy.counters.active -= 1


class DelayProxy:
    """Listens on ``listen`` and forwards each connection to ``target`` through two delay lines.

    ``delay_up`` applies to bytes from the client to the target, ``delay_down`` to
    the answers (seconds). Run inside an event loop: ``await start()``, ``await close()``.
    """

    def __init__(
        self,
        target: Address,
        *,
        delay_up: float,
        delay_down: float | None = None,
        listen: Address = ("127.0.0.1", 0),
    ) -> None:
        if delay_up < 0 or (delay_down is not None and delay_down < 0):
            raise ValueError("a delay cannot be negative")
        self.target = target
        self.delay_up = delay_up
        self.delay_down = delay_up if delay_down is None else delay_down
        self.listen = listen
        self.counters = Counters()
        self.address: Address = listen
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._connecting: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self.address[1]

    async def start(self) -> Address:
        """Start listening; return the bound (host, port)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accepted, *self.listen)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = (str(host), int(port))
        return self.address

    def _accepted(self) -> _Side:
        """A client connected: connect to the target; what the client sends meanwhile
        waits in the line (its delay counts from arrival, as for every chunk)."""
        loop = asyncio.get_running_loop()
        connection = _Connection(self, loop)
        self._connections.add(connection)
        self.counters.connections += 1
        self.counters.active += 1
        task = loop.create_task(self._connect(connection))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return connection.client

    async def _connect(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: connection.target, *self.target)
        except OSError:
            self.counters.failed_connects += 1
            connection.close()

    async def close(self) -> None:
        """Stop accepting, close every connection, wait until the listener is closed."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connecting):
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the transports finish closing


class ThreadedProxy:
    """A ``DelayProxy`` on its own event loop in a daemon thread, for synchronous code.

    ``delay`` and ``delay_down`` are in seconds, as for ``DelayProxy``.
    """

    def __init__(
        self,
        target: Address,
        delay: float,
        delay_down: float | None = None,
        listen: Address = ("127.0.0.1", 0),
    ) -> None:
        self.proxy = DelayProxy(target, delay_up=delay, delay_down=delay_down, listen=listen)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._closed = False

    @property
    def address(self) -> Address:
        return self.proxy.address

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def counters(self) -> Counters:
        return self.proxy.counters

    def start(self) -> ThreadedProxy:
        self._thread.start()
        if not self._ready.wait(STARTUP_SECONDS) or self._loop is None:
            raise RuntimeError("the delay proxy's event loop did not start")
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(STARTUP_SECONDS)
        return self

    def _run(self) -> None:
        loop = self._loop = new_event_loop()  # in this thread: its timer slack is set here
        asyncio.set_event_loop(loop)
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def close(self) -> None:
        """End every connection and the loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.proxy.close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    def __enter__(self) -> ThreadedProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


REPO = Path(__file__).resolve().parent.parent
COUNTERS_PREFIX = "counters "
READY_PREFIX = "listening on "


class ProxyProcess:
    """``python -m bench.delay_proxy`` as a child process (its own CPU, its own GIL)."""

    def __init__(self, name: str, target: Address, delay_ms: float, log: Path) -> None:
        self.name = name
        self.target = target
        self.delay_ms = delay_ms
        self.log = log
        self.counters: dict[str, Any] = {}
        command = [
            sys.executable,
            "-m",
            "bench.delay_proxy",
            "--listen",
            "127.0.0.1:0",
            "--target",
            f"{target[0]}:{target[1]}",
            "--delay-ms",
            repr(delay_ms),
        ]
        with log.open("wb") as errors:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=errors, cwd=REPO
            )
        self.address = self._wait_ready()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def endpoint(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    def _wait_ready(self) -> Address:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_SECONDS)
        line = self.process.stdout.readline().decode() if ready else ""
        match = re.match(READY_PREFIX + r"(\S+):(\d+)", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"delay proxy {self.name} did not start: {line!r}; see {self.log}")
        return match.group(1), int(match.group(2))

    def stop(self) -> dict[str, Any]:
        """SIGTERM; return the counters the proxy printed on its way out."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate(timeout=5)
        for line in out.decode(errors="replace").splitlines():
            if line.startswith(COUNTERS_PREFIX):
                self.counters = json.loads(line.removeprefix(COUNTERS_PREFIX))
        return self.counters


def _address(value: str) -> Address:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


async def _serve_until_signal(proxy: DelayProxy) -> None:
    host, port = await proxy.start()
    print(f"{READY_PREFIX}{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await proxy.close()
    print(COUNTERS_PREFIX + json.dumps(proxy.counters.as_dict()), flush=True)


@click.command()
@click.option("--listen", default="127.0.0.1:0", show_default=True, help="HOST:PORT (0: any port)")
@click.option("--target", required=True, help="HOST:PORT to forward to")
@click.option(
    "--delay-ms", type=click.FloatRange(min=0), required=True, help="one-way delay, each direction"
)
@click.option(
    "--down-delay-ms",
    type=click.FloatRange(min=0),
    help="delay of the answers (target to client) when it differs from --delay-ms",
)
def main(listen: str, target: str, delay_ms: float, down_delay_ms: float | None) -> None:
    """Forward TCP connections to --target, each chunk --delay-ms later in each direction."""
    proxy = DelayProxy(
        _address(target),
        delay_up=delay_ms / 1000,
        delay_down=None if down_delay_ms is None else down_delay_ms / 1000,
        listen=_address(listen),
    )
    loop = new_event_loop()
    try:
        loop.run_until_complete(_serve_until_signal(proxy))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
