"""A TCP proxy on loopback that adds latency and cuts connections, for fault tests.

It runs an asyncio event loop in a thread of the test process. Point a client at
``proxy.port`` instead of the server's port, then:

* ``proxy.latency = 0.3`` delays every chunk, in both directions, by 0.3 s;
* ``proxy.cut()`` drops every open connection and refuses new ones (accepted,
  then closed at once, as a broken network path looks to a client) until
  ``proxy.heal()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any

CHUNK = 65536


class ChaosProxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:target_port with injected faults."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.latency = 0.0
        self.connections_seen = 0
        self._cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> ChaosProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def stop(self) -> None:
        """Close the listener and every connection, then end the thread."""
        if not self._thread.is_alive():
            return
        self._run(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones until ``heal()``."""
        self._cut = True
        self._run(self._drop_all())

    def heal(self) -> None:
        self._cut = False

    @property
    def open_connections(self) -> int:
        return len(self._writers)

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        if self._server is not None:
            await self._server.wait_closed()
        if self._handlers:  # aborted transports end every pipe on their own
            await asyncio.wait(self._handlers, timeout=5)

    async def _drop_all(self) -> None:
        writers = list(self._writers)
        self._writers.clear()
        for writer in writers:
            _abort(writer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_seen += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        if self._cut:
            _abort(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            _abort(writer)
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )
        for side in (writer, upstream_writer):
            self._writers.discard(side)
            _abort(side)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not writer.is_closing():
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.latency:
                    await asyncio.sleep(self.latency)
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        finally:
            _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once (RST when possible), as a cut network path looks to the peer."""
    with contextlib.suppress(Exception):
        writer.transport.abort()
