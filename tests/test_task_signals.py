"""Celery's task signals in the real worker, seen by handlers a user loads with CELERY_IMPORTS.

The worker imports the modules named in CELERY_IMPORTS when it starts (Celery's
``imports``); the probe module below connects to the four task signals and writes
one JSON line per signal it receives. Every message runs its task through
Celery's tracer, so each fires ``task_prerun`` and ``task_postrun`` once, with
the task's request set, then ``task_success`` or ``task_failure``.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

from cache_pipeline.tasks.handlers import TASK_NAMES
from tests.support import factory
from tests.support.servers import SqsServer, wait_until
from tests.support.worker import Workers, create_queue, send, send_task

FAILED = "persistent_cache_messages_failed_total"
PARKED = "persistent_cache_messages_parked_total"
PROCESSED = "persistent_cache_messages_processed_total"

PROBE = textwrap.dedent(
    """
    import json, os, threading
    from celery import signals

    _lock = threading.Lock()

    def record(**fields):
        with _lock, open(os.environ["SIGNAL_PROBE_FILE"], "a") as out:
            out.write(json.dumps(fields) + "\\n")

    @signals.task_prerun.connect
    def prerun(sender=None, task_id=None, task=None, **_):
        request = task.request
        record(signal="prerun", task=sender.name, task_id=task_id, request_id=request.id,
               hostname=request.hostname, eager=request.is_eager)

    @signals.task_postrun.connect
    def postrun(sender=None, task_id=None, state=None, **_):
        record(signal="postrun", task=sender.name, task_id=task_id, state=state)

    @signals.task_success.connect
    def success(sender=None, result=None, **_):
        record(signal="success", task=sender.name, task_id=sender.request.id,
               result=type(result).__name__)

    @signals.task_failure.connect
    def failure(sender=None, task_id=None, exception=None, **_):
        record(signal="failure", task=sender.name, task_id=task_id,
               exception=type(exception).__name__, message=str(exception))

    record(signal="imported")
    """
)


def test_a_users_signal_handlers_see_every_task_run_and_its_failure(
    workers: Workers, queue_url: str, sqs_server: SqsServer, tmp_path: Path
) -> None:
    (tmp_path / "signal_probe.py").write_text(PROBE)
    seen = tmp_path / "signals.jsonl"
    dlq = create_queue(sqs_server.client())  # poison is parked once, never received again
    worker = workers.start(
        DEAD_LETTER_QUEUE_URL=dlq,
        CELERY_IMPORTS="signal_probe",
        SIGNAL_PROBE_FILE=str(seen),
        PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    )
    valid = [
        factory.entitlements("cus-1", 100, features={"seats": 1}),
        factory.usage("cus-1", 200, "seats", 2),
        factory.credits("cus-1", 300, "ai", 3),
        factory.invalidation(400, "cus-2"),
    ]
    send(sqs_server, queue_url, valid)
    snapshot = TASK_NAMES["entitlements.updated"]
    usage = TASK_NAMES["usage.updated"]
    body = factory.entitlements("cus-3", 500, features={"seats": 1})
    celery_ok = send_task(sqs_server, queue_url, snapshot, [body])
    failing = send_task(sqs_server, queue_url, snapshot, [body, "one argument too many"])
    expected = send_task(sqs_server, queue_url, usage, [factory.credits("cus-1", 1, "ai", 3)])
    runs = len(valid) + 3

    def records() -> list[dict[str, Any]]:
        text = seen.read_text() if seen.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    wait_until(
        lambda: (
            worker.counter(PARKED, destination="dlq") == 2
            and len([r for r in records() if r["signal"] == "postrun"]) == runs
        ),
        what=f"{runs} task runs, 2 parked",
    )
    assert worker.counter(FAILED, reason="unprocessable") == 1
    assert worker.counter(FAILED, reason="unknown_type") == 1
    assert sum(worker.counter(PROCESSED, type=t) for t in TASK_NAMES) == len(valid) + 1
    found = records()
    assert found[0] == {"signal": "imported"}  # once, when the worker started
    by_signal: dict[str, list[dict[str, Any]]] = {}
    for record in found[1:]:
        by_signal.setdefault(record["signal"], []).append(record)

    # (c) prerun and postrun once per message, with the task's request set to the run's id.
    prerun, postrun = by_signal["prerun"], by_signal["postrun"]
    assert len(prerun) == len(postrun) == runs
    ids = Counter(record["task_id"] for record in prerun)
    assert set(ids.values()) == {1}
    assert set(ids) == {r["task_id"] for r in postrun}
    assert {celery_ok, failing, expected} <= set(ids)
    hostname = f"cache-pipeline@{queue_url.rsplit('/', 1)[-1]}"
    for record in prerun:
        assert record["request_id"] == record["task_id"]
        assert (record["hostname"], record["eager"]) == (hostname, False)
    assert Counter(r["task"] for r in prerun) == Counter(
        [*(TASK_NAMES[b["type"]] for b in valid), snapshot, snapshot, usage]
    )
    states = {r["task_id"]: r["state"] for r in postrun}
    assert Counter(states.values()) == {"SUCCESS": runs - 2, "FAILURE": 2}
    assert states[failing] == states[expected] == "FAILURE"

    # task_success for every planned message, with the task's result.
    successes = by_signal["success"]
    assert len(successes) == runs - 2
    assert {r["result"] for r in successes} == {"Planned"}
    assert {r["task_id"] for r in successes} == {i for i, s in states.items() if s == "SUCCESS"}

    # (a) task_failure with the task's name and what it raised (InvalidMessage too: Celery
    # sends task_failure for a task's expected failures; only logging and Sentry skip them).
    failures = {r["task_id"]: r for r in by_signal["failure"]}
    assert set(failures) == {failing, expected}
    assert (failures[failing]["task"], failures[failing]["exception"]) == (snapshot, "TypeError")
    assert "positional argument" in failures[failing]["message"]
    assert (failures[expected]["task"], failures[expected]["exception"]) == (
        usage,
        "InvalidMessage",
    )
