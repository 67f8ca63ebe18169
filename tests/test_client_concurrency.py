"""Concurrent misses for one customer make exactly one upstream request.

The stub answers slowly (``--latency-ms``) so that every reader misses before
the first answer is written; the stub counts the requests it served.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cache_pipeline.client import EntitlementsCache, ReaderOptions
from tests.support.edge import STUB_API_KEY, EdgeStub, snapshot_body
from tests.support.servers import RedisServer

THREADS = 50
OPTIONS = ReaderOptions(upstream_retries=0, upstream_timeout_seconds=5)


@pytest.fixture(scope="module")
def slow_stub() -> Iterator[EdgeStub]:
    server = EdgeStub(latency_ms=400).start()
    yield server
    server.stop()


def _settings(redis_server: RedisServer, stub: EdgeStub) -> dict[str, Any]:
    return {
        "redis_port": redis_server.port,
        "environment_prefix": f"test-{uuid.uuid4().hex[:12]}",
        "edge_api_url": stub.url,
        "server_api_key": STUB_API_KEY,
    }


def _read_together(
    cache: EntitlementsCache, customer: str, threads: int, go: Any, ready: Any = None
) -> list[str]:
    """``threads`` threads wait for ``go``, then read the customer; their answers' sources."""
    sources: list[str] = []
    lock = threading.Lock()

    def read() -> None:
        go.wait(30)
        source = cache.get_entitlements(customer).source
        with lock:
            sources.append(source)

    workers = [threading.Thread(target=read) for _ in range(threads)]
    for worker in workers:
        worker.start()
    if ready is not None:
        ready.put("ready")
    for worker in workers:
        worker.join(60)
    return sources


def _process_main(settings: dict[str, Any], customer: str, threads: int, go: Any, out: Any) -> None:
    """Child process: its own EntitlementsCache and ``threads`` readers."""
    with EntitlementsCache(options=OPTIONS, **settings) as cache:
        out.put(_read_together(cache, customer, threads, go, ready=out))


def test_fifty_threads_make_one_upstream_request(
    redis_server: RedisServer, slow_stub: EdgeStub
) -> None:
    customer = f"cus-{uuid.uuid4().hex[:10]}"
    slow_stub.put(customer, snapshot_body(features={"seats": 1}))
    go = threading.Event()
    with EntitlementsCache(options=OPTIONS, **_settings(redis_server, slow_stub)) as cache:
        starter = threading.Timer(0.2, go.set)
        starter.start()
        sources = _read_together(cache, customer, THREADS, go)
    assert len(sources) == THREADS
    assert slow_stub.requests(customer) == 1
    assert sources.count("upstream") == 1


def test_two_processes_of_many_threads_make_one_upstream_request(
    redis_server: RedisServer, slow_stub: EdgeStub
) -> None:
    customer = f"cus-{uuid.uuid4().hex[:10]}"
    slow_stub.put(customer, snapshot_body(features={"seats": 1}))
    settings = _settings(redis_server, slow_stub)
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    out = context.Queue()
    children = [
        context.Process(target=_process_main, args=(settings, customer, THREADS // 2, go, out))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    try:
        assert [out.get(timeout=60) for _ in children] == ["ready", "ready"]
        go.set()
        sources = [source for _ in children for source in out.get(timeout=60)]
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join(10)
        out.close()
        out.join_thread()
    assert len(sources) == THREADS
    assert slow_stub.requests(customer) == 1
    assert sources.count("upstream") == 1
    assert [child.exitcode for child in children] == [0, 0]
