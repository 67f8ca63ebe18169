"""CPU per message of a task run through Celery's tracer, against calling ``task.run`` directly.

In one process, no I/O: the bench's steady workload (80 % usage, 10 % credits,
9.5 % snapshots, 0.5 % invalidations), parsed once, each message planned by its
task, first with a direct ``task.run`` (how the worker ran its tasks before),
then through ``TaskRunner`` (Celery's tracer, as the worker runs them now).
``--sentry`` repeats both with Sentry's Celery integration enabled as the
worker enables it (a DSN to a closed port: a task that succeeds sends nothing).

    python -m bench.tracer_cost [-n 5000] [--repeat 5] [--sentry]

Prints the median of ``--repeat`` passes, in microseconds of CPU per message.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import click

from bench.workload import generate
from cache_pipeline.config import load_worker_settings
from cache_pipeline.contract.plan import Planner
from cache_pipeline.tasks.app import create_app
from cache_pipeline.tasks.delivery import Call
from cache_pipeline.tasks.handlers import TaskRunner
from cache_pipeline.tasks.pipeline import TASK_NAMES

ENVIRONMENT = "tracer-cost"
CLOSED_DSN = "http://0123456789abcdef0123456789abcdef@127.0.0.1:9/1"


def _cpu_per_call(calls: list[Callable[[], Any]], repeat: int) -> float:
    """Median CPU microseconds per call over ``repeat`` passes."""
    passes = []
    for _ in range(repeat):
        started = time.process_time()
        for call in calls:
            call()
        passes.append((time.process_time() - started) / len(calls) * 1e6)
    return statistics.median(passes)


def measure(n: int, repeat: int) -> dict[str, float]:
    """µs per message: the direct call, the tracer, and their difference."""
    settings = load_worker_settings(
        queue_url="http://127.0.0.1:1/000/tracer-cost", environment_prefix=ENVIRONMENT
    )
    app = create_app(settings)
    planner = Planner.from_settings(settings)
    app.planner = planner
    runner = TaskRunner(app, list(TASK_NAMES.values()))
    messages = [planner.parse(json.dumps(m)) for m in generate(n).stream]
    calls = [Call(TASK_NAMES[m.type], m.id, (m,), {}, m) for m in messages]
    tasks = {name: app.tasks[name] for name in TASK_NAMES.values()}
    direct: list[Callable[[], Any]] = [partial(tasks[c.task].run, *c.args) for c in calls]
    traced: list[Callable[[], Any]] = [partial(runner, c) for c in calls]
    _cpu_per_call(direct + traced, 1)  # warm up
    figures = {"direct": _cpu_per_call(direct, repeat), "tracer": _cpu_per_call(traced, repeat)}
    figures["difference"] = figures["tracer"] - figures["direct"]
    return figures


@click.command()
@click.option("-n", "--messages", default=5000, show_default=True, help="messages per pass")
@click.option("--repeat", default=5, show_default=True, help="passes; the median is printed")
@click.option("--sentry", is_flag=True, help="also with Sentry's Celery integration enabled")
def main(messages: int, repeat: int, sentry: bool) -> None:
    rows = [("without Sentry", measure(messages, repeat))]
    if sentry:
        from cache_pipeline.ops.error_reporting import configure_sentry

        settings = load_worker_settings(sentry_dsn=CLOSED_DSN, disable_sentry=False)
        assert configure_sentry(settings, celery=True, fastapi=False)
        rows.append(("with Sentry (Celery integration)", measure(messages, repeat)))
    print(f"CPU µs per message, median of {repeat} passes of {messages} messages")
    print(f"{'':34} {'direct run':>11} {'tracer':>9} {'difference':>11}")
    for label, figures in rows:
        print(
            f"{label:34} {figures['direct']:11.1f} {figures['tracer']:9.1f}"
            f" {figures['difference']:+11.1f}"
        )


if __name__ == "__main__":
    main()
