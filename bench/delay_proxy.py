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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

READ_SIZE = 256 * 1024
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


class _DelayLine:
    """One direction of one connection: chunks leave at arrival + delay, in order."""

    def __init__(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        delay: float,
        counters: Counters,
        direction: str,
    ) -> None:
        self.source = source
        self.sink = sink
        self.delay = delay
        self.counters = counters
        self.direction = direction
        self.loop = asyncio.get_running_loop()
        self.queue: deque[tuple[float, bytes]] = deque()  # (due, chunk); b"" is EOF
        self.queued = 0
        self.ready = asyncio.Event()  # the queue has something
        self.room = asyncio.Event()  # the queue is under HIGH_WATER
        self.room.set()

    async def run(self) -> None:
        """Forward until the source ends and its EOF has gone down the line."""
        writer = asyncio.create_task(self._write())
        try:
            await self._read()
            await writer
        finally:
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer

    async def _read(self) -> None:
        while True:
            try:
                chunk = await self.source.read(READ_SIZE)
            except OSError:
                chunk = b""  # a reset source ends the line like an EOF
            self.queue.append((self.loop.time() + self.delay, chunk))
            self.ready.set()
            if not chunk:
                return
            self.queued += len(chunk)
            if self.queued > HIGH_WATER:
                self.counters.paused += 1
                self.room.clear()
                await self.room.wait()

    async def _write(self) -> None:
        counters = self.counters
        while True:
            if not self.queue:
                self.ready.clear()
                await self.ready.wait()
            due, chunk = self.queue[0]
            wait = due - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.queue.popleft()
            late = (self.loop.time() - due) * 1000
            counters.max_late_ms = max(counters.max_late_ms, late)
            if late > 1.0:
                counters.late_over_1ms += 1
            if self.sink.is_closing():
                return  # the other side is gone: nothing more can be delivered
            if not chunk:
                if self.sink.can_write_eof():
                    with contextlib.suppress(OSError):
                        self.sink.write_eof()
                return
            if self.direction == "up":
                counters.chunks_up += 1
                counters.bytes_up += len(chunk)
            else:
                counters.chunks_down += 1
                counters.bytes_down += len(chunk)
            self.sink.write(chunk)
            self.queued -= len(chunk)
            if self.queued <= HIGH_WATER:
                self.room.set()
            await self.sink.drain()


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
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.address: Address = listen

    async def start(self) -> Address:
        """Start listening; return the bound (host, port)."""
        self._server = await asyncio.start_server(self._serve, *self.listen, limit=READ_SIZE)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = (str(host), int(port))
        return self.address

    @property
    def port(self) -> int:
        return self.address[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:  # so close() can end it
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        counters = self.counters
        counters.connections += 1
        counters.active += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                target_reader, upstream = await asyncio.open_connection(
                    *self.target, limit=READ_SIZE
                )
            except OSError:
                counters.failed_connects += 1
                return
            lines = [
                asyncio.create_task(
                    _DelayLine(reader, upstream, self.delay_up, counters, "up").run()
                ),
                asyncio.create_task(
                    _DelayLine(target_reader, writer, self.delay_down, counters, "down").run()
                ),
            ]
            try:
                # Both directions end (EOF each way), or one fails (a reset peer) and the
                # connection goes: the finally closes both sides.
                await asyncio.wait(lines, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for line in lines:
                    line.cancel()
                await asyncio.gather(*lines, return_exceptions=True)
        except asyncio.CancelledError:
            # close() ends the connection. Returning normally (not cancelled) keeps
            # asyncio's stream callback (3.11) from logging the cancellation as an error.
            pass
        finally:
            counters.active -= 1
            for side in (writer, upstream):
                if side is not None:
                    side.close()
            for side in (writer, upstream):
                if side is not None:
                    with contextlib.suppress(OSError, asyncio.CancelledError):
                        await side.wait_closed()

    async def close(self) -> None:
        """Stop accepting, end every connection, wait until all are closed."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


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
