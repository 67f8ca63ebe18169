"""``make run``: the whole local stack starts, answers, and Ctrl-C leaves nothing behind.

The test runs ``make run`` in its own process group as a terminal would, waits
for the banner, checks /readyz, the demo feed in Redis and a read through the
SDK command the banner prints, then sends SIGINT to the group (Ctrl-C) and
checks that every process that ran under it is gone and its ports are free.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import redis

from tests.support.servers import RedisServer, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Launched:
    """A running ``make run`` and everything it printed so far."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, args: list[str], env: dict[str, str]) -> Launched:
        """Run ``args`` in the repository, in a session of its own; a thread reads its output."""
        process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        launched = cls(process)
        launched.reader = threading.Thread(target=launched.read, daemon=True)
        launched.reader.start()
        return launched

    def close(self) -> None:
        """After the process ended: let the reader take the last lines, then close the pipe."""
        if self.reader is not None:
            self.reader.join(10)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, prefix: str) -> str | None:
        """The last line that starts with ``prefix`` (the banner comes after progress lines)."""
        found = [ln.strip() for ln in self.lines if ln.strip().startswith(prefix)]
        return found[-1] if found else None

    def banner_or_exit(self) -> str | None:
        if self.process.poll() is not None:
            return "exited"
        return self.line("sdk:")

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def port_of(url_or_address: str) -> int:
    match = re.search(r":(\d+)", url_or_address.split("//")[-1])
    assert match, url_or_address
    return int(match.group(1))


def listening(port: int) -> bool:
    return any(
        conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN
        for conn in psutil.net_connections("tcp")
    )


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


@pytest.fixture
def make_run() -> Iterator[tuple[Launched, str, int]]:
    """``make run`` with a Redis port nothing answers on, so it starts its own redis-server."""
    make = shutil.which("make")
    assert make, "make is not on PATH"
    prefix = f"devstack-{uuid.uuid4().hex[:8]}"
    worker_port = free_port()
    env = {
        **os.environ,
        "PORT": str(worker_port),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
        "ENVIRONMENT_PREFIX": prefix,
    }
    launched = Launched.start([make, "--no-print-directory", "run"], env)
    process = launched.process
    try:
        yield launched, prefix, worker_port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        launched.close()


@pytest.mark.slow
def test_make_run_serves_the_demo_and_ctrl_c_stops_everything(
    make_run: tuple[Launched, str, int],
) -> None:
    launched, prefix, worker_port = make_run
    sdk_line = wait_until(
        launched.banner_or_exit,
        timeout=240,
        interval=0.2,
        what="the banner of make run",
    )
    assert sdk_line is not None
    assert sdk_line != "exited", launched.output
    descendants = psutil.Process(launched.process.pid).children(recursive=True)
    started = {int(pid) for pid in re.findall(r"\(pid (\d+)\)", launched.output)}
    assert len(started) == 4, launched.output  # redis, sqs, edge-stub, worker
    assert started <= {p.pid for p in descendants}

    # Readiness and metrics on the worker's port.
    status, body = get(f"http://127.0.0.1:{worker_port}/readyz")
    assert status == 200, body
    assert json.loads(body)["status"] == "UP"
    status, metrics = get(f"http://127.0.0.1:{worker_port}/metrics")
    assert status == 200
    assert "persistent_cache_messages_processed_total" in metrics

    # The demo feed is in Redis (its own redis-server, on the port the banner names).
    redis_line = launched.line("redis ")
    assert redis_line is not None
    redis_port = port_of(redis_line.split()[1])
    client = redis.Redis(port=redis_port, decode_responses=True)
    try:
        assert client.exists(f"{prefix}:c_cus-demo-1", f"{prefix}:c_cus-demo-2") == 2
        usage = json.loads(client.get(f"{prefix}:c_cus-demo-1:f_feature-seats") or "{}")
        assert usage["currentUsage"] == 4
        credit = json.loads(client.get(f"{prefix}:c_cus-demo-1:credit_ai-tokens") or "{}")
        assert credit["currentUsage"] == 2600
        # Stigg's layout: raw ids, a resource scope, a usage key per metered entry.
        assert client.exists(f"{prefix}:c_acme:eu", f"{prefix}:c_acme:eu:r_site-1") == 2
        seats = json.loads(client.get(f"{prefix}:c_acme:eu:f_feature-seats") or "{}")
        assert seats == {"currentUsage": 12}
    finally:
        client.close()

    # The SDK command of the banner answers from the cache.
    read = subprocess.run(
        ["bash", "-c", sdk_line.removeprefix("sdk:").strip()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert read.returncode == 0, read.stderr
    assert "has_access=True" in read.stdout
    assert "current_usage=4" in read.stdout
    assert "source='cache'" in read.stdout

    ports = [worker_port, redis_port]
    for label in ("upstream", "queue"):
        found = launched.line(label)
        assert found is not None
        ports.append(port_of(found.split()[1]))
    assert all(listening(port) for port in ports), launched.output

    # Ctrl-C: SIGINT to the foreground process group, as a terminal sends it.
    os.killpg(launched.process.pid, signal.SIGINT)
    launched.process.wait(120)
    wait_until(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in descendants),
        timeout=30,
        what="every process started by make run to exit",
    )
    assert not [port for port in ports if listening(port)], launched.output
    for name in ("worker", "edge-stub", "sqs", "redis"):
        assert re.search(rf"^\s+{name}\s+stopped", launched.output, re.MULTILINE), name


@pytest.mark.slow
def test_existing_redis_is_used_and_left_running(redis_server: RedisServer) -> None:
    """Ctrl-C during startup stops what was started and nothing else (not the Redis it used)."""
    env = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_server.port)}
    launched = Launched.start([sys.executable, "-m", "cache_pipeline.dev.devstack"], env)
    process = launched.process
    try:
        sqs_line = wait_until(
            lambda: launched.line("sqs ") or process.poll(), timeout=60, what="the SQS server"
        )
        assert isinstance(sqs_line, str), launched.output
        assert launched.line("redis ") == f"redis      using 127.0.0.1:{redis_server.port}"
        sqs = psutil.Process(int(re.findall(r"\(pid (\d+)\)", sqs_line)[0]))
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(60) == 0, launched.output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        launched.close()
    wait_until(lambda: not sqs.is_running(), timeout=10, what="the SQS server to exit")
    assert "sqs        stopped" in launched.output
    assert redis_server.ping(), "the Redis it found is not its own to stop"


def test_missing_redis_server_is_named_with_the_fix(tmp_path: Path) -> None:
    """No Redis answering and no redis-server on PATH: one line says what and how."""
    env = {
        **os.environ,
        "PATH": str(tmp_path),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "cache_pipeline.dev.devstack"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "redis-server is not on PATH" in done.stdout
    assert "apt-get install redis-server" in done.stdout
