"""Running the HTTP surface with uvicorn: beside the worker (a thread) or alone.

uvicorn installs no log handlers of its own (``log_config=None``): its records go
through the JSON sink of ``cache_pipeline.ops.logs``. Access logs are off, so probes
and scrapes do not flood the output.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from cache_pipeline.api.app import create_app
from cache_pipeline.config import Settings
from cache_pipeline.ops.error_reporting import configure_sentry
from cache_pipeline.ops.health import HealthState
from cache_pipeline.ops.logs import configure_logging
from cache_pipeline.store.connection import connect

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class ServerHandle:
    """A uvicorn server running in a daemon thread; ``stop()`` shuts it down."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when PORT was 0)."""
        for listener in self.server.servers:
            for sock in listener.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout)


def uvicorn_config(settings: Settings, health: HealthState, redis_client: Any) -> uvicorn.Config:
    """The uvicorn configuration of the pod's HTTP surface."""
    return uvicorn.Config(
        create_app(settings, health, redis_client),
        host=settings.api_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )


def serve_in_thread(settings: Settings, health: HealthState, redis_client: Any) -> ServerHandle:
    """Start serving in a daemon thread; returns once the port is listening.

    Raises ``RuntimeError`` when the server cannot start (for example, the port is taken).
    """
    server = uvicorn.Server(uvicorn_config(settings, health, redis_client))
    thread = threading.Thread(target=_run, args=(server,), name="http-surface", daemon=True)
    thread.start()
    handle = ServerHandle(server, thread)
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            handle.stop()
            where = f"{settings.api_host}:{settings.port}"
            raise RuntimeError(f"the HTTP surface could not listen on {where}")
        thread.join(0.02)
    return handle


def _run(server: uvicorn.Server) -> None:
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind; serve_in_thread reports it
        return


def serve_forever(settings: Settings, health: HealthState, redis_client: Any) -> None:
    """Serve in the calling thread until SIGINT or SIGTERM."""
    uvicorn.Server(uvicorn_config(settings, health, redis_client)).run()


def run_standalone(settings: Settings) -> None:
    """``cache-pipeline api``: logging, Sentry, then the HTTP surface alone until a signal.

    No consumer runs in this process, so /readyz answers 503 with consumers 0.
    """
    configure_logging(settings)
    configure_sentry(settings, celery=False, fastapi=True)
    client = connect(settings)
    try:
        serve_forever(settings, HealthState(), client)
    finally:
        client.close()
