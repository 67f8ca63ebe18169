"""The four Celery tasks, one per message type: each turns its message into its planned writes.

Every message the worker handles runs one of these tasks, whichever way it
came: a contract message, routed by its ``type`` (the argument is the parsed
message), or a Celery message a producer sent with
``app.send_task(name, args=[message], queue=<queue name>)``
(the argument is the message as a JSON object or string). A task checks that
the message is of its type and returns its ``Planned`` writes; the consumer
applies every planned message of a receive in one Redis round trip.

``TaskRunner`` is how the consumer runs them: each call goes through Celery's
tracer (``celery.app.trace.build_tracer``), the execution path of Celery's own
worker, with a request context whose id is the call's ``task_id`` (the SQS
message id, or the id of a Celery message). So Celery's signals fire for every
message (``task_prerun``, ``task_postrun``, ``task_success``, ``task_failure``),
``task.request`` and ``current_task`` are set while the task runs, and standard
instrumentation sees every task unchanged: Sentry's Celery integration
(``cache_pipeline.ops.error_reporting``), OpenTelemetry's Celery instrumentor,
signal handlers of a module named in CELERY_IMPORTS (Celery's ``imports``,
imported when the worker starts). No result is stored (``ignore_result``, no
result backend): the tracer's return value goes straight back to the consumer.

``InvalidMessage`` is the tasks' expected failure (their ``throws``): nothing
reports it (Celery's tracer and Sentry's integration both leave ``throws``
alone); the runner raises it again and the batch makes the message poison with
its reason. Anything else a task raises is an error of that task: Celery sends
``task_failure``, on which ``log_task_failure`` writes one line at ``error``
with the task's name and id (and the message's ``id``, ``type``, ``customer``
when known); Sentry's Celery integration reports it as one event (transaction
= the task's name, tag ``celery_task_id``); the runner raises it again and the
batch makes the message poison with reason ``unprocessable``. Celery's own
lines about each task (``celery.app.trace``: every success at info, every
failure at error) are left out: the consumer's lines and metrics already count
every message, and the failure line above says more.

The tracer costs CPU on every message: about 40 microseconds in the worker
(+20 % per message at BATCH_SIZE=10; a request context, the task and request
stacks, the result's text), and with SENTRY_DSN set Sentry's Celery
integration adds about 300 more (a scope, two spans and a broker connection
object per task run). docs/benchmarks.md ("Celery's tracer per message") has
the figures and the trade-offs.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from billiard.einfo import ExceptionInfo
from celery import Celery, Task, signals
from celery.app import trace
from loguru import logger
from pydantic import BaseModel
from sentry_sdk.integrations.logging import ignore_logger_for_events

from cache_pipeline.contract import messages as contract
from cache_pipeline.contract.messages import Message
from cache_pipeline.contract.plan import Planned, Planner
from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.tasks.delivery import UNKNOWN, Call, customer_of
from cache_pipeline.tasks.pipeline import TASK_NAMES

__all__ = ["TASK_NAMES", "MessageTask", "TaskRunner", "log_task_failure", "register_tasks"]

MESSAGE_CLASSES = (
    contract.EntitlementsUpdated,
    contract.UsageUpdated,
    contract.CreditsUpdated,
    contract.CacheInvalidated,
)
TRACE_LOGGER = "celery.app.trace"  # Celery's tracer logs each task's outcome on it

Tracer = Callable[[str, Any, dict[str, Any], dict[str, Any]], trace.trace_ok_t]


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
    """Register the four tasks on ``app`` and the error line of their failures; return them."""
    for cls in TASK_CLASSES:
        app.register_task(cls())
    signals.task_failure.connect(log_task_failure, weak=False, dispatch_uid=__name__)
    # That line is no Sentry event of its own: Sentry's Celery integration reports the error.
    ignore_logger_for_events(__name__)
    return {name: app.tasks[name] for name in TASK_NAMES.values()}  # type: ignore[misc]


class TaskRunner:
    """Runs the tasks of ``app`` by name through Celery's tracer, one tracer per task.

    Build it after ``sentry_sdk.init``: Sentry's Celery integration hooks the
    tracers built from then on (it wraps ``celery.app.trace.build_tracer``).
    """

    def __init__(self, app: Celery, names: list[str], *, hostname: str | None = None) -> None:
        self._hostname = hostname or socket.gethostname()
        queue = app.conf.task_default_queue
        self._delivery = {"exchange": "", "routing_key": queue, "redelivered": False}
        quiet_tracer_log(names)
        app.backend  # noqa: B018  resolved now (one for every thread), not on the first message
        # The module's attribute, looked up now: the one Sentry's integration may have wrapped.
        build = trace.build_tracer
        self._tracers: dict[str, Tracer] = {
            name: build(name, app.tasks[name], app.loader, self._hostname, app=app)
            for name in names
        }

    def __call__(self, call: Call) -> Planned:
        """The planned writes of ``call``'s task; raises what the task raised."""
        tracer = self._tracers.get(call.task)
        if tracer is None:
            raise InvalidMessage(InvalidReason.UNKNOWN_TYPE, f"no task named {call.task!r}")
        request = {
            "id": call.task_id,
            "task": call.task,
            "hostname": self._hostname,
            "delivery_info": dict(self._delivery),
            "is_eager": False,
        }
        retval, info, _runtime, _text = tracer(call.task_id, call.args, call.kwargs, request)
        if info is not None:  # FAILURE (the tracer has sent task_failure), or another end state
            raise info.retval
        if isinstance(retval, ExceptionInfo):  # the tracer failed before it had a request
            raise RuntimeError(f"Celery's tracer failed: {retval.exception!r}")
        planned: Planned = retval
        return planned


def log_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    traceback: Any = None,
    **_: Any,
) -> None:
    """``task_failure`` receiver: one line at error naming a task and what it raised.

    Only for the four tasks, and not for what a task ``throws`` (``InvalidMessage``).
    """
    if not isinstance(sender, MessageTask) or exception is None:
        return
    if isinstance(exception, sender.throws):
        return
    logger.bind(**_fields(task_id, args), task=sender.name, task_id=task_id).opt(
        exception=(type(exception), exception, traceback)
    ).error("task {} raised {}: {}", sender.name, type(exception).__name__, exception)


def quiet_tracer_log(names: Iterable[str]) -> None:
    """Keep Celery's tracer from writing a line per task run of ``names``.

    The tracer logs every success at info, deciding when it is built (so call
    this first), and every failure with a line of its own, which
    ``log_task_failure`` writes instead. Its other lines (internal errors) stay.
    """
    tracer_logger = logging.getLogger(TRACE_LOGGER)
    if tracer_logger.getEffectiveLevel() < logging.WARNING:
        tracer_logger.setLevel(logging.WARNING)
    for existing in tracer_logger.filters:
        if isinstance(existing, _OwnFailureLines):
            existing.names.update(names)
            return
    tracer_logger.addFilter(_OwnFailureLines(names))


class _OwnFailureLines(logging.Filter):
    """Drops the tracer's failure line of a task whose failures ``log_task_failure`` writes."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.names = set(names)
        self._format = trace.LOG_FAILURE.strip()

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        return not (
            record.msg == self._format and isinstance(data, dict) and data.get("name") in self.names
        )


def _fields(task_id: str | None, args: Any) -> dict[str, Any]:
    """The ``id``, ``type`` and ``customer`` of the message a task was given, when known."""
    if isinstance(args, list | tuple) and args and isinstance(args[0], MESSAGE_CLASSES):
        message = args[0]
        return {"id": message.id, "type": message.type, "customer": customer_of(message)}
    return {"id": task_id, "type": UNKNOWN, "customer": None}
