"""The whole local loop: edge stub → SQS → worker → Redis ← reader SDK.

A change made on the stub reaches the cache through the queue and the real
worker process, and the SDK then reads it as a hit, without asking the upstream.
"""

from __future__ import annotations

import uuid

import pytest

from cache_pipeline.client import (
    CustomerEntitlements,
    EntitlementsCache,
    FeatureAccess,
    ReaderOptions,
)
from tests.support.edge import STUB_API_KEY, EdgeStub, snapshot_body
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.worker import WorkerProcess, create_queue, worker_env

pytestmark = pytest.mark.slow


def test_stub_changes_reach_the_sdk_through_the_worker(
    redis_server: RedisServer, sqs_server: SqsServer, prefix: str
) -> None:
    sqs = sqs_server.client()
    queue_url = create_queue(sqs)
    env = worker_env(queue_url, sqs_server, redis_server, prefix)
    worker = WorkerProcess(env | {"CACHE_UPDATE_POLICY": "UPDATE_IF_EXISTS"})
    stub = EdgeStub(
        env={
            "QUEUE_URL": queue_url,
            "SQS_ENDPOINT_URL": sqs_server.endpoint,
            "ENVIRONMENT_PREFIX": prefix,
        }
    )
    customer = f"cus-{uuid.uuid4().hex[:10]}"
    try:
        worker.start()
        stub.start()
        cache = EntitlementsCache(
            options=ReaderOptions(upstream_retries=0),
            redis_port=redis_server.port,
            environment_prefix=prefix,
            edge_api_url=stub.url,
            server_api_key=STUB_API_KEY,
        )
        with cache:
            stub.put(customer, snapshot_body(features={"seats": 1}))
            assert cache.get_entitlement(customer, "seats").source == "upstream"

            stub.put(customer, snapshot_body(features={"seats": 7}))

            def updated() -> FeatureAccess | None:
                access = cache.get_entitlement(customer, "seats")
                return access if access.current_usage == 7 else None

            seen = wait_until(updated, timeout=30, what="the stub's change in the cache")
            assert seen is not None
            assert seen.source == "cache"
            assert stub.requests(customer) == 1

            assert stub.request("DELETE", f"/v1/customers/{customer}/entitlements").is_success

            def invalidated() -> CustomerEntitlements | None:
                result = cache.get_entitlements(customer)
                return result if result.source == "upstream" else None

            gone = wait_until(invalidated, timeout=30, what="the invalidation in the cache")
            assert gone is not None
            assert gone.access_denied_reason == "CustomerNotFound"
    finally:
        stub.stop()
        worker.stop()
        sqs.delete_queue(QueueUrl=queue_url)
        sqs.close()
