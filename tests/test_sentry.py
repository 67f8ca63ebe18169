"""Sentry: errors in a Celery task and in a FastAPI route reach a local stand-in for the DSN."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cache_pipeline import __version__
from cache_pipeline.tasks.handlers import TASK_NAMES
from tests.support import factory
from tests.support.servers import AWS_TEST_ENV, RedisServer, SqsServer, free_port, wait_until
from tests.support.worker import WorkerProcess, create_queue, send_task, worker_env

FAILED = "persistent_cache_messages_failed_total"
PARKED = "persistent_cache_messages_parked_total"

TASK_CHILD = textwrap.dedent(
    """
    import os, sys
    import sentry_sdk
    from celery import Celery
    from cache_pipeline.config import load_settings
    from cache_pipeline.ops.error_reporting import configure_sentry

    print("enabled" if configure_sentry(load_settings(), celery=True, fastapi=False) else "off")
    app = Celery("sentry-check", broker="memory://")

    @app.task(name="explode")
    def explode():
        raise RuntimeError("task failed: " + os.environ["LEAK"])

    result = explode.apply()
    assert result.failed(), result.state
    sentry_sdk.flush(10)
    """
)

ROUTE_CHILD = textwrap.dedent(
    """
    import os, sys
    import httpx, sentry_sdk
    from cache_pipeline.api.server import serve_in_thread
    from cache_pipeline.config import load_settings
    from cache_pipeline.ops.error_reporting import configure_sentry
    from cache_pipeline.ops.health import HealthState

    class BrokenHealth(HealthState):
        def as_dict(self):
            raise RuntimeError("route failed: " + os.environ["LEAK"])

    settings = load_settings()
    print("enabled" if configure_sentry(settings, celery=False, fastapi=True) else "off")
    print("celery imported" if "celery" in sys.modules else "celery not imported")
    handle = serve_in_thread(settings, BrokenHealth(), None)
    try:
        status = httpx.get(f"http://127.0.0.1:{settings.port}/readyz", timeout=10).status_code
        assert status == 500, status
    finally:
        handle.stop()
    sentry_sdk.flush(10)
    """
)

LOG_CHILD = textwrap.dedent(
    """
    import logging, os
    import sentry_sdk
    from loguru import logger
    from cache_pipeline.config import load_settings
    from cache_pipeline.ops.error_reporting import configure_sentry
    from cache_pipeline.ops.logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    configure_sentry(settings, celery=False, fastapi=False)
    logger.info("an info line is a breadcrumb only")
    logging.getLogger("kombu").warning("so is a warning from a library")
    try:
        raise ConnectionError("consumer broke: " + os.environ["LEAK"])
    except ConnectionError:
        logger.exception("a queue consumer stopped on an unexpected error")
    logging.getLogger("kombu").error("kombu gave up: %s", os.environ["LEAK"])
    sentry_sdk.flush(10)
    """
)


class Envelopes:
    """A tiny HTTP server that stands in for Sentry and keeps every envelope it receives."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        received = self.raw

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                received.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.dsn = f"http://{uuid.uuid4().hex}@127.0.0.1:{self.server.server_port}/1"

    def events(self) -> list[dict[str, Any]]:
        """Every event item of every envelope."""
        found = []
        for body in self.raw:
            lines = body.split(b"\n")
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    found.append(json.loads(payload))
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def sentry() -> Iterator[Envelopes]:
    endpoint = Envelopes()
    yield endpoint
    endpoint.close()


def run_child(script: str, sentry: Envelopes, **extra: str) -> tuple[str, dict[str, str]]:
    secrets = {
        "SERVER_API_KEY": f"sak-{uuid.uuid4().hex}",
        "REDIS_PASSWORD": f"rp-{uuid.uuid4().hex}",
        "AWS_SECRET_ACCESS_KEY": f"aws-{uuid.uuid4().hex}",
        "AWS_SESSION_TOKEN": f"tok-{uuid.uuid4().hex}",
    }
    env = {
        **os.environ,
        **AWS_TEST_ENV,
        **secrets,
        "SENTRY_DSN": sentry.dsn,
        "ENVIRONMENT_PREFIX": "staging-eu",
        "PORT": str(free_port()),
        "API_HOST": "127.0.0.1",
        "LEAK": " ".join(secrets.values()),
        **extra,
    }
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, secrets


def the_event(sentry: Envelopes, secrets: dict[str, str]) -> dict[str, Any]:
    (event,) = the_events(sentry, secrets)
    return event


def the_events(sentry: Envelopes, secrets: dict[str, str]) -> list[dict[str, Any]]:
    for body in sentry.raw:
        for value in secrets.values():
            assert value.encode() not in body
    return sentry.events()


def test_task_error_reaches_sentry_without_secrets(sentry: Envelopes) -> None:
    stdout, secrets = run_child(TASK_CHILD, sentry)
    assert stdout.splitlines() == ["enabled"]
    event = the_event(sentry, secrets)
    (error,) = event["exception"]["values"]
    assert error["type"] == "RuntimeError"
    assert error["value"].startswith("task failed: **********")
    assert error["mechanism"]["type"] == "celery"
    assert (event["release"], event["environment"]) == (__version__, "staging-eu")


def test_route_error_reaches_sentry_without_secrets(sentry: Envelopes) -> None:
    stdout, secrets = run_child(ROUTE_CHILD, sentry)
    assert stdout.splitlines() == ["enabled", "celery not imported"]
    event = the_event(sentry, secrets)
    (error,) = event["exception"]["values"]
    assert error["type"] == "RuntimeError"
    assert error["value"].startswith("route failed: **********")
    assert event["request"]["url"].endswith("/readyz")
    assert (event["release"], event["environment"]) == (__version__, "staging-eu")


@pytest.mark.parametrize("script", [TASK_CHILD, ROUTE_CHILD], ids=["task", "route"])
def test_disable_sentry_sends_nothing(sentry: Envelopes, script: str) -> None:
    stdout, _ = run_child(script, sentry, DISABLE_SENTRY="1")
    assert stdout.splitlines()[0] == "off"
    assert sentry.raw == []


def test_error_log_lines_reach_sentry_once(sentry: Envelopes) -> None:
    """Errors the worker catches and logs (loguru or a library's stdlib logger) are reported."""
    stdout, secrets = run_child(LOG_CHILD, sentry)
    assert all(json.loads(line) for line in stdout.splitlines())
    events = the_events(sentry, secrets)
    messages = sorted(event["logentry"]["message"] for event in events)
    assert messages == [
        "a queue consumer stopped on an unexpected error",
        "kombu gave up: ********** ********** ********** **********",
    ]
    caught = next(event for event in events if "exception" in event)
    assert caught["exception"]["values"][0]["type"] == "ConnectionError"
    assert caught["exception"]["values"][0]["value"].startswith("consumer broke: **********")
    crumbs = [crumb["message"] for crumb in caught["breadcrumbs"]["values"]]
    assert "an info line is a breadcrumb only" in crumbs
    assert "so is a warning from a library" in crumbs


def test_an_error_inside_a_task_of_the_real_worker_is_one_celery_event_and_one_error_line(
    sentry: Envelopes,
    sqs_server: SqsServer,
    queue_url: str,
    redis_server: RedisServer,
    prefix: str,
) -> None:
    """Sentry's Celery integration reports the failing task once, scoped as that task, with
    no secret and no message in it; the worker logs one error line naming the task. A task's
    expected failure (``InvalidMessage``: a message of another type) is reported nowhere."""
    secret = f"sak-{uuid.uuid4().hex}"
    dlq = create_queue(sqs_server.client())  # parked once: never received a second time
    env = worker_env(queue_url, sqs_server, redis_server, prefix, DEAD_LETTER_QUEUE_URL=dlq)
    worker = WorkerProcess(
        {**env, "SENTRY_DSN": sentry.dsn, "DISABLE_SENTRY": "0", "SERVER_API_KEY": secret}
    )
    try:
        worker.start()
        task = TASK_NAMES["entitlements.updated"]
        body = factory.entitlements("cus-1", 100, features={"seats": 1})
        # An unexpected keyword: TypeError, whose message names it (the secret).
        failing = send_task(sqs_server, queue_url, task, [body], {secret: 1})
        expected = send_task(
            sqs_server,
            queue_url,
            TASK_NAMES["usage.updated"],
            [factory.credits("cus-1", 1, "ai", 3)],
        )
        wait_until(
            lambda: (
                worker.counter(FAILED, reason="unprocessable") == 1
                and worker.counter(FAILED, reason="unknown_type") == 1
                and worker.counter(PARKED, destination="dlq") == 2
            ),
            what="both messages parked",
        )
        assert worker.terminate() == 0  # Sentry sends what it holds before the process ends
        (event,) = the_events(sentry, {"SERVER_API_KEY": secret})
        (error,) = event["exception"]["values"]
        assert error["type"] == "TypeError"
        assert "**********" in error["value"]
        assert error["mechanism"] == {"type": "celery", "handled": False, "exception_id": 0}
        assert event["transaction"] == task
        assert event["tags"]["celery_task_id"] == failing
        assert event["extra"]["celery-job"] == {"task_name": task}  # no arguments: no message
        assert (event["release"], event["environment"]) == (__version__, prefix)

        lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
        errors = [line for line in lines if line["level"] == "error"]
        (logged,) = errors
        assert (logged["task"], logged["task_id"], logged["id"]) == (task, failing, failing)
        assert logged["err"]["type"] == "TypeError"
        assert secret not in worker.output()
        assert not [line for line in lines if line.get("task_id") == expected]
        # Celery's own line per task (success, failure) is left out.
        assert not [line for line in lines if line.get("logger") == "celery.app.trace"]
    finally:
        worker.kill()
        worker.stop()
