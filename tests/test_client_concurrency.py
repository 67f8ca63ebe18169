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
from cache_pipeline.keys import KeyLayout
from tests.support.edge import STUB_API_KEY, EdgeStub, snapshot_body
from tests.support.servers import RedisServer, wait_until

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


def test_the_miss_lock_is_held_during_the_fetch_and_released_after(
    redis_server: RedisServer, slow_stub: EdgeStub
) -> None:
    customer = f"cus-{uuid.uuid4().hex[:10]}"
    slow_stub.put(customer, snapshot_body(features={"seats": 1}))
    settings = _settings(redis_server, slow_stub)
    lock = KeyLayout(settings["environment_prefix"]).customer(customer).lock
    client = redis_server.client()
    with EntitlementsCache(options=OPTIONS, **settings) as cache:
        reader = threading.Thread(target=cache.get_entitlements, args=(customer,))
        reader.start()
        token = str(wait_until(lambda: client.get(lock), timeout=10, what="the miss lock"))
        ttl_ms = client.pttl(lock)
        reader.join(30)
    assert len(token) == 32
    assert 0 < ttl_ms <= OPTIONS.lock_ttl * 1000
    assert client.exists(lock) == 0
    client.close()


def test_a_lock_left_by_a_dead_reader_only_delays_the_answer(
    redis_server: RedisServer, slow_stub: EdgeStub
) -> None:
    customer = f"cus-{uuid.uuid4().hex[:10]}"
    slow_stub.put(customer, snapshot_body(features={"seats": 1}))
    settings = _settings(redis_server, slow_stub)
    lock = KeyLayout(settings["environment_prefix"]).customer(customer).lock
    client = redis_server.client()
    client.set(lock, "someone-else", px=60_000)  # its holder died before writing
    waiting = ReaderOptions(upstream_retries=0, lock_wait_seconds=0.3, poll_interval_seconds=0.02)
    with EntitlementsCache(options=waiting, **settings) as cache:
        answer = cache.get_entitlements(customer)
    assert answer.source == "upstream"
    assert slow_stub.requests(customer) == 1
    assert client.get(lock) == "someone-else"  # never deleted by a reader that did not own it
    client.delete(lock)
    client.close()
