"""The services a run talks to: an SQS endpoint (LocalStack) and a redis-server.

The SQS endpoint comes from SQS_ENDPOINT_URL; ``SQS_ENDPOINT_URL=bench`` starts
``bench.sqs_server`` (in memory, fast) on a free port for the run; without it,
LocalStack is started with ``bench/localstack-host`` when that script
exists, otherwise the run stops with a message saying how to start it. Redis is
REDIS_HOST/REDIS_PORT when REDIS_HOST is set, otherwise a redis-server of the
bench's own on a free port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from botocore.config import Config

from cache_pipeline.errors import QueueUnavailable
from tests.support.servers import RedisServer, end_process, free_port, queue_at, wait_until

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

REPO = Path(__file__).resolve().parent.parent
LOCALSTACK_SCRIPT = REPO / "bench" / "localstack-host"
LOCALSTACK_ENDPOINT = "http://127.0.0.1:4566"
BENCH_SQS = "bench"  # SQS_ENDPOINT_URL=bench: the bench's own in-memory endpoint
AWS_DEFAULTS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class ServiceError(RuntimeError):
    """A service the bench needs is not there; the message says how to provide it."""


def aws_environment() -> dict[str, str]:
    """AWS variables for LocalStack/moto: the caller's own, or test defaults."""
    return {name: os.environ.get(name, value) for name, value in AWS_DEFAULTS.items()}


@contextmanager
def sqs_endpoint() -> Iterator[str]:
    """SQS_ENDPOINT_URL, or a LocalStack started here on 127.0.0.1:4566 (and stopped
    again on exit if this call started it)."""
    endpoint = os.environ.get("SQS_ENDPOINT_URL")
    if endpoint == BENCH_SQS:
        with bench_sqs_server() as url:
            yield url
        return
    if endpoint:
        yield endpoint
        return
    if not LOCALSTACK_SCRIPT.exists():
        raise ServiceError(_HOW_TO_START)
    running = subprocess.run(
        [str(LOCALSTACK_SCRIPT), "status"], capture_output=True, text=True, check=False
    )
    if '"sqs": "running"' in running.stdout or '"sqs": "available"' in running.stdout:
        yield LOCALSTACK_ENDPOINT  # someone else's: leave it running
        return
    print(f"SQS_ENDPOINT_URL is not set: starting LocalStack with {LOCALSTACK_SCRIPT} start")
    if subprocess.run([str(LOCALSTACK_SCRIPT), "start"], check=False).returncode != 0:
        raise ServiceError("LocalStack did not start; " + _HOW_TO_START)
    try:
        yield LOCALSTACK_ENDPOINT
    finally:
        subprocess.run([str(LOCALSTACK_SCRIPT), "stop"], check=False)


@contextmanager
def bench_sqs_server() -> Iterator[str]:
    """``python -m bench.sqs_server`` on a free port for the duration of the block."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.sqs_server", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    try:
        try:
            wait_until(lambda: _listening(port), what="bench.sqs_server")
        except AssertionError as exc:
            raise ServiceError(str(exc)) from None
        print(f"SQS_ENDPOINT_URL=bench: bench.sqs_server on http://127.0.0.1:{port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        end_process(process)


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


_HOW_TO_START = (
    "SQS_ENDPOINT_URL is not set: start LocalStack (`bench/localstack-host start`"
    " or `docker run -p 4566:4566 localstack/localstack`) and run with"
    " SQS_ENDPOINT_URL=http://127.0.0.1:4566"
)


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, decode_responses=True)


@contextmanager
def redis_target() -> Iterator[RedisTarget]:
    """REDIS_HOST/REDIS_PORT when REDIS_HOST is set, else an own redis-server."""
    host = os.environ.get("REDIS_HOST")
    if host:
        yield RedisTarget(host, int(os.environ.get("REDIS_PORT", "6379")))
        return
    server = RedisServer().start()
    try:
        yield RedisTarget("127.0.0.1", server.port)
    finally:
        server.stop()


class Queues:
    """Fresh queues on one SQS endpoint, deleted again on close."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.client = sqs_client(endpoint)
        self.created: list[str] = []

    def create(self, name: str) -> str:
        """Create a queue; return its URL on the configured endpoint's host."""
        url = self.client.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "60"})[
            "QueueUrl"
        ]
        url = on_endpoint(url, self.endpoint)
        self.created.append(url)
        return url

    def fill(self, url: str, bodies: Sequence[str]) -> None:
        """Send the bodies in order through the pipeline's SQS client."""
        with closing(queue_at(self.endpoint, url)) as queue:
            try:
                queue.send(bodies)
            except QueueUnavailable as exc:
                raise ServiceError(f"sending to {url} failed: {exc}") from None

    def depth(self, url: str) -> tuple[int, int]:
        """(visible, in flight) messages, as the queue reports them."""
        with closing(queue_at(self.endpoint, url)) as queue:
            depth = queue.depth()
        return depth.visible, depth.in_flight

    def wait_empty(self, url: str, timeout: float = 60.0) -> None:
        """Wait until the queue holds no message, visible or in flight."""
        deadline = time.monotonic() + timeout
        while self.depth(url) != (0, 0):
            if time.monotonic() > deadline:
                raise ServiceError(f"{url} still holds {self.depth(url)} after {timeout:.0f}s")
            time.sleep(0.2)

    def close(self) -> None:
        for url in self.created:
            try:
                self.client.delete_queue(QueueUrl=url)
            except Exception as exc:  # best effort: the endpoint may be gone already
                print(f"could not delete queue {url}: {exc}")
        self.created = []
        self.client.close()


def sqs_client(endpoint: str, config: Config | None = None) -> SQSClient:
    """An SQS client on LocalStack (or moto) at ``endpoint``, made by localstack-client."""
    from localstack_client.session import Session

    env = aws_environment()
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme != "http":
        raise ServiceError(f"SQS_ENDPOINT_URL={endpoint}: the bench expects a plain http endpoint")
    session = Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
        localstack_host=url.netloc,
    )
    default = Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=30)
    client: SQSClient = session.client("sqs", config=config or default)
    return client


def on_endpoint(queue_url: str, endpoint: str) -> str:
    """The queue URL with the endpoint's scheme and host (LocalStack answers with a
    ``*.localhost.localstack.cloud`` host that needs DNS this machine may not have)."""
    queue = urllib.parse.urlsplit(queue_url)
    base = urllib.parse.urlsplit(endpoint)
    return urllib.parse.urlunsplit((base.scheme, base.netloc, queue.path, "", ""))
