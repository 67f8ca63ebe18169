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
from cache_pipeline.keys import SCHEMA_VERSION, KeyLayout
from cache_pipeline.ops.health import HealthState
from cache_pipeline.store.schema import Marker, SchemaGuard, SchemaStatus
from cache_pipeline.tasks.gates import DETAIL, SchemaGate, refresh_health
from tests.support.applying import Applier
from tests.support.factory import entitlements, invalidation, parsed
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.snapshot import read_state
from tests.support.worker import (
    Workers,
    create_queue,
    expected_state,
    queue_depth,
    send,
    wait_for_state,
    worker_env,
)

LOSS_METRIC = "persistent_cache_redis_data_loss_total"


def losses() -> float:
    return REGISTRY.get_sample_value(LOSS_METRIC) or 0.0


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
    assert (body["reason"], body["message"]) == ("schema_refused", message)
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
    make_store: Callable[..., Applier], redis_client: redis.Redis, layout: KeyLayout, prefix: str
) -> None:
    store = make_store(policy=CacheUpdatePolicy.UPSERT)
    guard = SchemaGuard(redis_client, layout)
    guard.check()
    store.apply(parsed(entitlements("cus-1", 10, features={"seats": 3})))
    marker = redis_client.get(layout.schema_marker)

    store.apply(parsed(invalidation(20, everything=True)))

    assert read_state(redis_client, layout) == {}
    assert redis_client.get(layout.schema_marker) == marker
    assert guard.check().status is SchemaStatus.OK  # not mistaken for a data loss


@pytest.fixture
def queue_url(sqs_server: SqsServer) -> str:
    return create_queue(sqs_server.client())


@pytest.fixture
def workers(queue_url: str, sqs_server: SqsServer, own_redis: RedisServer) -> Iterator[Workers]:
    manager = Workers(worker_env(queue_url, sqs_server, own_redis, "prod"))
    yield manager
    manager.stop_all()


def test_the_worker_reports_a_restart_of_redis_without_its_data(
    workers: Workers,
    own_redis: RedisServer,
    own_client: redis.Redis,
    sqs_server: SqsServer,
    queue_url: str,
) -> None:
    worker = workers.start()
    layout = KeyLayout("prod")
    wait_until(lambda: own_client.exists(layout.schema_marker), what="marker written")
    assert DETAIL not in worker.readyz().get("details", {})

    own_redis.kill()
    own_redis.start()

    wait_until(
        lambda: DETAIL in worker.readyz().get("details", {}), timeout=30, what="data-loss detail"
    )
    assert worker.counter(LOSS_METRIC) == 1
    assert "cache-pipeline resync" in worker.readyz()["details"][DETAIL]
    bodies = [entitlements("cus-1", 10, features={"seats": 1})]
    send(sqs_server, queue_url, bodies)  # the worker keeps writing meanwhile
    wait_for_state(own_client, "prod", expected_state("prod", bodies, CacheUpdatePolicy.UPSERT))


def test_the_worker_refuses_another_schema_version_and_says_why(
    workers: Workers, own_client: redis.Redis, sqs_server: SqsServer, queue_url: str
) -> None:
    layout = KeyLayout("prod")
    own_client.set(layout.schema_marker, json.dumps({"version": "0", "createdAt": 1}))
    worker = workers.start()
    bodies = [entitlements(f"cus-{i}", 10, features={"seats": 1}) for i in range(5)]
    send(sqs_server, queue_url, bodies)

    wait_until(lambda: worker.readyz().get("reason"), what="readiness reason")
    ready = worker.http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "DOWN"
    assert ready.json()["reason"] == "schema_refused"
    assert "refusing to write" in ready.json()["message"]
    assert "version '0'" in ready.json()["message"]
    assert "refusing to write" in worker.output()
    assert queue_depth(sqs_server, queue_url) == len(bodies)
    assert read_state(own_client, layout) == {}


def test_the_watch_halts_writes_on_a_mismatch_and_resumes_once_it_is_fixed(
    redis_client: redis.Redis, layout: KeyLayout
) -> None:
    now = [0.0]
    health = HealthState(consumers=1, redis_connected=True)
    watch = SchemaGate(SchemaGuard(redis_client, layout), health, interval=5, clock=lambda: now[0])
    assert watch.allows_writes()
    redis_client.set(layout.schema_marker, json.dumps({"version": "0", "createdAt": 1}))
    assert watch.allows_writes()  # not looked at again before the interval
    now[0] = 5.0
    assert not watch.allows_writes()
    assert health.as_dict()["status"] == "DOWN"
    redis_client.delete(layout.schema_marker)
    watch.recheck_soon()
    assert watch.allows_writes()
    assert health.as_dict()["status"] == "UP"
    redis_client.delete(layout.schema_marker)
