"""The four Celery tasks, one per message type: each turns its message into its planned writes.

Every message the worker handles runs one of these tasks, whichever way it
came: a contract message, routed by its ``type`` (the argument is the parsed
message), or a Celery message a producer sent with
``app.send_task(name, args=[message], queue=<queue name>)``
(the argument is the message as a JSON object or string). A task checks that
the message is of its type and returns its ``Planned`` writes; the consumer
applies every planned message of a receive in one Redis round trip.

``TaskRunner`` is how the consumer runs them: it calls the task registered
under the routed name with the message's arguments. ``InvalidMessage`` is the
tasks' expected failure (their ``throws``): it goes back to the batch, which
makes the message poison with its reason. Anything else a task raises is an
error of that task: it is logged at ``error`` with the task's name and id (and
the message's ``id``, ``type``, ``customer`` when known), the same line reaches
Sentry as one event scoped as Sentry's Celery integration scopes a task
(transaction = the task's name, tag ``celery_task_id``, extra
``celery-job.task_name``), and the batch makes the message poison with reason
``unprocessable``.

The runner calls the task itself rather than through Celery's tracer
(``celery.app.trace.build_tracer``): the tracer costs 35-45 microseconds of CPU
per call here (request context, stacks, result representation), a tenth of the
worker's whole budget per message, for signals and result handling this worker
does not use.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import sentry_sdk
from celery import Celery, Task
from loguru import logger
from pydantic import BaseModel

from cache_pipeline.contract.messages import Message
from cache_pipeline.contract.plan import Planned, Planner
from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.tasks.delivery import UNKNOWN, Call, customer_of
from cache_pipeline.tasks.pipeline import TASK_NAMES

__all__ = ["TASK_NAMES", "MessageTask", "TaskRunner", "register_tasks"]


class MessageTask(Task):  # type: ignore[type-arg]
    """Plans one contract message of ``message_type``."""

    message_type: ClassVar[str]
    throws = (InvalidMessage,)
    ignore_result = True
    typing = False

    def run(self, message: Any) -> Planned:
        planner = self.planner()
        return planner.plan(self.coerce(message, planner))

    def planner(self) -> Planner:
        planner: Planner | None = getattr(self.app, "planner", None)
        if planner is None:
            raise RuntimeError(f"task {self.name} runs only inside a cache-pipeline worker")
        return planner

    def coerce(self, payload: Any, planner: Planner) -> Message:
        """The payload as a validated message of this task's type."""
        if isinstance(payload, BaseModel):
            message: Message = payload  # type: ignore[assignment]
        elif isinstance(payload, str | bytes):
            message = planner.parse(payload)
        else:
            message = planner.parse(json.dumps(payload))
        if message.type != self.message_type:
            raise InvalidMessage(
                InvalidReason.UNKNOWN_TYPE,
                f"a {message.type} message was sent to task {self.name}",
                message.id,
            )
        return message


class EntitlementsUpdated(MessageTask):
    name = TASK_NAMES["entitlements.updated"]
    message_type = "entitlements.updated"


class UsageUpdated(MessageTask):
    name = TASK_NAMES["usage.updated"]
    message_type = "usage.updated"


class CreditsUpdated(MessageTask):
    name = TASK_NAMES["credits.updated"]
    message_type = "credits.updated"


class CacheInvalidated(MessageTask):
    name = TASK_NAMES["cache.invalidated"]
    message_type = "cache.invalidated"


TASK_CLASSES: tuple[type[MessageTask], ...] = (
    EntitlementsUpdated,
    UsageUpdated,
    CreditsUpdated,
    CacheInvalidated,
)


def register_tasks(app: Celery) -> dict[str, MessageTask]:
    """Register the four tasks on ``app``; return them by name."""
    for cls in TASK_CLASSES:
        app.register_task(cls())
    return {name: app.tasks[name] for name in TASK_NAMES.values()}  # type: ignore[misc]


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
