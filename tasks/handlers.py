"""The four Celery tasks, one per message type.

Each takes one contract message: a parsed model when the raw-queue consumer
routes it, or the message as a JSON object or string when a producer calls the
task with Celery's protocol (``app.send_task(name, args=[message])``). The
task checks that the message is of its type and hands it to the writer: inside
the consumer's batch the write is staged (one round trip for the whole
receive) and the task returns None; on its own it is applied at once and the
task returns the outcome (``written``, ``stale``, ``policy``, ``invalidated``).
An ``InvalidMessage`` it raises makes the message poison.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from celery import Celery, Task
from pydantic import BaseModel

from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.messages import Message
from cache_pipeline.writer import Writer

TASK_NAMES = {
    "entitlements.updated": "cache_pipeline.entitlements_updated",
    "usage.updated": "cache_pipeline.usage_updated",
    "credits.updated": "cache_pipeline.credits_updated",
    "cache.invalidated": "cache_pipeline.cache_invalidated",
}


class MessageTask(Task):  # type: ignore[type-arg]
    """Applies one contract message of ``message_type``."""

    message_type: ClassVar[str]
    ignore_result = True
    typing = False

    def run(self, payload: Any) -> str | None:
        writer = self.writer()
        outcome = writer.write(self.coerce(payload, writer))
        return None if outcome is None else outcome.value

    def writer(self) -> Writer:
        writer: Writer | None = getattr(self.app, "writer", None)
        if writer is None:
            raise RuntimeError(f"task {self.name} runs only inside a cache-pipeline worker")
        return writer

    def coerce(self, payload: Any, writer: Writer) -> Message:
        """The payload as a validated message of this task's type."""
        if isinstance(payload, BaseModel):
            message: Message = payload  # type: ignore[assignment]
        elif isinstance(payload, str | bytes):
            message = writer.parse(payload)
        else:
            message = writer.parse(json.dumps(payload))
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
    """Register the four tasks on ``app``; return them by message type."""
    by_type: dict[str, MessageTask] = {}
    for cls in TASK_CLASSES:
        task = app.register_task(cls())
        by_type[cls.message_type] = app.tasks[task.name]  # type: ignore[assignment]
    return by_type


def tasks_by_type(app: Celery) -> dict[str, MessageTask]:
    """The registered tasks of ``app``, by message type."""
    return {kind: app.tasks[name] for kind, name in TASK_NAMES.items()}  # type: ignore[misc]
