"""Starting and stopping the consumer processes under test.

``worker`` is the real ``cache-pipeline worker`` console script; ``bare`` is the
bench's own bare loop (``python -m bench.bare_loop``). Each writes its output to
a log file in the run's directory.

``BENCH_WORKER_COMMAND`` (a command line) and ``BENCH_WORKER_CWD`` replace the
worker's command and directory, to measure another checkout of the code with
the same bench: ``BENCH_WORKER_CWD=/tmp/old BENCH_WORKER_COMMAND="python -m
cache_pipeline.cli worker"`` runs the code exported to ``/tmp/old``.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.services import REPO, aws_environment
from tests.support.servers import free_port

WORKER_COMMAND = (str(REPO / ".venv" / "bin" / "cache-pipeline"), "worker")
STOP_SECONDS = 30


def worker_cwd() -> Path:
    """The checkout whose worker runs: ``BENCH_WORKER_CWD``, else this one."""
    return Path(os.environ.get("BENCH_WORKER_CWD") or REPO)


def bytecode_warning() -> str | None:
    """A warning when the worker's venv has no compiled bytecode (``make install`` compiles it).

    Without ``.pyc`` files (and with PYTHONDONTWRITEBYTECODE=1, as on many machines) every
    start compiles the imports in memory: the worker's peak RSS is 5-8 MB above what the image,
    which compiles at build time, runs with.
    """
    cwd = worker_cwd()
    if any(cwd.glob(".venv/lib/python*/site-packages/redis/__pycache__/*.pyc")):
        return None
    return (
        f"bench: warning: {cwd}/.venv has no compiled bytecode, so peak RSS includes compiling"
        " every import; `make install` compiles it"
    )


@dataclass
class Consumer:
    """One running consumer process."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a grace period; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                print(f"{self.name}: still running {STOP_SECONDS}s after SIGTERM, killing it")
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def worker_available() -> bool:
    """True when the installed console script has a ``worker`` command."""
    return worker_unavailable() is None


def worker_unavailable() -> str | None:
    """Why ``cache-pipeline worker`` cannot be started here, or None when it can."""
    try:
        reply = subprocess.run(
            [WORKER_COMMAND[0], "--help"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{WORKER_COMMAND[0]} --help failed: {exc}"
    if any(line.split()[:1] == ["worker"] for line in reply.stdout.splitlines()):
        return None
    answer = (reply.stdout + reply.stderr).strip()[-500:]
    return f"{WORKER_COMMAND[0]} --help lists no worker command (exit {reply.returncode}): {answer}"


def start_worker(
    name: str,
    *,
    log_dir: Path,
    endpoint: str,
    queue_url: str,
    redis_host: str,
    redis_port: int,
    prefix: str,
    extra_env: dict[str, str] | None = None,
) -> Consumer:
    """``cache-pipeline worker`` on the given queue, Redis and prefix, BATCH_SIZE=10."""
    port = free_port()
    env = {
        **os.environ,
        **aws_environment(),
        "QUEUE_URL": queue_url,
        "SQS_ENDPOINT_URL": endpoint,
        "REDIS_HOST": redis_host,
        "REDIS_PORT": str(redis_port),
        "BATCH_SIZE": "10",
        "ENVIRONMENT_PREFIX": prefix,
        "PORT": str(port),
        "DISABLE_SENTRY": "1",
        **(extra_env or {}),
    }
    log = log_dir / f"{name}.log"
    command = shlex.split(os.environ.get("BENCH_WORKER_COMMAND", "")) or list(WORKER_COMMAND)
    cwd = worker_cwd()
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    return Consumer(name, process, log, port, env)


def start_bare(
    name: str,
    *,
    log_dir: Path,
    endpoint: str,
    queue_url: str,
    redis_host: str,
    redis_port: int,
    prefix: str,
    expect: int,
    writes: str,
    receive: int = 10,
) -> Consumer:
    """The bench's bare boto3 loop in its own process (``receive``: messages per receive)."""
    log = log_dir / f"{name}.log"
    args = [
        sys.executable,
        "-m",
        "bench.bare_loop",
        "--endpoint",
        endpoint,
        "--queue-url",
        queue_url,
        "--redis-host",
        redis_host,
        "--redis-port",
        str(redis_port),
        "--prefix",
        prefix,
        "--expect",
        str(expect),
        "--writes",
        writes,
        "--receive",
        str(receive),
    ]
    env = {**os.environ, **aws_environment()}
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return Consumer(name, process, log, None, env)
