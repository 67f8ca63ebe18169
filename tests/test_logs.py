"""Logs as an operator's collector sees them: a process's stdout, parsed line by line as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from tests.support.servers import AWS_TEST_ENV, SqsServer, free_port

LIBRARIES = ("celery", "kombu", "botocore", "uvicorn")

# Logs through loguru (bound message fields, an exception) and through the stdlib loggers of
# the libraries, at every level; runs the HTTP surface and a real SQS call; tries hard to leak
# every secret (plain, URL-encoded, in a bound field, in an exception, in a library's record).
CHILD = textwrap.dedent(
    """
    import logging, os, sys
    from urllib.parse import quote, urlsplit
    import boto3
    from celery import Celery
    from celery.utils.log import get_task_logger
    from loguru import logger
    from cache_pipeline.api.server import serve_in_thread
    from cache_pipeline.config import load_settings
    from cache_pipeline.ops.health import HealthState
    from cache_pipeline.ops.logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    secrets = [os.environ[n] for n in sys.argv[1].split(",")]

    message = logger.bind(id="m-1", type="usage.updated", customer="cus-42")
    message.debug("debug line about a message")
    message.info("applied with key {}", secrets[0])
    message.warning("warn line about a message")
    logger.bind(token=secrets[1]).error("error line, url {}", quote(secrets[1], safe=""))
    for name in sys.argv[2].split(","):
        library = logging.getLogger(name)
        library.debug("%s debug", name)
        library.info("%s info %s", name, secrets[2])
        library.warning("%s warning", name)
        library.error("%s error", name)
    try:
        raise ValueError("bad value " + secrets[3])
    except ValueError:
        logger.exception("loguru caught it")
        logging.getLogger("celery").exception("celery caught it")

    celery_app = Celery("log-check", set_as_current=False)
    celery_app.conf.worker_hijack_root_logger = False
    celery_app.log.setup(loglevel=logging.getLevelName(logging.getLogger().level))
    get_task_logger("pipeline.tasks").warning("task logger warning")
    import celery.apps.worker
    celery.apps.worker.safe_say("worker: Warm shutdown (MainProcess)", sys.__stdout__)

    handle = serve_in_thread(settings, HealthState(), None)
    handle.stop()
    sqs = boto3.client("sqs", endpoint_url=os.environ["SQS_ENDPOINT_URL"], region_name="us-east-1")
    sqs.list_queues()
    sqs.close()
    print("plain print", flush=True)
    """
)


def run_child(level: str, sqs_server: SqsServer, **keys: str) -> tuple[list[dict[str, Any]], str]:
    secrets = {
        "SERVER_API_KEY": f"sak-{uuid.uuid4().hex}",
        "REDIS_PASSWORD": f"p@ss word/{uuid.uuid4().hex}",
        "AWS_SECRET_ACCESS_KEY": f"aws-{uuid.uuid4().hex}",
        "AWS_SESSION_TOKEN": f"tok-{uuid.uuid4().hex}",
        "SENTRY_DSN": f"http://k{uuid.uuid4().hex[:12]}@127.0.0.1:9/1",
    }
    env = {
        **os.environ,
        **AWS_TEST_ENV,
        **secrets,
        "DISABLE_SENTRY": "1",
        "LOG_LEVEL": level,
        "PORT": str(free_port()),
        "API_HOST": "127.0.0.1",
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
        **keys,
    }
    order = "SERVER_API_KEY,REDIS_PASSWORD,AWS_SECRET_ACCESS_KEY,AWS_SESSION_TOKEN"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, order, ",".join(LIBRARIES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for value in secrets.values():
        for form in (value, quote(value, safe=""), json.dumps(value)[1:-1]):
            assert form not in output
    assert str(urlsplit(secrets["SENTRY_DSN"]).username) not in output
    lines = [line for line in result.stdout.splitlines() if line != "plain print"]
    return [json.loads(line) for line in lines], result.stderr


@pytest.fixture(scope="module")
def debug_lines(sqs_server: SqsServer) -> list[dict[str, Any]]:
    lines, stderr = run_child("debug", sqs_server, LOG_MESSAGE_KEY="text", LOG_ERROR_KEY="problem")
    assert stderr == ""
    return lines


def by_message(lines: list[dict[str, Any]], key: str, text: str) -> dict[str, Any]:
    found = [line for line in lines if line.get(key) == text]
    assert len(found) == 1, f"{text!r} in {lines}"
    return found[0]


def test_every_line_is_json_with_time_level_and_custom_message_key(
    debug_lines: list[dict[str, Any]],
) -> None:
    assert debug_lines
    for line in debug_lines:
        assert {"time", "level", "text"} <= set(line), line
        assert "msg" not in line
        assert "err" not in line
        assert line["level"] in {"debug", "info", "warn", "error"}
        assert line["time"].endswith("+00:00")


def test_message_lines_carry_id_type_and_customer(debug_lines: list[dict[str, Any]]) -> None:
    line = by_message(debug_lines, "text", "warn line about a message")
    assert (line["id"], line["type"], line["customer"]) == ("m-1", "usage.updated", "cus-42")
    assert line["level"] == "warn"


def test_exception_lands_under_the_custom_error_key(debug_lines: list[dict[str, Any]]) -> None:
    for text in ("loguru caught it", "celery caught it"):
        error = by_message(debug_lines, "text", text)["problem"]
        assert error["type"] == "ValueError"
        assert error["message"].startswith("bad value ")
        assert "Traceback (most recent call last)" in error["stack"]
        assert "**********" in error["message"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_library_logs_go_through_the_same_sink(
    debug_lines: list[dict[str, Any]], library: str
) -> None:
    for level in ("debug", "info", "warning", "error"):
        text = f"{library} {level}" if level != "info" else f"{library} info **********"
        line = by_message(debug_lines, "text", text)
        assert line["logger"] == library
        assert line["level"] == {"warning": "warn"}.get(level, level)


def test_uvicorn_and_botocore_records_are_json(debug_lines: list[dict[str, Any]]) -> None:
    loggers = {line.get("logger", "") for line in debug_lines}
    assert "uvicorn.error" in loggers
    assert any(name.startswith("botocore.") for name in loggers)


def test_celery_worker_notices_are_json(debug_lines: list[dict[str, Any]]) -> None:
    """Celery's worker prints its shutdown notice from a signal handler, outside logging."""
    line = by_message(debug_lines, "text", "worker: Warm shutdown (MainProcess)")
    assert line["level"] == "info"


def test_celery_task_loggers_stay_in_the_sink(debug_lines: list[dict[str, Any]]) -> None:
    """Celery's own logging setup (as its worker runs it) keeps task loggers in the sink."""
    line = by_message(debug_lines, "text", "task logger warning")
    assert (line["logger"], line["level"]) == ("pipeline.tasks", "warn")


@pytest.mark.parametrize(
    ("level", "expected"),
    [("error", {"error"}), ("warn", {"warn", "error"}), ("info", {"info", "warn", "error"})],
)
def test_level_filtering(sqs_server: SqsServer, level: str, expected: set[str]) -> None:
    lines, stderr = run_child(level, sqs_server)
    assert stderr == ""
    assert {line["level"] for line in lines} == expected
    assert all("msg" in line for line in lines)
    errors = [line for line in lines if "err" in line]
    assert {line["msg"] for line in errors} == {"loguru caught it", "celery caught it"}
