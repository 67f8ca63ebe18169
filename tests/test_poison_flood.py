"""Poison floods: the guard's window and bound, then the real worker under a flood."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from cache_pipeline.config import load_settings
from cache_pipeline.errors import ConfigError
from cache_pipeline.tasks.flood_window import FloodLimits, FloodWindow
from tests.support import factory
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.worker import Workers, create_queue, queue_depth, send, worker_env


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(guard: FloodWindow, pattern: str) -> list[bool]:
    """``pattern``: one character per message, ``x`` invalid, ``.`` valid."""
    return [guard.record(invalid=c == "x") for c in pattern]


def test_nothing_trips_below_the_minimum_count() -> None:
    guard = FloodWindow(FloodLimits(ratio=0.5, window=100, min_messages=5))
    assert feed(guard, "xxxx") == [False] * 4
    assert guard.record(invalid=True) is True
    assert guard.paused


def test_a_steady_share_below_the_bound_never_trips() -> None:
    guard = FloodWindow(FloodLimits(ratio=0.5, window=10, min_messages=5))
    assert not any(feed(guard, "x.." * 500))
    assert guard.reason is None


def test_trips_when_the_share_in_the_window_reaches_the_bound() -> None:
    guard = FloodWindow(FloodLimits(ratio=0.5, window=10, min_messages=5))
    assert feed(guard, "." * 50 + "xxxx") == [False] * 54  # 4 of the last 10
    assert guard.record(invalid=True) is True  # 5 of the last 10
    reason = guard.reason
    assert reason is not None
    assert "5 of the last 10 messages were invalid" in reason
    assert "POISON_FLOOD_RATIO=0.5" in reason
    assert "POISON_FLOOD_WINDOW=10" in reason


def test_old_invalid_messages_slide_out_of_the_window() -> None:
    guard = FloodWindow(FloodLimits(ratio=0.5, window=10, min_messages=10))
    for _ in range(100):  # every 10 consecutive messages hold 4 invalid ones
        assert not any(feed(guard, "xxxx......"))


def test_once_tripped_every_message_is_refused_until_the_cooldown() -> None:
    clock = Clock()
    guard = FloodWindow(FloodLimits(ratio=0.5, window=10, min_messages=4, cooldown=60), clock=clock)
    assert feed(guard, "xxxx") == [False, False, False, True]
    assert guard.record(invalid=False) is True
    clock.now += 59
    assert guard.paused
    assert guard.seconds_left() == pytest.approx(1)
    assert guard.reason is not None
    assert "resumes after 60s" in guard.reason
    clock.now += 1
    assert not guard.paused
    assert guard.reason is None
    assert feed(guard, "xxx") == [False] * 3  # the window starts empty again
    assert guard.record(invalid=True) is True


def test_a_cooldown_of_zero_waits_for_a_restart() -> None:
    clock = Clock()
    guard = FloodWindow(FloodLimits(ratio=1.0, window=3, min_messages=3, cooldown=0), clock=clock)
    assert feed(guard, "xxx")[-1] is True
    clock.now += 10**9
    assert guard.paused
    assert guard.seconds_left() is None
    assert guard.reason is not None
    assert "restart the worker" in guard.reason


def test_ratio_zero_turns_the_guard_off() -> None:
    guard = FloodWindow(FloodLimits(ratio=0, window=10, min_messages=1))
    assert not any(feed(guard, "x" * 1000))


@given(
    st.lists(st.booleans(), max_size=300),
    st.floats(min_value=0.01, max_value=1),
    st.integers(min_value=1, max_value=30),
    st.integers(min_value=1, max_value=40),
)
def test_the_guard_trips_exactly_when_a_recount_of_the_window_says_so(
    outcomes: list[bool], ratio: float, window: int, minimum: int
) -> None:
    guard = FloodWindow(FloodLimits(ratio=ratio, window=window, min_messages=minimum, cooldown=0))
    for i, invalid in enumerate(outcomes):
        last = outcomes[max(0, i + 1 - window) : i + 1]
        expected = len(last) >= minimum and sum(last) >= ratio * len(last)
        tripped = guard.record(invalid=invalid)
        assert tripped == expected
        if tripped:
            break


def test_the_bound_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POISON_FLOOD_RATIO", "0.25")
    monkeypatch.setenv("POISON_FLOOD_WINDOW", "40")
    monkeypatch.setenv("POISON_FLOOD_MIN_MESSAGES", "8")
    monkeypatch.setenv("POISON_FLOOD_COOLDOWN_SECS", "0")
    assert FloodLimits.from_settings(load_settings()) == FloodLimits(0.25, 40, 8, 0.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POISON_FLOOD_RATIO", "1.5"),
        ("POISON_FLOOD_RATIO", "-0.1"),
        ("POISON_FLOOD_WINDOW", "0"),
        ("POISON_FLOOD_MIN_MESSAGES", "x"),
        ("POISON_FLOOD_COOLDOWN_SECS", "-1"),
    ],
)
def test_a_bad_bound_stops_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}={value!r}"):
        load_settings()


# --- the real worker under a flood ------------------------------------------------------------

FLOOD_ENV = {
    "POISON_FLOOD_RATIO": "0.5",
    "POISON_FLOOD_WINDOW": "20",
    "POISON_FLOOD_MIN_MESSAGES": "10",
}
PAUSES = "persistent_cache_poison_flood_pauses_total"


@pytest.fixture
def flood_queues(sqs_server: SqsServer) -> tuple[str, str]:
    client = sqs_server.client()
    return create_queue(client), create_queue(client)


@pytest.fixture
def flood_workers(
    flood_queues: tuple[str, str],
    sqs_server: SqsServer,
    redis_server: RedisServer,
    redis_client: redis.Redis,
    prefix: str,
) -> Iterator[Workers]:
    queue, dlq = flood_queues
    env = worker_env(queue, sqs_server, redis_server, prefix, DEAD_LETTER_QUEUE_URL=dlq)
    manager = Workers({**env, **FLOOD_ENV})
    yield manager
    manager.stop_all()
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.unlink(key)


def flood(count: int) -> tuple[list[dict[str, Any] | str], int]:
    """Three invalid messages for each valid one (an upstream schema change); invalid count."""
    bodies: list[dict[str, Any] | str] = []
    for i in range(count):
        bodies.append(factory.entitlements(f"cus-{i}", 100 + i, features={"seats": i}))
        bodies.extend(
            factory.envelope("entitlements.updated.v2", 100 + i, {"customer": f"cus-{i}"})
            for _ in range(3)
        )
    return bodies, 3 * count


def test_a_flood_stops_the_worker_instead_of_filling_the_dlq(
    flood_workers: Workers, flood_queues: tuple[str, str], sqs_server: SqsServer
) -> None:
    queue, dlq = flood_queues
    worker = flood_workers.start(POISON_FLOOD_COOLDOWN_SECS="0")
    bodies, invalid = flood(60)
    send(sqs_server, queue, bodies)

    wait_until(lambda: worker.counter(PAUSES) == 1, timeout=30, what="flood pause")
    response = worker.http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "DOWN"
    assert body["reason"] == "poison_flood"
    assert body["message"].startswith("poison flood:")
    assert "POISON_FLOOD_RATIO=0.5" in body["message"]
    assert "restart the worker" in body["message"]

    parked = worker.counter("persistent_cache_messages_parked_total", destination="dlq")
    processed = sum(
        worker.counter("persistent_cache_messages_processed_total", type=t)
        for t in ("entitlements.updated",)
    )
    assert parked < 20  # about one window's worth, not the whole flood
    wait_until(lambda: queue_depth(sqs_server, dlq) == parked, what="DLQ holds the parked ones")
    # nothing lost: every message not written or parked is still on the queue
    wait_until(
        lambda: queue_depth(sqs_server, queue) == len(bodies) - parked - processed,
        what="the rest stays on the queue",
    )
    assert queue_depth(sqs_server, queue) >= invalid - parked
    print(
        f"flood: sent {len(bodies)} ({invalid} invalid), parked {parked:g}, written {processed:g}"
    )
    assert "poison flood" in worker.output()


def test_after_the_cooldown_the_worker_resumes_and_trips_again(
    flood_workers: Workers, flood_queues: tuple[str, str], sqs_server: SqsServer
) -> None:
    queue, dlq = flood_queues
    worker = flood_workers.start(POISON_FLOOD_COOLDOWN_SECS="2")
    bodies, invalid = flood(60)
    send(sqs_server, queue, bodies)

    wait_until(lambda: worker.counter(PAUSES) >= 3, timeout=60, what="three pauses")
    parked = worker.counter("persistent_cache_messages_parked_total", destination="dlq")
    assert parked < 3 * 20 + 20  # at most about a window per pause
    assert parked < invalid / 2
    wait_until(lambda: queue_depth(sqs_server, dlq) >= parked, what="DLQ holds the parked ones")
    assert "resumes after 2s" in worker.output()
    assert "consumption resumed" in worker.output()
