"""The local stack, part by part: Redis, SQS (moto), the edge stub, the worker, a demo feed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import urllib.request
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import boto3
import redis

from cache_pipeline.config import Settings, load_settings
from cache_pipeline.dev.devstack.processes import (
    Child,
    StackError,
    free_port,
    port_open,
    spawn,
    wait_for,
)
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.connection import connect

QUEUE_NAME = "cache-pipeline"
DLQ_NAME = "cache-pipeline-dlq"
MAX_RECEIVE_COUNT = 5
AWS_LOCAL = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
# Settings of the stack that the environment may override.
DEFAULTS = {
    "ENVIRONMENT_PREFIX": "development",
    "CACHE_UPDATE_POLICY": "UPSERT",
    "SERVER_API_KEY": "local-development-key",
    "LOG_LEVEL": "info",
    "BATCH_SIZE": "10",
}
STOP_GRACE = {"worker": 40.0}  # seconds; every other part gets 5
CLI = [sys.executable, "-m", "cache_pipeline"]  # the operator's commands
DEV = [sys.executable, "-m", "cache_pipeline.dev"]  # publish, edge-stub


def missing_prerequisites(need_redis_server: bool) -> list[str]:
    """What the stack needs and this machine lacks, each with how to get it."""
    missing = []
    if need_redis_server and shutil.which("redis-server") is None:
        missing.append(
            "redis-server is not on PATH and no Redis answers at REDIS_HOST:REDIS_PORT: "
            "install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: "
            "`brew install redis`) or point REDIS_HOST/REDIS_PORT at a running Redis"
        )
    for module, package in (("moto", "moto[server]"), ("celery", "celery"), ("uvicorn", "uvicorn")):
        if find_spec(module) is None:
            missing.append(f"{package} is not installed in {sys.prefix}: run `make install`")
    return missing


def redis_answers(settings: Settings) -> bool:
    """Whether the Redis of these settings answers a PING."""
    client = connect(settings.model_copy(update={"redis_timeout_secs": 0.5}))
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def http_ok(url: str) -> bool:
    """Whether GET ``url`` answers 2xx."""
    with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 (loopback URL of ours)
        return 200 <= int(reply.status) < 300


def preferred_port(wanted: int) -> int:
    """``wanted`` when nothing listens there, else any free port."""
    return free_port() if port_open(wanted) else wanted


@dataclass
class Stack:
    """Everything the stack started, and the settings its parts share."""

    run_dir: Path
    demo_dir: Path
    settings: Settings
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    redis_started: bool = False

    def child_env(self) -> dict[str, str]:
        return {**os.environ, **AWS_LOCAL, **self.env}

    def start(self, name: str, args: list[str]) -> Child:
        child = spawn(name, args, self.child_env(), self.run_dir)
        self.children.append(child)
        say(f"  {name:<10} started (pid {child.pid}); log {child.log}")
        return child

    def stop(self) -> None:
        """Stop every child, last started first, each with its process group."""
        while self.children:
            child = self.children.pop()
            child.stop(STOP_GRACE.get(child.name, 5.0))
            say(f"  {child.name:<10} stopped (pid {child.pid})")

    # -- parts ---------------------------------------------------------------

    def use_redis(self) -> None:
        """An existing Redis at REDIS_HOST:REDIS_PORT, or a redis-server of our own."""
        if redis_answers(self.settings):
            self.env |= {
                "REDIS_HOST": self.settings.redis_host,
                "REDIS_PORT": str(self.settings.redis_port),
            }
            say(f"  redis      using {self.settings.redis_host}:{self.settings.redis_port}")
            return
        port = free_port()
        data = self.run_dir / "redis"
        data.mkdir()
        args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        child = self.start("redis", [*args, "--appendonly", "no", "--dir", str(data)])
        self.redis_started = True
        self.env |= {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port), "REDIS_DB": "0"}
        self.env |= {"REDIS_TLS": "0", "REDIS_CLUSTER": "0", "REDIS_USERNAME": ""}
        self.env |= {"REDIS_PASSWORD": ""}
        own = self.settings.model_copy(
            update={"redis_host": "127.0.0.1", "redis_port": port, "redis_password": None}
        )
        wait_for(lambda: redis_answers(own), timeout=20, what="redis-server", child=child)

    def start_sqs(self) -> None:
        """moto's SQS server, with the queue and its dead-letter queue."""
        port = free_port()
        child = self.start(
            "sqs", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        )
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: port_open(port), timeout=60, what="the SQS server", child=child)
        queue_url, dlq_url = create_queues(endpoint)
        self.env |= {
            "SQS_ENDPOINT_URL": endpoint,
            "QUEUE_URL": queue_url,
            "DEAD_LETTER_QUEUE_URL": dlq_url,
        }

    def start_edge_stub(self) -> None:
        """The upstream stub on a copy of the demo data (it writes its file on changes)."""
        data = self.run_dir / "edge-data.json"
        shutil.copyfile(self.demo_dir / "customers.json", data)
        port = preferred_port(8787)
        args = [*DEV, "edge-stub", "--file", str(data), "--host", "127.0.0.1", "--port", str(port)]
        self.env["EDGE_API_URL"] = f"http://127.0.0.1:{port}"
        child = self.start("edge-stub", args)
        url = f"{self.env['EDGE_API_URL']}/_stub/requests"
        wait_for(lambda: http_ok(url), timeout=60, what="the edge stub", child=child)

    def start_worker(self) -> str:
        """The worker with its HTTP surface; returns its base URL once /readyz is UP."""
        port = int(os.environ["PORT"]) if os.environ.get("PORT") else preferred_port(4000)
        self.env |= {"PORT": str(port), "API_HOST": "127.0.0.1", "DISABLE_SENTRY": "1"}
        child = self.start("worker", [*CLI, "worker"])
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{base}/readyz"), timeout=120, what="/readyz UP", child=child)
        return base

    def publish_demo_feed(self) -> int:
        """Send the demo messages and wait until the worker has written them."""
        feed = self.demo_dir / "feed.jsonl"
        result = run_cli([*DEV, "publish", str(feed)], self.child_env())
        if result:
            raise StackError(f"publishing {feed} failed: {result}")
        expected = expected_keys(feed, KeyLayout(self.env["ENVIRONMENT_PREFIX"]))
        client = connect(self.stack_settings())
        try:
            wait_for(
                lambda: client.exists(*expected) == len(expected),
                timeout=60,
                what="the demo feed in Redis",
                child=self.children[-1],
            )
        finally:
            client.close()
        return len(expected)

    def stack_settings(self) -> Settings:
        overrides: dict[str, Any] = {name.lower(): value for name, value in self.env.items()}
        return load_settings(**overrides)


def create_queues(endpoint: str) -> tuple[str, str]:
    """Create the dead-letter queue, then the queue with a redrive policy to it."""
    # boto3, not cache_pipeline.sqs.client: creating queues is no call of the service (in
    # production the queues come from infrastructure, and IAM grants the worker no
    # sqs:CreateQueue), and the local stack's fixed credentials are not this process's own.
    client = boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=AWS_LOCAL["AWS_REGION"],
        aws_access_key_id=AWS_LOCAL["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_LOCAL["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        dlq_url = client.create_queue(QueueName=DLQ_NAME)["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        policy = {
            "deadLetterTargetArn": arn["Attributes"]["QueueArn"],
            "maxReceiveCount": str(MAX_RECEIVE_COUNT),
        }
        queue_url = client.create_queue(
            QueueName=QUEUE_NAME,
            Attributes={"RedrivePolicy": json.dumps(policy), "VisibilityTimeout": "30"},
        )["QueueUrl"]
    finally:
        client.close()
    return queue_url, dlq_url


def run_cli(args: list[str], env: dict[str, str]) -> str:
    """Run a command line to completion; return its error output, or ""."""
    import subprocess

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    return "" if done.returncode == 0 else (done.stderr or done.stdout).strip()


def expected_keys(feed: Path, layout: KeyLayout) -> list[str]:
    """The value key each message of the feed writes."""
    keys = []
    for line in feed.read_text().splitlines():
        if not line.strip():
            continue
        message: dict[str, Any] = json.loads(line)
        data = message["data"]
        customer = layout.customer(data["customerId"], data.get("resourceId"))
        if message["type"] == "usage.updated":
            keys.append(customer.feature_usage(data["featureId"]))
        elif message["type"] == "credits.updated":
            keys.append(customer.credit(data["currencyId"]))
        elif message["type"] == "entitlements.updated":
            keys.append(customer.entitlements)
    return keys


def sdk_command(env: dict[str, str], customer: str, feature: str) -> str:
    """A shell command that reads one entitlement through the reader SDK."""
    names = ("REDIS_HOST", "REDIS_PORT", "ENVIRONMENT_PREFIX", "EDGE_API_URL", "SERVER_API_KEY")
    assignments = " ".join(f"{name}={shlex.quote(env[name])}" for name in names)
    code = (
        "from cache_pipeline.client import EntitlementsCache; "
        "cache = EntitlementsCache(); "
        f"source = cache.get_entitlements({customer!r}).source; "
        f"print(cache.get_entitlement({customer!r}, {feature!r}), f'source={{source!r}}')"
    )
    return f"{assignments} {shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def say(text: str) -> None:
    print(text, flush=True)
