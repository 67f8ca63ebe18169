"""Real services for the test suite: redis-server and SQS-compatible servers.

Each is started on a free loopback port by the suite itself and stopped by pid.
A missing binary is a failure that says how to install it, never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self, TypeVar

import boto3
import redis
from botocore.credentials import ReadOnlyCredentials

from cache_pipeline.sqs.client import SqsQueue
from cache_pipeline.sqs.wire import DefaultChain, SignedCalls

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # the service may still be starting
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what or predicate}: {last_error}"
    )


def end_process(process: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
    """SIGTERM a child still running, and SIGKILL it if it is not gone after ``grace`` seconds."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def kill_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a child still running and reap it."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait(10)


def require_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not on PATH: {hint}")
    return path


class RedisServer:
    """A redis-server process of our own, on a free port, without persistence."""

    def __init__(self, extra_args: Sequence[str] = (), port: int | None = None) -> None:
        self.binary = require_binary(
            "redis-server", "install it with `apt-get install redis-server`"
        )
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> RedisServer:
        """Start redis-server; with ``wait``, return once it answers (not while it loads)."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if wait:
            wait_until(self._ready, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.dir / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited: {log}")
        return self.ping()

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, **kwargs)  # type: ignore[arg-type]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the data is gone (no persistence)."""
        kill_process(self.process)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        end_process(self.process)
        self.process = None

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()


class SqsServer:
    """moto's HTTP server, speaking the real SQS wire protocol, in its own process."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkdtemp(prefix="sqs-test-")) / "log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    name = "moto server"
    extra_env: dict[str, str] = {}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def start(self) -> Self:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **AWS_TEST_ENV, **self.extra_env},
                cwd=ROOT,
            )
        wait_until(self._ready, timeout=30, what=f"{self.name} on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def client(self) -> SQSClient:
        """A boto3 client: for creating queues and for looking behind the pipeline's client."""
        return boto3.client(  # type: ignore[call-overload,no-any-return]
            "sqs", endpoint_url=self.endpoint, **AWS_TEST_CLIENT_ARGS
        )

    def queue(
        self, queue_url: str, *, dead_letter_url: str | None = None, visibility_timeout: int = 30
    ) -> SqsQueue:
        """The pipeline's own client of a queue on this server."""
        return queue_at(
            self.endpoint,
            queue_url,
            dead_letter_url=dead_letter_url,
            visibility_timeout=visibility_timeout,
        )

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self) -> None:
        end_process(self.process)
        self.process = None


class AuthenticatingSqsServer(SqsServer):
    """moto checking every request's signature and access key, as SQS does (moto's own
    switch: no request of an unknown key is let in)."""

    name = "moto server (authenticating)"
    extra_env = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}


class StrictSqsServer(SqsServer):
    """``bench.sqs_server``: refuses what SQS refuses in a message, as SQS does.

    moto neither counts message attributes into a message's size nor checks
    their number or characters; SQS does, and parking poison in the dead-letter
    queue depends on how it refuses (``cache_pipeline.sqs.client``).
    """

    name = "bench.sqs_server"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.sqs_server", "--port", str(self.port)]


ROOT = Path(__file__).resolve().parents[2]
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
AWS_TEST_CLIENT_ARGS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


class StaticCredentials(DefaultChain):
    """Fixed credentials (the suite's test keys unless named), whatever the environment holds."""

    def __init__(
        self,
        key: str = AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        secret: str = AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
    ) -> None:
        super().__init__()
        self._keys = ReadOnlyCredentials(key, secret, None)

    def frozen(self) -> ReadOnlyCredentials:
        return self._keys

    def forget(self) -> None:
        return


def queue_at(
    endpoint: str,
    queue_url: str,
    *,
    dead_letter_url: str | None = None,
    visibility_timeout: int = 30,
    credentials: StaticCredentials | None = None,
) -> SqsQueue:
    """``SqsQueue`` of ``queue_url`` at ``endpoint``, signed with the suite's test credentials."""
    calls = SignedCalls(endpoint, "us-east-1", chain=credentials or StaticCredentials())
    return SqsQueue(
        calls, queue_url, dead_letter_url=dead_letter_url, visibility_timeout=visibility_timeout
    )
