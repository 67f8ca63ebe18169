"""The four Celery tasks, one per message type: each turns its message into its planned writes.

Every message the worker handles runs one of these tasks (``tasks.runner``),
whichever way it came: a contract message, routed by
its ``type`` (the argument is the parsed message), or a Celery message a
producer sent with ``app.send_task(name, args=[message], queue=<queue name>)``
(the argument is the message as a JSON object or string). A task checks that
the message is of its type and returns its ``Planned`` writes; the consumer
applies every planned message of a receive in one Redis round trip.

``InvalidMessage`` is the tasks' expected failure (``throws``): the message is
poison with its reason. Anything else a task raises is an error of that task:
it is logged with the task's name and reported to Sentry scoped to the task
(``tasks.runner``), and the message is poison with reason ``unprocessable``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from celery import Celery, Task
from pydantic import BaseModel

from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.messages import Message
from cache_pipeline.plan import Planned
from cache_pipeline.planner import Planner
from cache_pipeline.routing import TASK_NAMES

__all__ = ["TASK_NAMES", "MessageTask", "register_tasks"]


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
