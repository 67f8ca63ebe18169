"""``cache-pipeline doctor`` (and ``check-config --connect``) against real processes:
redis-server, the SQS server, the edge stub. One line per check, the exit code of the
first failed check's class, and nothing changed in Redis or either queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import redis

from cache_pipeline.sqs.queue import QueueDepth
from tests.support.cli import run_cli
from tests.support.edge import STUB_API_KEY, EdgeStub
from tests.support.servers import RedisServer, SqsServer
from tests.support.worker import create_queue

EVERY_CHECK = [
    "settings",
    "redis tls ca file",
    "redis",
    "redis schema marker",
    "redis acl",
    "sqs queue",
    "sqs dead-letter queue",
    "sqs receive",
    "sqs delete and hand back",
    "sqs send",
    "edge api",
]


@pytest.fixture(scope="module")
def edge_stub() -> Iterator[EdgeStub]:
    stub = EdgeStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def env(
    sqs_server: SqsServer, redis_server: RedisServer, edge_stub: EdgeStub, prefix: str
) -> dict[str, str]:
    """Settings under which every check passes."""
    client = sqs_server.client()
    return {
        "QUEUE_URL": create_queue(client),
        "DEAD_LETTER_QUEUE_URL": create_queue(client),
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
        "REDIS_PORT": str(redis_server.port),
        "ENVIRONMENT_PREFIX": prefix,
        "EDGE_API_URL": edge_stub.url,
        "SERVER_API_KEY": STUB_API_KEY,
    }


def doctor(env: dict[str, str], *args: str) -> tuple[dict[str, tuple[str, str]], str, int]:
    """``{check: (state, detail)}``, the summary line and the exit code."""
    result = run_cli(*(args or ("doctor",)), env=env)
    assert "Traceback" not in result.stderr, result.stderr
    *lines, summary = result.stdout.strip().splitlines()
    checks = {}
    for line in lines:
        state, rest = line[:4].strip(), line[6:]  # "ok    name: detail", "FAIL  name: ..."
        name, _, detail = rest.partition(": ")
        checks[name] = (state, detail)
    assert list(checks) == EVERY_CHECK, result.stdout
    return checks, summary, result.returncode


def states(checks: dict[str, tuple[str, str]]) -> dict[str, str]:
    return {name: state for name, (state, _detail) in checks.items()}


def test_everything_right_every_check_passes_and_nothing_changes(
    env: dict[str, str], sqs_server: SqsServer, prefixed_redis: redis.Redis, prefix: str
) -> None:
    with closing(sqs_server.queue(env["QUEUE_URL"])) as queue:
        queue.send(["waiting"])
        checks, summary, code = doctor(env)
        assert code == 0, checks
        assert states(checks) == {
            name: "skip" if name in ("redis tls ca file", "sqs send") else "ok"
            for name in EVERY_CHECK
        }
        assert checks["sqs receive"][1].startswith("allowed (1 message(s) received")
        assert summary == "doctor: 9 ok, 0 FAIL, 2 skip; exit 0"
        assert queue.depth() == QueueDepth(1, 0, 0)  # received, not hidden, not deleted
    assert prefixed_redis.keys(f"{prefix}:*") == []  # no marker written
    assert doctor(env, "check-config", "--connect") == (checks, summary, 0)


def test_a_wrong_redis_password_and_a_missing_queue(
    env: dict[str, str], sqs_server: SqsServer
) -> None:
    server = RedisServer(extra_args=["--requirepass", "right"]).start()
    try:
        missing = f"{sqs_server.endpoint}/000000000000/no-such-queue"
        env |= {"REDIS_PORT": str(server.port), "REDIS_PASSWORD": "wrong", "QUEUE_URL": missing}
        checks, summary, code = doctor(env)
    finally:
        server.stop()
    assert code == 3  # Redis comes first
    assert checks["redis"] == (
        "FAIL",
        f"Redis 127.0.0.1:{server.port}: Redis refused the credentials:"
        " invalid username-password pair or user is disabled.",
    )
    assert states(checks)["redis schema marker"] == states(checks)["redis acl"] == "skip"
    assert checks["sqs queue"][0] == "FAIL"
    assert checks["sqs queue"][1].startswith(f"{missing}: missing_queue: GetQueueAttributes: ")
    assert states(checks)["sqs receive"] == "skip"
    assert summary == "doctor: 3 ok, 2 FAIL, 6 skip; exit 3 (redis)"


def test_a_missing_queue_alone_exits_4(env: dict[str, str], sqs_server: SqsServer) -> None:
    env["QUEUE_URL"] = f"{sqs_server.endpoint}/000000000000/no-such-queue"
    checks, summary, code = doctor(env)
    assert code == 4
    assert summary.endswith("; exit 4 (sqs)")
    assert [name for name, (state, _) in checks.items() if state == "FAIL"] == ["sqs queue"]


def test_a_missing_dead_letter_queue(env: dict[str, str], sqs_server: SqsServer) -> None:
    missing = f"{sqs_server.endpoint}/000000000000/no-such-dlq"
    env["DEAD_LETTER_QUEUE_URL"] = missing
    checks, _summary, code = doctor(env)
    assert code == 4
    assert checks["sqs dead-letter queue"][0] == "FAIL"
    assert checks["sqs dead-letter queue"][1].startswith(f"{missing}: missing_queue: ")
    assert states(checks)["sqs receive"] == "ok"  # the queue itself is fine


def test_an_api_key_the_edge_refuses(env: dict[str, str]) -> None:
    env["SERVER_API_KEY"] = "not-the-key"
    checks, summary, code = doctor(env)
    assert code == 5
    assert checks["edge api"][0] == "FAIL"
    assert checks["edge api"][1].startswith("SERVER_API_KEY was refused: ")
    assert "(401)" in checks["edge api"][1]
    assert summary.endswith("; exit 5 (edge api)")
    env.pop("SERVER_API_KEY")
    checks, _summary, code = doctor(env)
    assert code == 0
    assert checks["edge api"][0] == "skip"


def test_settings_without_queue_url_or_with_a_bad_value(env: dict[str, str]) -> None:
    env["QUEUE_URL"] = ""
    checks, _summary, code = doctor(env)
    assert code == 2
    assert checks["settings"] == (
        "FAIL",
        "QUEUE_URL is not set: the worker needs the URL of the queue to consume",
    )
    assert states(checks)["redis"] == "ok"  # what does not need the queue is still checked
    assert {states(checks)[name] for name in EVERY_CHECK if name.startswith("sqs")} == {"skip"}

    env["BATCH_SIZE"] = "0"
    checks, _summary, code = doctor(env)
    assert code == 2
    assert checks["settings"][1].startswith("BATCH_SIZE='0' is not allowed")
    assert {states(checks)[name] for name in EVERY_CHECK[1:]} == {"skip"}


def test_a_ca_file_that_cannot_be_read_is_named(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    env |= {"REDIS_TLS": "1", "REDIS_TLS_CA_FILE": str(missing)}
    checks, _summary, code = doctor(env)
    assert code == 2
    assert checks["redis tls ca file"] == (
        "FAIL",
        f"REDIS_TLS_CA_FILE={str(missing)!r} cannot be read: No such file or directory",
    )
    assert states(checks)["redis"] == "skip"


def test_a_marker_that_forbids_writing_or_says_data_was_lost(
    env: dict[str, str], prefixed_redis: redis.Redis, prefix: str
) -> None:
    marker = f"{prefix}:__schema__"
    prefixed_redis.set(marker, json.dumps({"version": "1", "createdAt": 1}))
    checks, _summary, code = doctor(env)
    assert code == 3
    assert checks["redis schema marker"] == (
        "FAIL",
        "version 1, this release writes 2: run `cache-pipeline migrate` (docs/contract.md)",
    )
    lost = {"version": "2", "createdAt": 1_700_000_000_000, "lossDetectedAt": 1_700_000_001_000}
    prefixed_redis.set(marker, json.dumps(lost))
    checks, _summary, code = doctor(env)
    assert code == 3
    assert checks["redis schema marker"][1].startswith(
        "version 2, createdAt 2023-11-14T22:13:20Z, lossDetectedAt 2023-11-14T22:13:21Z,"
        " resyncedAt -: Redis lost this environment's data"
    )
    prefixed_redis.set(marker, json.dumps(lost | {"resyncedAt": 1_700_000_002_000}))
    checks, _summary, code = doctor(env)
    assert code == 0
    assert checks["redis schema marker"][0] == "ok"
