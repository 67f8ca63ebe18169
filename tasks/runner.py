"""Running a message's task through Celery's own tracer, in the consumer's thread.

``TaskRunner`` builds Celery's tracer once per task (``celery.app.trace.build_tracer``,
as Celery's worker does) and calls it for each routed message: the task's
signals, its ``throws``, Celery's failure log line naming the task, and Sentry's
Celery integration (which wraps that tracer) all apply. It returns the task's
``Planned`` writes, or raises what the task raised.

Celery logs every successful task at INFO; with one task per message that
would be a line per message, so its tracer logs successes only when LOG_LEVEL
is debug (the pipeline logs every message's outcome itself).
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.einfo import ExceptionInfo
from celery import Celery, states
from celery.app import trace

from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.plan import Planned
from cache_pipeline.routing import Call


class TaskRunner:
    """Calls the tasks of ``app`` by name through their tracers."""

    def __init__(
        self, app: Celery, names: list[str], *, hostname: str, queue: str, debug: bool
    ) -> None:
        if not debug:
            logging.getLogger(trace.__name__).setLevel(logging.WARNING)
        self._hostname = hostname
        self._delivery = {"exchange": "", "routing_key": queue}
        # Looked up at call time: Sentry's Celery integration replaces build_tracer.
        self._tracers: dict[str, Any] = {
            name: trace.build_tracer(name, app.tasks[name], app=app, hostname=hostname)
            for name in names
        }

    def __call__(self, call: Call) -> Planned:
        """The planned writes of ``call``'s task; raises the task's exception."""
        tracer = self._tracers.get(call.task)
        if tracer is None:
            raise InvalidMessage(InvalidReason.UNKNOWN_TYPE, f"no task named {call.task!r}")
        request = {
            "id": call.task_id,
            "task": call.task,
            "hostname": self._hostname,
            "delivery_info": self._delivery,
            "headers": {},
        }
        retval, info, _, _ = tracer(call.task_id, call.args, call.kwargs, request)
        if info is None and not isinstance(retval, ExceptionInfo):
            return retval  # type: ignore[no-any-return]
        raise _failure(info, retval)


def _failure(info: Any, retval: Any) -> BaseException:
    """The exception a failed trace carries."""
    if info is not None and info.state in (states.FAILURE, states.RETRY):
        exc = info.retval
        if isinstance(exc, BaseException):
            return exc
    if isinstance(retval, ExceptionInfo) and isinstance(retval.exception, BaseException):
        return retval.exception
    state = info.state if info is not None else "unknown"
    return RuntimeError(f"the task ended in state {state}")
