"""The worker image, built from the Dockerfile and run hardened against the suite's servers.

The image is built with podman on a base made here (``tests/support/image.py``),
then run read-only, as user 10001, with every capability dropped and
``no-new-privileges``, on the host network against the suite's redis-server and
SQS server. It must apply a stream, report UP, exit 0 on SIGTERM mid-batch
(frozen while it holds messages) within the shutdown bound, leave nothing in
flight and have written exactly what it deleted, and a second container must
finish the stream with nothing lost. The time of each phase is printed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from cache_pipeline import __version__
from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from cache_pipeline.ops.metrics import BASELINE_TYPES
from tests.support.image import TIMINGS, ULIMITS, Container, Podman, build_image, ensure_base
from tests.support.lock import locked_versions
from tests.support.servers import AWS_TEST_ENV, RedisServer, SqsServer, free_port, wait_until
from tests.support.shutdown import (
    LONG_VISIBILITY,
    give_back,
    hold_frozen,
    in_flight,
    take_leftover,
)
from tests.support.snapshot import read_state
from tests.support.worker import (
    expected_state,
    queue_depth,
    seed,
    send,
    stream,
    wait_for_state,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]

TAG = "localhost/cache-pipeline:test"
CUSTOMERS = 6
SHUTDOWN_BOUND_SECS = 15  # SIGTERM to exit (tests/test_shutdown.py: whatever hangs)


@dataclass
class Timings:
    """Seconds per phase, printed at the end of the module."""

    phases: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = now - self.started
        self.started = now

    def line(self) -> str:
        parts = ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in self.phases.items())
        return f"image test: {parts}; total {sum(self.phases.values()):.1f}s"


@dataclass
class Built:
    podman: Podman
    image: str
    timings: Timings


@pytest.fixture(scope="module")
def built(request: pytest.FixtureRequest) -> Iterator[Built]:
    timings = Timings()
    podman = Podman()
    base, how = ensure_base(podman)
    timings.mark(f"base ({how})")
    build_image(podman, base, TAG)
    timings.mark("build")
    built = Built(podman, TAG, timings)
    yield built
    size = podman.text("image", "inspect", "--format", "{{.Size}}", TAG)
    # printed in the terminal summary (conftest), where output capture does not hide it
    request.config.stash[TIMINGS] = f"{timings.line()}; image {int(size) / 1e6:.0f} MB"


@pytest.fixture
def client(redis_server: RedisServer, prefix: str) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.unlink(key)
    client.close()


class Worker:
    """A worker container and its HTTP surface on a free host port."""

    def __init__(self, built: Built, env: dict[str, str]) -> None:
        self.port = free_port()
        self.container = Container(built.podman, built.image, {**env, "PORT": str(self.port)})
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)

    def start(self) -> Worker:
        self.container.start()
        wait_until(self._consuming, timeout=60, what="the container consuming")
        return self

    def _consuming(self) -> bool:
        if not self.container.running():
            raise AssertionError(f"the container exited:\n{self.container.logs()}")
        body: dict[str, Any] = self.http.get("/readyz").json()
        return body["status"] == "UP" and int(body["consumers"]) > 0

    def metrics(self) -> dict[str, str]:
        text = self.http.get("/metrics").text
        return {family.name: family.type for family in text_string_to_metric_families(text)}

    def processed(self) -> float:
        text = self.http.get("/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "persistent_cache_messages_processed_total"
        )

    def signal(self, name: str) -> None:
        """Send the container's process a signal (STOP, CONT, TERM, ...)."""
        self.container.podman.run("kill", "--signal", name, self.container.name)

    def terminate_frozen(self, timeout: float = 60) -> tuple[int, float]:
        """SIGTERM the STOPped worker and let it run on; its exit code and the seconds taken."""
        started = time.monotonic()
        self.signal("TERM")
        self.signal("CONT")
        code = int(self.container.podman.text("wait", self.container.name, timeout=timeout))
        return code, time.monotonic() - started

    def close(self) -> None:
        self.http.close()
        self.container.remove()


@pytest.fixture
def worker_settings(
    sqs_server: SqsServer, redis_server: RedisServer, queue_url: str, prefix: str
) -> dict[str, str]:
    return {
        **AWS_TEST_ENV,
        "QUEUE_URL": queue_url,
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
        "ENVIRONMENT_PREFIX": prefix,
        "CACHE_UPDATE_POLICY": CacheUpdatePolicy.UPSERT.value,
        "API_HOST": "127.0.0.1",
        "BATCH_SIZE": "10",
        # long: a message the worker dropped on SIGTERM cannot pass for one it handed back
        "VISIBILITY_TIMEOUT": str(LONG_VISIBILITY),
        "DISABLE_SENTRY": "1",
    }


@pytest.fixture
def containers(built: Built, worker_settings: dict[str, str]) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.close()


def test_hardened_container_applies_the_stream_and_stops_cleanly_on_sigterm(
    built: Built,
    worker_settings: dict[str, str],
    containers: list[Worker],
    sqs_server: SqsServer,
    queue_url: str,
    client: redis.Redis,
    prefix: str,
) -> None:
    sqs: SQSClient = sqs_server.client()
    long = {"VisibilityTimeout": str(LONG_VISIBILITY)}
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes=long)  # type: ignore[arg-type]
    first = Worker(built, worker_settings)
    containers.append(first)
    first.start()
    built.timings.mark("start")
    assert_hardened(first.container)

    seeded, head = seed(CUSTOMERS), stream(CUSTOMERS, 100, seed_value=31)
    send(sqs_server, queue_url, seeded + head)
    wait_for_state(client, prefix, expected_state(prefix, seeded + head, CacheUpdatePolicy.UPSERT))
    assert first.http.get("/readyz").json()["status"] == "UP"
    exported = first.metrics()
    for name, kind in BASELINE_TYPES.items():
        # a parser names a counter's family without ``_total``; gauges keep their name
        assert kind in (exported.get(name), exported.get(name.removesuffix("_total"))), name
    built.timings.mark("apply 170")

    tail = stream(CUSTOMERS, 400, seed_value=32)
    sent = seeded + head + tail
    first.signal("STOP")  # a backlog: running, the worker keeps up with the sender
    send(sqs_server, queue_url, tail)
    held = hold_frozen(
        lambda: first.signal("STOP"),
        lambda: first.signal("CONT"),
        sqs_server,
        queue_url,
        left_at_most=len(tail) - 30,
    )
    code, seconds = first.terminate_frozen()
    print(f"\nimage: SIGTERM holding {held} message(s): exit {code} after {seconds:.1f} s")
    assert code == 0, first.container.logs()
    assert seconds < SHUTDOWN_BOUND_SECS, first.container.logs()
    assert in_flight(sqs_server, queue_url) == 0, first.container.logs()  # deleted or handed back
    leftover = take_leftover(sqs_server, queue_url, sent)
    deleted_state = expected_state(prefix, leftover.deleted, CacheUpdatePolicy.UPSERT)
    assert read_state(client, KeyLayout(prefix)) == deleted_state  # written iff deleted
    give_back(sqs_server, queue_url, leftover)
    built.timings.mark("sigterm")

    second = Worker(built, worker_settings)
    containers.append(second)
    second.start()
    wait_for_state(client, prefix, expected_state(prefix, sent, CacheUpdatePolicy.UPSERT))
    wait_until(lambda: queue_depth(sqs_server, queue_url) == 0, timeout=30, what="an empty queue")
    assert second.container.terminate() == 0, second.container.logs()
    built.timings.mark("drain")


# The image's distributions, and its environment markers (its Python is the base's, not ours).
INSTALLED = """
import importlib.metadata as m, json, os, platform, sys
markers = {
    "implementation_name": sys.implementation.name,
    "implementation_version": platform.python_version(),
    "os_name": os.name,
    "platform_machine": platform.machine(),
    "platform_python_implementation": platform.python_implementation(),
    "platform_release": platform.release(),
    "platform_system": platform.system(),
    "platform_version": platform.version(),
    "python_full_version": platform.python_version(),
    "python_version": ".".join(platform.python_version_tuple()[:2]),
    "sys_platform": sys.platform,
}
print(json.dumps({"markers": markers,
                  "installed": {d.metadata["Name"]: d.version for d in m.distributions()}}))
"""


def test_the_image_installs_exactly_the_locked_worker_set(built: Built) -> None:
    """uv.lock's worker extra and nothing else (no dev tools, no pip in the runtime venv)."""
    printed = json.loads(
        built.podman.text(
            "run",
            "--rm",
            "--network",
            "none",
            *ULIMITS,
            "--entrypoint",
            "python",
            built.image,
            "-c",
            INSTALLED,
        )
    )
    installed = {str(canonicalize_name(name)): v for name, v in printed["installed"].items()}
    assert installed.pop("cache-pipeline") == __version__
    locked = locked_versions(extras=("worker",), dev=False, environment=printed["markers"])
    assert installed == locked


def assert_hardened(container: Container) -> None:
    """Non-root, no capabilities, no privilege escalation, read-only but for /tmp."""
    status = dict(
        line.split(":\t", 1) for line in container.exec("cat", "/proc/1/status").splitlines()
    )
    assert status["Uid"].split()[:2] == ["10001", "10001"], status["Uid"]
    for capabilities in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[capabilities], 16) == 0, (capabilities, status[capabilities])
    assert status["NoNewPrivs"].strip() == "1"
    refused = container.podman.run("exec", container.name, "touch", "/opt/venv/x", check=False)
    assert refused.returncode != 0
    assert b"Read-only file system" in refused.stderr
    container.exec("touch", "/tmp/writable")
