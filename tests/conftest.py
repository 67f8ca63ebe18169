"""Fixtures that start real services. Each test gets its own key prefix or queue."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store import Store
from tests.support.servers import RedisServer, SqsServer


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
def prefix() -> str:
    """A fresh environment prefix, so tests never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def layout(prefix: str) -> KeyLayout:
    return KeyLayout(prefix)


@pytest.fixture
def make_store(redis_client: redis.Redis, layout: KeyLayout) -> Iterator[Callable[..., Store]]:
    """``make_store(ttl=..., policy=...)`` → a Store on the test's own prefix."""

    def build(
        ttl: int = 604800, policy: CacheUpdatePolicy = CacheUpdatePolicy.UPDATE_IF_EXISTS
    ) -> Store:
        return Store(redis_client, layout, ttl=ttl, policy=policy)

    yield build
    for key in redis_client.scan_iter(match=layout.environment_pattern):
        redis_client.unlink(key)


@pytest.fixture(scope="session")
def sqs_server() -> Iterator[SqsServer]:
    server = SqsServer().start()
    yield server
    server.stop()
