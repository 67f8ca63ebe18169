"""Poison floods: the guard's window and bound, then the real worker under a flood."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache_pipeline.config import load_settings
from cache_pipeline.errors import ConfigError
from cache_pipeline.poison_guard import FloodBound, PoisonGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(guard: PoisonGuard, pattern: str) -> list[bool]:
    """``pattern``: one character per message, ``x`` invalid, ``.`` valid."""
    return [guard.record(invalid=c == "x") for c in pattern]


def test_nothing_trips_below_the_minimum_count() -> None:
    guard = PoisonGuard(FloodBound(ratio=0.5, window=100, min_messages=5))
    assert feed(guard, "xxxx") == [False] * 4
    assert guard.record(invalid=True) is True
    assert guard.paused


def test_a_steady_share_below_the_bound_never_trips() -> None:
    guard = PoisonGuard(FloodBound(ratio=0.5, window=10, min_messages=5))
    assert not any(feed(guard, "x.." * 500))
    assert guard.reason is None


def test_trips_when_the_share_in_the_window_reaches_the_bound() -> None:
    guard = PoisonGuard(FloodBound(ratio=0.5, window=10, min_messages=5))
    assert feed(guard, "." * 50 + "xxxx") == [False] * 54  # 4 of the last 10
    assert guard.record(invalid=True) is True  # 5 of the last 10
    reason = guard.reason
    assert reason is not None
    assert "5 of the last 10 messages were invalid" in reason
    assert "POISON_FLOOD_RATIO=0.5" in reason
    assert "POISON_FLOOD_WINDOW=10" in reason


def test_old_invalid_messages_slide_out_of_the_window() -> None:
    guard = PoisonGuard(FloodBound(ratio=0.5, window=10, min_messages=10))
    for _ in range(100):  # every 10 consecutive messages hold 4 invalid ones
        assert not any(feed(guard, "xxxx......"))


def test_once_tripped_every_message_is_refused_until_the_cooldown() -> None:
    clock = Clock()
    guard = PoisonGuard(FloodBound(ratio=0.5, window=10, min_messages=4, cooldown=60), clock=clock)
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
    guard = PoisonGuard(FloodBound(ratio=1.0, window=3, min_messages=3, cooldown=0), clock=clock)
    assert feed(guard, "xxx")[-1] is True
    clock.now += 10**9
    assert guard.paused
    assert guard.seconds_left() is None
    assert guard.reason is not None
    assert "restart the worker" in guard.reason


def test_ratio_zero_turns_the_guard_off() -> None:
    guard = PoisonGuard(FloodBound(ratio=0, window=10, min_messages=1))
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
    guard = PoisonGuard(FloodBound(ratio=ratio, window=window, min_messages=minimum, cooldown=0))
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
    assert FloodBound.from_settings(load_settings()) == FloodBound(0.25, 40, 8, 0.0)


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
