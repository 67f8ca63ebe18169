"""Fixtures that start real services. Each test gets its own key prefix or queue."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from tests.support.applying import Applier
from tests.support.image import TIMINGS
from tests.support.servers import RedisServer, SqsServer, StrictSqsServer
from tests.support.worker import Workers, create_queue, worker_env


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """The image test's timings, when it ran."""
    line = config.stash.get(TIMINGS, None)
    if line is not None:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def prefixed_redis(redis_client: redis.Redis, prefix: str) -> Iterator[redis.Redis]:
    """The session's redis-server; every key under the test's prefix goes afterwards."""
    yield redis_client
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.unlink(key)


@pytest.fixture
def prefix() -> str:
    """A fresh environment prefix, so tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def layout(prefix: str) -> KeyLayout:
    return KeyLayout(prefix)


@pytest.fixture
def make_store(redis_client: redis.Redis, layout: KeyLayout) -> Iterator[Callable[..., Applier]]:
    """``make_store(ttl=..., policy=...)`` → a Store on the test's own prefix, with its planner."""

    def build(
        ttl: int = 604800, policy: CacheUpdatePolicy = CacheUpdatePolicy.UPDATE_IF_EXISTS
    ) -> Applier:
        return Applier.of(redis_client, layout, ttl=ttl, policy=policy)

    yield build
    for key in redis_client.scan_iter(match=layout.environment_pattern):
        redis_client.unlink(key)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test alone, which it may stop, kill, pause or restart."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[SqsServer]:
    server = SqsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def strict_sqs_server() -> Iterator[StrictSqsServer]:
    """An SQS server that refuses what SQS refuses in a message (moto does not)."""
    server = StrictSqsServer().start()
    yield server
    server.stop()


@pytest.fixture
def queue_url(sqs_server: SqsServer) -> str:
    """A fresh queue of the test's own on the session's SQS server."""
    return create_queue(sqs_server.client())


@pytest.fixture
def workers(
    queue_url: str,
    sqs_server: SqsServer,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> Iterator[Workers]:
    """Worker processes on ``queue_url`` writing under ``prefix`` (``workers.start()``).

    After the test every worker is stopped, then the prefix's keys are removed.
    """
    manager = Workers(worker_env(queue_url, sqs_server, redis_server, prefix))
    yield manager
    manager.stop_all()
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.unlink(key)
