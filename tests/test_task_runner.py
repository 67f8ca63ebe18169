"""The four tasks and their runner, in process: each call runs through Celery's tracer, the
task plans its message, errors name the task.

A real Celery app with the registered tasks; no broker is contacted.
(tests/test_task_signals.py and tests/test_sentry.py check the same through the real worker.)
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import signals
from celery.utils.dispatch import Signal
from loguru import logger

from cache_pipeline.config import load_worker_settings
from cache_pipeline.contract.plan import Planned, Planner
from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.tasks.app import PipelineApp, create_app
from cache_pipeline.tasks.delivery import Call
from cache_pipeline.tasks.handlers import TaskRunner
from cache_pipeline.tasks.pipeline import TASK_NAMES
from tests.support import factory

USAGE = TASK_NAMES["usage.updated"]


@pytest.fixture
def app() -> PipelineApp:
    settings = load_worker_settings(
        queue_url="http://127.0.0.1:1/000/q", environment_prefix="runner"
    )
    made = create_app(settings)
    made.planner = Planner.from_settings(settings)
    return made


@pytest.fixture
def runner(app: PipelineApp) -> TaskRunner:
    return TaskRunner(app, list(TASK_NAMES.values()))


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    """Every log record of the test, as its level, message and extra fields."""
    seen: list[dict[str, Any]] = []

    def sink(message: Any) -> None:
        record = message.record
        seen.append({"level": record["level"].name, "msg": record["message"], **record["extra"]})

    handler = logger.add(sink, level="DEBUG")
    yield seen
    logger.remove(handler)


@pytest.fixture
def fired() -> Iterator[list[tuple[str, str, Any]]]:
    """(signal, task id, detail) for every task signal Celery sends during the test."""
    seen: list[tuple[str, str, Any]] = []

    def prerun(sender: Any, task_id: str, task: Any, **_: Any) -> None:
        seen.append(("prerun", task_id, (task.request.id, task.request.hostname)))

    def postrun(sender: Any, task_id: str, state: str, **_: Any) -> None:
        seen.append(("postrun", task_id, state))

    def success(sender: Any, result: Any, **_: Any) -> None:
        seen.append(("success", sender.request.id, type(result).__name__))

    def failure(sender: Any, task_id: str, exception: BaseException, **_: Any) -> None:
        seen.append(("failure", task_id, type(exception).__name__))

    receivers: list[tuple[Signal, Callable[..., Any]]] = [
        (signals.task_prerun, prerun),
        (signals.task_postrun, postrun),
        (signals.task_success, success),
        (signals.task_failure, failure),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver, weak=False)
    yield seen
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def test_a_call_runs_through_celerys_tracer_with_its_request(
    app: PipelineApp, fired: list[tuple[str, str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # first: a tracer decides when built whether it logs at info
    runner = TaskRunner(app, list(TASK_NAMES.values()), hostname="worker@here")
    body = factory.usage("cus-1", 100, "seats", 3, environment="runner")
    planned = runner(Call(USAGE, "sqs-7", [body], {}))
    assert isinstance(planned, Planned)
    assert fired == [
        ("prerun", "sqs-7", ("sqs-7", "worker@here")),
        ("success", "sqs-7", "Planned"),
        ("postrun", "sqs-7", "SUCCESS"),
    ]
    # Celery's own line per task ("succeeded in ...") is left out.
    assert [r for r in caplog.records if r.name == "celery.app.trace"] == []


def test_a_failing_call_sends_task_failure_and_raises_what_the_task_raised(
    runner: TaskRunner,
    fired: list[tuple[str, str, Any]],
    lines: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TypeError, match="positional argument"):
        runner(Call(USAGE, "celery-3", [{}, "one too many"], {}))
    assert fired == [
        ("prerun", "celery-3", ("celery-3", socket.gethostname())),
        ("failure", "celery-3", "TypeError"),
        ("postrun", "celery-3", "FAILURE"),
    ]
    assert len([line for line in lines if line["level"] == "ERROR"]) == 1
    assert [r for r in caplog.records if r.name == "celery.app.trace"] == []


def test_an_expected_failure_is_raised_as_it_is_and_logged_at_no_error(
    runner: TaskRunner, fired: list[tuple[str, str, Any]], lines: list[dict[str, Any]]
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        runner(Call(USAGE, "celery-4", ["{not json"], {}))
    assert caught.value.reason is InvalidReason.NOT_JSON
    # Celery sends task_failure for a task's `throws` too: its receivers decide.
    assert [signal for signal, _, _ in fired] == ["prerun", "failure", "postrun"]
    assert [line for line in lines if line["level"] == "ERROR"] == []


def test_a_parsed_message_and_a_celery_payload_give_the_same_plan(
    app: PipelineApp, runner: TaskRunner
) -> None:
    body = factory.usage("cus-1", 100, "seats", 3, environment="runner")
    assert app.planner is not None
    message = app.planner.parse(json.dumps(body))
    raw = runner(Call(USAGE, "sqs-1", (message,), {}, message))
    celery = runner(Call(USAGE, "celery-1", [body], {}))
    text = runner(Call(USAGE, "celery-2", [json.dumps(body)], {}))
    assert isinstance(raw, Planned)
    assert raw.steps == celery.steps == text.steps


def test_a_message_of_another_type_is_poison_and_no_error(
    runner: TaskRunner, lines: list[dict[str, Any]]
) -> None:
    body = factory.credits("cus-1", 100, "ai", 3)
    with pytest.raises(InvalidMessage) as caught:
        runner(Call(USAGE, "celery-1", [body], {}))
    assert caught.value.reason is InvalidReason.UNKNOWN_TYPE
    with pytest.raises(InvalidMessage) as unknown:
        runner(Call("cache_pipeline.nothing", "celery-2", [body], {}))
    assert unknown.value.reason is InvalidReason.UNKNOWN_TYPE
    assert [line for line in lines if line["level"] == "ERROR"] == []


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(5, {}), ([{}, "one too many"], {}), ([{}], {"extra": 1})],
    ids=["args-not-a-list", "two-args", "a-kwarg"],
)
def test_an_unexpected_error_is_raised_and_logged_with_the_task_name(
    runner: TaskRunner, lines: list[dict[str, Any]], args: Any, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError):
        runner(Call(USAGE, "celery-9", args, kwargs))
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert (error["task"], error["task_id"], error["id"]) == (USAGE, "celery-9", "celery-9")
    assert error["msg"].startswith(f"task {USAGE} raised TypeError")


def test_a_task_outside_a_worker_says_so(app: PipelineApp) -> None:
    app.planner = None
    with pytest.raises(RuntimeError, match="only inside a cache-pipeline worker"):
        app.tasks[USAGE].run({})
