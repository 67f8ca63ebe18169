"""Running a message's task in the consumer's thread, and reporting what it raises.

``TaskRunner`` calls the task registered under the routed name with the
message's arguments, for contract messages and Celery messages alike, and
returns its ``Planned`` writes. ``InvalidMessage`` is the tasks' expected
failure (their ``throws``): it goes back to the batch, which makes the message
poison with its reason. Anything else a task raises is an error of that task:
it is logged at ``error`` with the task's name and id (and the message's ``id``,
``type``, ``customer`` when known), and the same line reaches Sentry as one
event, scoped as Sentry's Celery integration scopes a task (transaction = the
task's name, tag ``celery_task_id``, extra ``celery-job.task_name``); then the
batch makes the message poison with reason ``unprocessable``.

The task is called directly rather than through Celery's tracer
(``celery.app.trace.build_tracer``): the tracer costs 35-45 microseconds of CPU
per call here (request context, stacks, result representation), a tenth of the
worker's whole budget per message, for signals and result handling this worker
does not use.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk
from celery import Celery
from loguru import logger

from cache_pipeline.batch import UNKNOWN, customer_of
from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.plan import Planned
from cache_pipeline.routing import Call


class TaskRunner:
    """Calls the tasks of ``app`` by name."""

    def __init__(self, app: Celery, names: list[str]) -> None:
        self._tasks: dict[str, Any] = {name: app.tasks[name] for name in names}

    def __call__(self, call: Call) -> Planned:
        """The planned writes of ``call``'s task; raises what the task raised."""
        task = self._tasks.get(call.task)
        if task is None:
            raise InvalidMessage(InvalidReason.UNKNOWN_TYPE, f"no task named {call.task!r}")
        try:
            planned: Planned = task.run(*call.args, **call.kwargs)
        except InvalidMessage:
            raise
        except Exception as exc:
            report_task_error(call, exc)
            raise
        return planned


def report_task_error(call: Call, exc: BaseException) -> None:
    """One error line naming the task, sent to Sentry (when enabled) with the task's scope."""
    with sentry_sdk.new_scope() as scope:
        scope.set_transaction_name(call.task)
        scope.set_tag("celery_task_id", call.task_id)
        scope.set_extra("celery-job", {"task_name": call.task})
        logger.bind(**_fields(call), task=call.task, task_id=call.task_id).opt(exception=exc).error(
            "task {} raised {}: {}", call.task, type(exc).__name__, exc
        )


def _fields(call: Call) -> dict[str, Any]:
    message = call.message
    if message is None:
        return {"id": call.task_id, "type": UNKNOWN, "customer": None}
    return {"id": message.id, "type": message.type, "customer": customer_of(message)}
