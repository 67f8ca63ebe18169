"""Concurrent misses for one scope make exactly one Edge API request.

The recording Edge stub answers slowly (``latency``) so that every reader misses before
the first answer is written; it records every request it served.
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
from tests.support.edge_answers import answer, metered, request_line
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer, wait_until

THREADS = 50
OPTIONS = ReaderOptions(upstream_retries=0, upstream_timeout_seconds=5)
ENTRIES = [metered("seats", 10, 3)]


@pytest.fixture
def customer() -> str:
    return f"cus-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def slow_edge(customer: str) -> Iterator[RecordingEdge]:
    with RecordingEdge({request_line(customer): answer(*ENTRIES)}, latency=0.4) as edge:
        yield edge


def _settings(redis_server: RedisServer, edge: RecordingEdge) -> dict[str, Any]:
    return {
        "redis_port": redis_server.port,
        "environment_prefix": f"test-{uuid.uuid4().hex[:12]}",
        "edge_api_url": edge.url,
        "server_api_key": "concurrency-key",
    }


def _read_together(
    cache: EntitlementsCache, customer: str, threads: int, go: Any, ready: Any = None
) -> list[tuple[bool, int | float | None]]:
    """``threads`` threads wait for ``go``, then check the customer's seats; their answers."""
    answers: list[tuple[bool, int | float | None]] = []
    lock = threading.Lock()

    def read() -> None:
        go.wait(30)
        seats = cache.get_metered_entitlement(customer, "seats", requested_usage=1)
        with lock:
            answers.append((seats.has_access, seats.current_usage))

    workers = [threading.Thread(target=read) for _ in range(threads)]
    for worker in workers:
        worker.start()
    if ready is not None:
        ready.put("ready")
    for worker in workers:
        worker.join(60)
    return answers


def _process_main(settings: dict[str, Any], customer: str, threads: int, go: Any, out: Any) -> None:
    """Child process: its own EntitlementsCache and ``threads`` readers."""
    with EntitlementsCache(options=OPTIONS, **settings) as cache:
        out.put(_read_together(cache, customer, threads, go, ready=out))


def test_fifty_threads_make_one_edge_request(
    redis_server: RedisServer, slow_edge: RecordingEdge, customer: str
) -> None:
    go = threading.Event()
    with EntitlementsCache(options=OPTIONS, **_settings(redis_server, slow_edge)) as cache:
        starter = threading.Timer(0.2, go.set)
        starter.start()
        answers = _read_together(cache, customer, THREADS, go)
    assert answers == [(True, 3)] * THREADS
    assert len(slow_edge.requests) == 1


def test_two_processes_of_many_threads_make_one_edge_request(
    redis_server: RedisServer, slow_edge: RecordingEdge, customer: str
) -> None:
    settings = _settings(redis_server, slow_edge)
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
        answers = [tuple(a) for _ in children for a in out.get(timeout=60)]
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join(10)
        out.close()
        out.join_thread()
    assert answers == [(True, 3)] * THREADS
    assert len(slow_edge.requests) == 1
    assert [child.exitcode for child in children] == [0, 0]


def test_the_miss_lock_is_held_during_the_fetch_and_released_after(
    redis_server: RedisServer, slow_edge: RecordingEdge, customer: str
) -> None:
    settings = _settings(redis_server, slow_edge)
    lock = KeyLayout(settings["environment_prefix"]).customer(customer).lock
    client = redis_server.client()
    with EntitlementsCache(options=OPTIONS, **settings) as cache:
        reader = threading.Thread(target=cache.get_entitlements, args=(customer,))
        reader.start()
        token = str(wait_until(lambda: client.get(lock), timeout=10, what="the miss lock"))
        ttl_ms = client.pttl(lock)
        reader.join(30)
    assert lock.endswith("#lock")
    assert len(token) == 32
    assert 0 < ttl_ms <= OPTIONS.lock_ttl * 1000
    assert client.exists(lock) == 0
    for key in client.scan_iter(match=f"{settings['environment_prefix']}:*"):
        client.unlink(key)
    client.close()


def test_a_lock_left_by_a_dead_reader_only_delays_the_answer(
    redis_server: RedisServer, slow_edge: RecordingEdge, customer: str
) -> None:
    settings = _settings(redis_server, slow_edge)
    lock = KeyLayout(settings["environment_prefix"]).customer(customer).lock
    client = redis_server.client()
    client.set(lock, "someone-else", px=60_000)  # its holder died before writing
    waiting = ReaderOptions(upstream_retries=0, lock_wait_seconds=0.3, poll_interval_seconds=0.02)
    with EntitlementsCache(options=waiting, **settings) as cache:
        seats = cache.get_metered_entitlement(customer, "seats")
    assert (seats.has_access, seats.current_usage, seats.is_fallback) == (True, 3, False)
    assert len(slow_edge.requests) == 1
    assert client.get(lock) == "someone-else"  # never deleted by a reader that did not own it
    for key in client.scan_iter(match=f"{settings['environment_prefix']}:*"):
        client.unlink(key)
    client.close()
