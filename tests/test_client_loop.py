"""The whole local loop: edge stub → SQS → worker → Redis ← reader SDK (ours and Stigg's).

A change made on the stub reaches the cache through the queue and the real worker
process; both SDKs then read it as a hit, without asking the Edge API. A deletion on the
stub reaches the cache as an invalidation; after it, our SDK's refill from the stub lands
and Stigg's SDK reads it as a hit.
"""

from __future__ import annotations

import pytest

from cache_pipeline.client import EntitlementsCache, ReaderOptions
from cache_pipeline.client.answers import MeteredEntitlement
from tests.support.edge import STUB_API_KEY, EdgeStub, snapshot_body
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.stigg_sdk import run_stigg_sdk_with_events
from tests.support.worker import WorkerProcess, create_queue, worker_env

pytestmark = pytest.mark.slow


def test_stub_changes_reach_both_sdks_through_the_worker(
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
    customer = "acme:eu"
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
            assert cache.get_entitlements(customer).source == "upstream"  # the miss fills S
            assert stub.requests(customer) == 1

            stub.put(customer, snapshot_body(features={"seats": 7}))

            def updated() -> MeteredEntitlement | None:
                seats = cache.get_metered_entitlement(customer, "seats")
                return seats if seats.current_usage == 7 else None

            seen = wait_until(updated, timeout=30, what="the stub's change in the cache")
            assert seen is not None
            assert seen.has_access
            assert not seen.is_fallback
            assert stub.requests(customer) == 1  # read from the cache, not the stub

            call = {"getter": "getMeteredEntitlement", "customerId": customer,
                    "featureId": "seats"}  # fmt: skip
            results, events = run_stigg_sdk_with_events(redis_server.port, prefix, stub.url, [call])
            assert events == [["cacheHit"]]
            assert results[0]["currentUsage"] == 7
            assert results[0]["hasAccess"] is True
            assert stub.requests(customer) == 1

            assert stub.delete(customer).is_success
            scope = f"{prefix}:c_{customer}"
            client = redis_server.client()
            try:
                wait_until(lambda: client.exists(scope) == 0, what="the invalidation applied")
            finally:
                client.close()
            gone = cache.get_entitlements(customer)  # the stub no longer knows it: 404
            assert (gone.source, stub.requests(customer)) == ("fallback", 2)

            stub.put(customer, snapshot_body(features={"seats": 3}))  # skipped: no map
            refill = cache.get_metered_entitlement(customer, "seats")  # miss → Edge → write
            assert (refill.current_usage, stub.requests(customer)) == (3, 3)
            results, events = run_stigg_sdk_with_events(redis_server.port, prefix, stub.url, [call])
            assert events == [["cacheHit"]]  # our write-back after the invalidation landed
            assert results[0]["currentUsage"] == 3
            assert stub.requests(customer) == 3
    finally:
        stub.stop()
        worker.stop()
        sqs.delete_queue(QueueUrl=queue_url)
        sqs.close()
