"""One error tree for the whole service.

``CachePipelineError`` is the root. Two branches decide what the consumer does:

* ``InvalidMessage`` is never retried: the message is parked (DLQ or redrive).
* ``TransientError`` is retried later: the message is left on the queue.

Library errors (redis-py, botocore, httpx) are translated where they enter,
so the rest of the code only ever sees these classes.
"""

from __future__ import annotations

from enum import StrEnum


class CachePipelineError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(CachePipelineError):
    """A setting is missing or has a value that is not allowed."""


class InvalidReason(StrEnum):
    """Why a queue message is poison (CONTRACT.md section 1)."""

    NOT_JSON = "not_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    WRONG_ENVIRONMENT = "wrong_environment"
    UNSAFE_ID = "unsafe_id"  # a raw id that could name another scope's keys
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    UNPROCESSABLE = "unprocessable"  # handling it raised an unexpected error


def unprocessable(exc: BaseException, message_id: str | None = None) -> InvalidMessage:
    """The message whose handling raised ``exc``: poison, never retried in a loop."""
    return InvalidMessage(
        InvalidReason.UNPROCESSABLE, f"{type(exc).__name__}: {str(exc)[:200]}", message_id
    )


class InvalidMessage(CachePipelineError):
    """The message can never be applied, however often it is retried."""

    def __init__(self, reason: InvalidReason, detail: str, message_id: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.message_id = message_id

    def __reduce__(self) -> tuple[type[InvalidMessage], tuple[InvalidReason, str, str | None]]:
        # Celery's tracer checks that a task's exception survives pickling.
        return (type(self), (self.reason, self.detail, self.message_id))


class TransientError(CachePipelineError):
    """A dependency failed in a way that may heal; retry later, lose nothing."""


class StoreUnavailable(TransientError):
    """Redis could not be reached, did not answer in time, or cannot take writes now."""


class QueueFault(StrEnum):
    """Why a queue call failed (the ``fault`` of ``QueueUnavailable``)."""

    MISSING_QUEUE = "missing_queue"
    CREDENTIALS = "credentials"  # none found, or refused: unknown key, bad signature, expired
    ACCESS_DENIED = "access_denied"
    THROTTLED = "throttled"
    UNREACHABLE = "unreachable"  # network, timeout, a 5xx answer
    REFUSED = "refused"  # any other error answer (a request the queue will not take)


class QueueUnavailable(TransientError):
    """A queue call failed; nothing it was asked to do is known done.

    Every fault heals without a restart (a queue created, credentials rotated, a
    permission granted, throttling over): the caller backs off and tries again.
    """

    def __init__(self, fault: QueueFault, detail: str) -> None:
        super().__init__(f"{fault.value}: {detail}")
        self.fault = fault
        self.detail = detail

    def __reduce__(self) -> tuple[type[QueueUnavailable], tuple[QueueFault, str]]:
        return (type(self), (self.fault, self.detail))


class StoreError(CachePipelineError):
    """Redis answered with an error that retrying will not fix (auth, script bug)."""


class SchemaVersionMismatch(StoreError):
    """The Redis keyspace was written by an incompatible key-schema version."""


class InvalidArgument(CachePipelineError, ValueError):
    """A reader SDK call got an argument it can never accept (checked before any I/O)."""


class UpstreamUnavailable(TransientError):
    """The upstream API could not be reached, timed out or answered 5xx/429."""


class UpstreamError(CachePipelineError):
    """The upstream API refused the request (auth) or answered something unusable."""


class UpstreamRefused(UpstreamError):
    """The upstream API refused the credentials (401, 403): every other call will fail too."""


class UpstreamNotFound(UpstreamError):
    """The upstream API does not know the customer or resource (404)."""


class EntitlementsUnavailable(CachePipelineError):
    """Neither the cache nor the upstream API could answer an entitlement read."""
