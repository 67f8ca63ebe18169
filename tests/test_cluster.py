"""The store's contract suite against a real three-master Redis Cluster.

The cluster is started by the suite (``tests/support/cluster.py``); the store
connects through ``connect(Settings(redis_cluster=True, ...))`` with the hash-tag
key layout, so batches pipeline EVALSHA across slots and ``{"all": true}`` scans
every master.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from cache_pipeline.config import Settings
from cache_pipeline.errors import StoreError, StoreUnavailable
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.connection import connect
from cache_pipeline.store.writer import RedisClient
from tests.support import factory
from tests.support.cluster import RedisClusterServer
from tests.support.servers import RedisServer, free_port
from tests.test_store import Backend, StoreRules, backend_for, count_keys, msg, seed

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServer]:
    cluster = RedisClusterServer().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def cluster_client(redis_cluster: RedisClusterServer) -> Iterator[RedisClient]:
    settings = Settings(redis_cluster=True, redis_port=redis_cluster.ports[0])
    client = connect(settings)
    yield client
    client.close()


class TestStoreOnCluster(StoreRules):
    """Every write rule, on the cluster."""

    @pytest.fixture
    def backend(self, cluster_client: RedisClient) -> Iterator[Backend]:
        yield from backend_for(cluster_client, cluster=True)


def test_customer_keys_share_one_slot_and_customers_spread(
    redis_cluster: RedisClusterServer, cluster_client: RedisClient
) -> None:
    backend = Backend(cluster_client, cluster=True)
    try:
        layout = backend.layout()
        store = backend.store(layout)
        for i in range(60):
            seed(store, f"cus-{i}", 100, features={"seats": 1}, credits={"tok": 1})
        per_node = [node.client() for node in redis_cluster.nodes]
        try:
            counts = [
                sum(1 for _ in c.scan_iter(match=layout.environment_pattern)) for c in per_node
            ]
        finally:
            for c in per_node:
                c.close()
        assert sum(counts) == count_keys(cluster_client, layout) == 60 * 9
        assert all(count > 0 for count in counts), counts
        keys = layout.customer("cus-7")
        slots = {
            key_slot(k.encode())
            for k in (
                keys.entitlements,
                keys.metadata,
                keys.index,
                keys.invalidated,
                keys.feature_usage("seats"),
                keys.credit("tok") + "#timestamp",
            )
        }
        assert len(slots) == 1
        everything = msg(factory.invalidation(200, everything=True))
        store.apply(everything)
        left = set(cluster_client.scan_iter(match=layout.environment_pattern, count=1000))
        assert left == {layout.environment_invalidated} | {
            layout.customer(f"cus-{i}").deleted for i in range(60)
        }
    finally:
        backend.cleanup()


def test_cluster_layout_wraps_the_customer_in_a_hash_tag() -> None:
    keys = KeyLayout("prod", cluster=True).customer("acme:eu", "r:1")
    assert keys.entitlements == "prod:{c_acme:eu:r_r:1}"
    assert keys.invalidated == "prod:{c_acme:eu:r_r:1}#invalidated"
    assert (
        len({key_slot(k.encode()) for k in (keys.entitlements, keys.lock, keys.credit("x"))}) == 1
    )


def test_unreachable_cluster_is_store_unavailable() -> None:
    settings = Settings(redis_cluster=True, redis_port=free_port(), redis_timeout_secs=0.5)
    with pytest.raises(StoreUnavailable, match="Redis is unavailable"):
        connect(settings)


def test_cluster_mode_against_a_single_server_is_a_store_error(
    redis_server: RedisServer,
) -> None:
    settings = Settings(redis_cluster=True, redis_port=redis_server.port)
    with pytest.raises(StoreError, match="Cluster mode is not enabled"):
        connect(settings)
