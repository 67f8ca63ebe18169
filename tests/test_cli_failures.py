"""Every command ends in one line and an exit code by class, never a traceback.

Against real servers: a queue URL naming no queue, no AWS credentials at all
(``AWS_ACCESS_KEY_ID`` unset, the shared files empty), credentials SQS refuses (moto
checking signatures), an endpoint nobody listens on, a missing dead-letter queue, and a
Redis nobody listens on. The line is ``PROGRAM: <what failed>: <why>``; the exit codes
are those of ``cache_pipeline.cli.failures`` (3 Redis, 4 SQS).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import factory
from tests.support.cli import last_line, run_cli, without_aws_keys
from tests.support.servers import AuthenticatingSqsServer, SqsServer, free_port
from tests.support.worker import create_queue

# What each command does with SQS, and the program name its line starts with.
SQS_COMMANDS = [
    (["publish", "{messages}"], "cache-pipeline dev"),
    (["dlq", "list"], "cache-pipeline"),
    (["dlq", "redrive"], "cache-pipeline"),
    (["redrive"], "cache-pipeline"),
    (["status"], "cache-pipeline"),
]


@pytest.fixture
def messages(tmp_path: Path) -> str:
    source = tmp_path / "messages.jsonl"
    source.write_text(json.dumps(factory.usage("cus-1", 100, "seats", 1)) + "\n")
    return str(source)


@pytest.fixture(scope="module")
def authenticating_sqs() -> Iterator[AuthenticatingSqsServer]:
    server = AuthenticatingSqsServer().start()
    yield server
    server.stop()


def run_each(
    env: dict[str, str], messages: str, commands: list[tuple[list[str], str]] = SQS_COMMANDS
) -> Iterator[tuple[list[str], str, str, int]]:
    """Each command's args, program, only line and exit code."""
    for args, program in commands:
        argv = [messages if arg == "{messages}" else arg for arg in args]
        result = run_cli(*argv, env=env)
        yield argv, program, last_line(result), result.returncode


def test_a_queue_url_naming_no_queue(sqs_server: SqsServer, messages: str) -> None:
    missing = f"{sqs_server.endpoint}/000000000000/no-such-queue"
    dlq = create_queue(sqs_server.client())
    env = {"QUEUE_URL": missing, "DEAD_LETTER_QUEUE_URL": dlq}
    env["SQS_ENDPOINT_URL"] = sqs_server.endpoint
    for args, program, line, code in run_each(env, messages, [SQS_COMMANDS[0], SQS_COMMANDS[4]]):
        assert code == 4, (args, line)
        assert line.startswith(f"{program}: SQS queue {missing}: missing_queue: "), line


def test_no_aws_credentials_anywhere(sqs_server: SqsServer, messages: str, tmp_path: Path) -> None:
    client = sqs_server.client()
    env = {
        "QUEUE_URL": create_queue(client),
        "DEAD_LETTER_QUEUE_URL": create_queue(client),
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
        **without_aws_keys(tmp_path),
    }
    for args, program, line, code in run_each(env, messages):
        assert code == 4, (args, line)
        assert line.startswith(f"{program}: SQS queue "), line
        assert ": credentials: no AWS credentials found" in line, line


def test_credentials_sqs_refuses(
    authenticating_sqs: AuthenticatingSqsServer, messages: str
) -> None:
    endpoint = authenticating_sqs.endpoint
    env = {
        "QUEUE_URL": f"{endpoint}/123456789012/q",
        "DEAD_LETTER_QUEUE_URL": f"{endpoint}/123456789012/dlq",
        "SQS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000",
        "AWS_SECRET_ACCESS_KEY": "not-a-secret-sqs-knows",
    }
    for args, _program, line, code in run_each(env, messages):
        assert code == 4, (args, line)
        assert ": credentials: " in line, line
        assert "InvalidClientTokenId" in line, line


def test_an_endpoint_nobody_listens_on(messages: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {
        "QUEUE_URL": f"{nowhere}/000000000000/q",
        "DEAD_LETTER_QUEUE_URL": f"{nowhere}/000000000000/dlq",
        "SQS_ENDPOINT_URL": nowhere,
        "REDIS_PORT": str(free_port()),
    }
    commands = SQS_COMMANDS[:4]  # status reads Redis first
    for args, program, line, code in run_each(env, messages, commands):
        assert code == 4, (args, line)
        assert line.startswith(f"{program}: SQS queue {nowhere}/000000000000/"), line
        assert ": unreachable: " in line, line


def test_a_redis_nobody_listens_on() -> None:
    port = free_port()
    env = {"REDIS_PORT": str(port), "REDIS_TIMEOUT_SECS": "1"}
    for args in (["status"], ["inspect", "cus-1"], ["invalidate", "--customer", "cus-1"],
                 ["migrate"]):  # fmt: skip
        result = run_cli(*args, env=env)
        assert result.returncode == 3, (args, result.stderr)
        line = last_line(result)
        assert line.startswith(f"cache-pipeline: Redis 127.0.0.1:{port}: Redis is unavailable: ")


def test_resync_with_a_redis_nobody_listens_on(tmp_path: Path) -> None:
    scopes = tmp_path / "scopes.jsonl"
    scopes.write_text('{"customerId": "cus-1"}\n')
    port = free_port()
    result = run_cli(
        "resync", str(scopes), env={"REDIS_PORT": str(port), "REDIS_TIMEOUT_SECS": "1"}
    )
    assert result.returncode == 3, result.stderr
    assert last_line(result).startswith(f"cache-pipeline: Redis 127.0.0.1:{port}: ")
