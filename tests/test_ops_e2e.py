"""The operations surface of the real worker process: probes, metrics and logs, end to end.

The worker (``cache-pipeline worker``) consumes a moto SQS queue and writes to a
password-protected redis-server of this module, which the tests stop and start.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from cache_pipeline.config import Settings
from cache_pipeline.ops.metrics import BASELINE_TYPES, HITS_NAME, MISSES_NAME
from tests.support.factory import credits, entitlements, envelope, invalidation, usage
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.worker import WorkerProcess, create_queue, queue_depth, send, worker_env

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.slow

REDIS_PASSWORD = f"redis-pw-{uuid.uuid4().hex}"
SECRETS = {
    "REDIS_PASSWORD": REDIS_PASSWORD,
    "SERVER_API_KEY": f"server-key-{uuid.uuid4().hex}",
    "AWS_SECRET_ACCESS_KEY": f"aws-secret-{uuid.uuid4().hex}",
    "AWS_SESSION_TOKEN": f"aws-token-{uuid.uuid4().hex}",
    "SENTRY_DSN": f"http://{uuid.uuid4().hex}@127.0.0.1:9/1",
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def locked_redis() -> Iterator[RedisServer]:
    """A redis-server with a password, that these tests may stop and restart."""
    server = RedisServer(extra_args=["--requirepass", REDIS_PASSWORD]).start()
    yield server
    server.stop()


@pytest.fixture
def redis_admin(locked_redis: RedisServer) -> Iterator[redis.Redis]:
    if locked_redis.process is None:
        locked_redis.start()
    client = locked_redis.client(password=REDIS_PASSWORD)
    yield client
    client.close()


@pytest.fixture
def sqs(sqs_server: SqsServer) -> Iterator[SQSClient]:
    client = sqs_server.client()
    yield client
    client.close()


@pytest.fixture
def start_worker(
    sqs_server: SqsServer, sqs: SQSClient, locked_redis: RedisServer, prefix: str
) -> Iterator[Any]:
    """``start_worker(**env)`` → (worker, queue URL, DLQ URL); every worker is stopped after."""
    started: list[WorkerProcess] = []

    def start(**extra: str) -> tuple[WorkerProcess, str, str]:
        queue, dlq = create_queue(sqs), create_queue(sqs)
        env = worker_env(
            queue, sqs_server, locked_redis, prefix, DEAD_LETTER_QUEUE_URL=dlq, **SECRETS, **extra
        )
        worker = WorkerProcess(env)
        started.append(worker)
        return worker.start(), queue, dlq

    yield start
    for worker in started:
        worker.stop()
    if locked_redis.process is None:
        locked_redis.start()


def test_probes_follow_redis(start_worker: Any, locked_redis: RedisServer) -> None:
    worker, _, _ = start_worker(WORKER_CONCURRENCY="3")
    livez = worker.http.get("/livez")
    assert (livez.status_code, livez.json()) == (200, {"status": "UP"})
    up = {"status": "UP", "consumers": 3, "redis": "CONNECTED"}
    wait_until(lambda: readyz(worker) == (200, up), what=f"/readyz UP\n{worker.output()}")

    locked_redis.stop()
    wait_until(lambda: readyz(worker)[0] == 503, what=f"/readyz 503\n{worker.output()}")
    status, body = readyz(worker)
    assert status == 503
    assert body["status"] == "DOWN"
    assert body["redis"] == "DISCONNECTED"
    assert body["consumers"] == 3
    assert worker.http.get("/livez").status_code == 200
    assert worker.counter("persistent_cache_redis_up") == 0

    locked_redis.start()
    wait_until(
        lambda: readyz(worker) == (200, up), timeout=30, what=f"/readyz UP\n{worker.output()}"
    )
    assert worker.http.get("/nothing-here").status_code == 404
    assert worker.http.get("/docs").status_code == 404


def readyz(worker: WorkerProcess) -> tuple[int, dict[str, Any]]:
    response = worker.http.get("/readyz")
    return response.status_code, response.json()


def traffic(prefix: str) -> tuple[list[dict[str, Any] | str], dict[str, int], dict[str, int]]:
    """A mix of every message type and every poison reason, and how many of each."""
    customers = [f"cus-{n}" for n in range(5)]
    good: list[dict[str, Any]] = [
        *(entitlements(c, 100, features={"seats": 1}, credits={"tokens": 5}) for c in customers),
        *(usage(c, 200 + n, "seats", n) for n, c in enumerate(customers[:4])),
        *(credits(c, 300, "tokens", 7) for c in customers[:3]),
        invalidation(400, customers[0]),
        invalidation(401, customers[1], customers[2]),
    ]
    poison: list[dict[str, Any] | str] = [
        "{not json",
        "",
        "[]",
        envelope("bogus.type", 1, {}),
        envelope("other.type", 1, {}),
        usage("cus-0", -5, "seats", 1),
        {"id": "no-data", "type": "usage.updated", "timestamp": 1},
        usage("cus-0", 5, "seats", 1, environment=f"not-{prefix}"),
    ]
    by_type = {"entitlements.updated": 5, "usage.updated": 4, "credits.updated": 3}
    by_type["cache.invalidated"] = 2
    by_reason = {"not_json": 3, "unknown_type": 2, "invalid_field": 2, "wrong_environment": 1}
    assert sum(by_type.values()) == len(good)
    assert sum(by_reason.values()) == len(poison)
    return [*good, *poison], by_type, by_reason


def wait_settled(worker: WorkerProcess, total: int) -> Samples:
    """/metrics once the processed and failed counters account for ``total`` messages."""
    seen: list[Samples] = []

    def counted() -> bool:
        seen.append(worker.metrics())
        return sum(value for (name, _), value in seen[-1].items() if name in OUTCOMES) >= total

    wait_until(counted, timeout=60, what=f"counters\n{worker.output()}")
    return seen[-1]


OUTCOMES = ("persistent_cache_messages_processed_total", "persistent_cache_messages_failed_total")


def test_metrics_count_every_message_by_type_and_reason(
    start_worker: Any, sqs_server: SqsServer, prefix: str, redis_admin: redis.Redis
) -> None:
    worker, queue, dlq = start_worker()
    bodies, by_type, by_reason = traffic(prefix)
    send(sqs_server, queue, bodies)
    wait_settled(worker, len(bodies))
    wait_until(lambda: queue_depth(sqs_server, queue) == 0, timeout=30, what="queue drained")
    samples = worker.metrics()  # counted once each: nothing more after the queue drained

    processed = labelled(samples, "persistent_cache_messages_processed_total", "type")
    failed = labelled(samples, "persistent_cache_messages_failed_total", "reason")
    assert processed == by_type
    assert failed == by_reason
    parked = labelled(samples, "persistent_cache_messages_parked_total", "destination")
    assert parked == {"dlq": sum(by_reason.values())}
    assert queue_depth(sqs_server, dlq) == sum(by_reason.values())
    handled = samples[("persistent_cache_message_handling_duration_seconds_count", ())]
    assert handled == len(bodies)
    assert samples[("persistent_cache_write_errors_total", ())] == 0
    assert samples[("persistent_cache_write_duration_seconds_count", ())] >= 1
    default = Settings(batch_size=int(worker.env["BATCH_SIZE"]), worker_concurrency=None)
    assert samples[("persistent_cache_consumers", ())] == default.consumers

    text = worker.http.get("/metrics").text
    for name, kind in BASELINE_TYPES.items():
        assert f"# TYPE {name} {kind}\n" in text
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert families[HITS_NAME] == families[MISSES_NAME] == "gauge"

    # Redis INFO gauges match Redis's own counters once the worker is idle.
    def info_matches() -> bool:
        stats = redis_admin.info("stats")
        scraped = worker.metrics()
        expected = (int(stats["keyspace_hits"]), int(stats["keyspace_misses"]))
        return (scraped[(HITS_NAME, ())], scraped[(MISSES_NAME, ())]) == expected

    wait_until(info_matches, what="INFO gauges equal to Redis INFO")


def labelled(samples: Samples, name: str, label: str) -> dict[str, int]:
    return {
        dict(labels)[label]: int(value)
        for (sample, labels), value in samples.items()
        if sample == name and value
    }


def test_worker_output_is_json_lines_without_secrets(
    start_worker: Any, sqs_server: SqsServer, prefix: str
) -> None:
    worker, queue, _ = start_worker(
        LOG_LEVEL="debug", LOG_MESSAGE_KEY="message_text", LOG_ERROR_KEY="failure"
    )
    bodies, _, by_reason = traffic(prefix)
    send(sqs_server, queue, bodies)
    wait_settled(worker, len(bodies))
    assert worker.terminate() == 0
    output = worker.log.read_text()

    for value in SECRETS.values():
        for form in (value, quote(value, safe="")):
            assert form not in output
    lines = [json.loads(line) for line in output.splitlines()]
    assert all({"time", "level", "message_text"} <= set(line) for line in lines)
    assert not any("msg" in line for line in lines)
    about_messages = [line for line in lines if "id" in line]
    assert about_messages
    assert all({"type", "customer"} <= set(line) for line in about_messages)
    ids = {line["id"] for line in about_messages}
    assert {body["id"] for body in bodies if isinstance(body, dict) and "id" in body} <= ids
    poison = [line for line in about_messages if "reason" in line]
    assert sorted(line["reason"] for line in poison) == sorted(
        reason for reason, count in by_reason.items() for _ in range(count)
    )
    libraries = {line.get("logger", "").split(".")[0] for line in lines}
    assert {"celery", "kombu", "botocore", "uvicorn"} <= libraries
    assert any(line["message_text"].startswith("worker: Warm shutdown") for line in lines)
