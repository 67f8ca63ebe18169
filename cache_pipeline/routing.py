"""Which task a queue message goes to, and with which arguments (pure).

A Celery message (``cache_pipeline.envelope``) names its task and carries its
arguments as sent. Any other body is a contract message: parsed once here and
routed by its ``type`` to the task of that type, whose only argument is the
parsed message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cache_pipeline.envelope import task_call
from cache_pipeline.messages import Message
from cache_pipeline.queue import Received

# The four per-type tasks, by the message type they take (tasks/handlers.py registers them).
TASK_NAMES = {
    "entitlements.updated": "cache_pipeline.entitlements_updated",
    "usage.updated": "cache_pipeline.usage_updated",
    "credits.updated": "cache_pipeline.credits_updated",
    "cache.invalidated": "cache_pipeline.cache_invalidated",
}

Parse = Callable[[str], Message]


@dataclass(frozen=True, slots=True)
class Call:
    """One message routed to a task: the task's name, an id for the run, its arguments."""

    task: str
    task_id: str
    args: Any
    kwargs: dict[str, Any]
    message: Message | None = None  # the parsed contract message (not for a Celery message)


def route(received: Received, parse: Parse) -> Call:
    """The call that handles ``received``.

    Raises ``InvalidMessage`` (from ``parse`` or ``task_call``) for a body that is
    neither a readable Celery message nor a valid contract message.
    """
    celery = task_call(received.body)
    if celery is not None:
        task_id = celery.task_id or received.message_id
        return Call(celery.task, task_id, celery.args, celery.kwargs)
    message = parse(received.body)
    return Call(TASK_NAMES[message.type], received.message_id, (message,), {}, message)
