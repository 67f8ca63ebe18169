"""The schema marker: new environments, data loss, version mismatch, and {"all": true}.

Data loss is produced for real: a redis-server of the test's own, without
persistence, is SIGKILLed and started again on the same port, or flushed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import redis
from prometheus_client import REGISTRY

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.errors import SchemaVersionMismatch
from cache_pipeline.health import HealthState
from cache_pipeline.keys import SCHEMA_VERSION, KeyLayout
from cache_pipeline.schema import DETAIL, Marker, SchemaGuard, SchemaStatus, refresh_health
from cache_pipeline.store import Store
from tests.support.factory import entitlements, invalidation, parsed
from tests.support.servers import RedisServer

LOSS_METRIC = "persistent_cache_redis_data_loss_total"


def losses() -> float:
    return REGISTRY.get_sample_value(LOSS_METRIC) or 0.0


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = own_redis.client(socket_timeout=2, retry_on_error=[redis.ConnectionError])
    yield client
    client.close()


def test_a_new_environment_gets_a_marker(redis_client: redis.Redis, layout: KeyLayout) -> None:
    guard = SchemaGuard(redis_client, layout, clock=lambda: 1234)
    first = guard.check()
    assert first.status is SchemaStatus.CREATED
    assert json.loads(redis_client.get(layout.schema_marker) or "") == {
        "version": SCHEMA_VERSION,
        "createdAt": 1234,
    }
    assert redis_client.ttl(layout.schema_marker) == -1  # never expires
    second = guard.check()
    assert second.status is SchemaStatus.OK
    assert second.detail() is None
    redis_client.delete(layout.schema_marker)


def test_a_restart_without_persistence_is_noticed(
    own_redis: RedisServer, own_client: redis.Redis
) -> None:
    layout = KeyLayout("prod")
    guard = SchemaGuard(own_client, layout)
    health = HealthState()
    assert refresh_health(guard, health).status is SchemaStatus.CREATED
    before = losses()

    own_redis.kill()
    own_redis.start()  # same port, empty: no persistence

    check = refresh_health(guard, health)
    assert check.status is SchemaStatus.DATA_LOST
    assert losses() == before + 1
    detail = health.as_dict()["details"]
    assert isinstance(detail, dict)
    assert "cache-pipeline resync" in detail[DETAIL]
    assert Marker.from_json(str(own_client.get(layout.schema_marker)), "k").needs_resync


def test_flushall_is_noticed_and_every_pod_reports_it_until_a_resync(
    own_client: redis.Redis,
) -> None:
    layout = KeyLayout("prod")
    noticing, other_pod = SchemaGuard(own_client, layout), SchemaGuard(own_client, layout)
    noticing.check()
    own_client.flushall()
    assert noticing.check().status is SchemaStatus.DATA_LOST
    assert noticing.check().status is SchemaStatus.OK  # reported once, flag kept in Redis

    late = other_pod.check()  # a pod that started after the loss
    assert late.status is SchemaStatus.OK
    assert late.detail() is not None

    SchemaGuard(own_client, layout).mark_resynced()
    assert noticing.check().detail() is None
    assert other_pod.check().detail() is None


def test_a_different_version_refuses_to_write_and_says_why(
    redis_client: redis.Redis, layout: KeyLayout
) -> None:
    redis_client.set(layout.schema_marker, json.dumps({"version": "0", "createdAt": 1}))
    health = HealthState(consumers=1, redis_connected=True)
    with pytest.raises(SchemaVersionMismatch) as caught:
        refresh_health(SchemaGuard(redis_client, layout), health)
    message = str(caught.value)
    assert "'0'" in message
    assert repr(SCHEMA_VERSION) in message
    assert "refusing to write" in message
    body = health.as_dict()
    assert body["status"] == "DOWN"
    assert body["reason"] == message
    redis_client.delete(layout.schema_marker)


@pytest.mark.parametrize("raw", ["1", "not json", '{"createdAt": 5}', '{"version": "1"}'])
def test_an_unreadable_marker_is_a_mismatch(
    redis_client: redis.Redis, layout: KeyLayout, raw: str
) -> None:
    redis_client.set(layout.schema_marker, raw)
    with pytest.raises(SchemaVersionMismatch, match="refusing to write"):
        SchemaGuard(redis_client, layout).check()
    redis_client.delete(layout.schema_marker)


def test_invalidating_everything_keeps_the_marker(
    make_store: Callable[..., Store], redis_client: redis.Redis, layout: KeyLayout, prefix: str
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    guard = SchemaGuard(redis_client, layout)
    guard.check()
    store.apply(parsed(entitlements("cus-1", 10, features={"seats": 3})))
    marker = redis_client.get(layout.schema_marker)

    store.apply(parsed(invalidation(20, everything=True)))

    assert list(redis_client.scan_iter(match=f"{prefix}:*")) == [layout.schema_marker]
    assert redis_client.get(layout.schema_marker) == marker
    assert guard.check().status is SchemaStatus.OK  # not mistaken for a data loss
