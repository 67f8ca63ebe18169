"""How a command ends when it cannot do its work: one line on stderr, an exit code by class.

The line is ``cache-pipeline: <what failed>: <why>``: the dependency and its address
(``Redis 127.0.0.1:6379``, ``SQS queue https://...``, ``Edge API https://...``) and
the error the package raised, never a traceback. The exit code says which class
failed (``ExitCode``), the same for every command and for ``doctor``:

====  ==========================================================================
code  what failed
====  ==========================================================================
0     nothing
1     the command's own work (a redrive that left messages behind, a resync with
      failed scopes, an input line that is not valid), or an error of no class below
2     the settings or the command line (a bad value, QUEUE_URL or
      DEAD_LETTER_QUEUE_URL missing, REDIS_TLS_CA_FILE unreadable, a bad option)
3     Redis (unreachable, credentials refused, an ACL refusal, a schema marker that
      forbids writing)
4     SQS (a missing queue, no or refused AWS credentials, access denied,
      unreachable, throttled)
5     the Edge API (unreachable, the API key refused, an unusable answer)
====  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

from cache_pipeline.config import Settings
from cache_pipeline.errors import (
    CachePipelineError,
    ConfigError,
    QueueUnavailable,
    StoreError,
    StoreUnavailable,
    UpstreamError,
    UpstreamUnavailable,
)


class ExitCode(IntEnum):
    """The exit code of each class of failure (the table above)."""

    OK = 0
    FAILED = 1
    SETTINGS = 2
    REDIS = 3
    SQS = 4
    EDGE_API = 5


def exit_code_of(exc: CachePipelineError) -> ExitCode:
    """The class of a failure, as an exit code."""
    if isinstance(exc, ConfigError):
        return ExitCode.SETTINGS
    if isinstance(exc, StoreError | StoreUnavailable):
        return ExitCode.REDIS
    if isinstance(exc, QueueUnavailable):
        return ExitCode.SQS
    if isinstance(exc, UpstreamError | UpstreamUnavailable):
        return ExitCode.EDGE_API
    return ExitCode.FAILED


class Failed(Exception):
    """A command could not go on: ``what`` failed because of ``cause``."""

    def __init__(self, what: str, cause: CachePipelineError) -> None:
        super().__init__(f"{what}: {cause}")
        self.what = what
        self.cause = cause

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_of(self.cause)


def redis_name(settings: Settings) -> str:
    """The configured Redis, as an error line names it."""
    kind = "Redis Cluster" if settings.redis_cluster else "Redis"
    return f"{kind} {settings.redis_host}:{settings.redis_port}"


def dependency_of(exc: CachePipelineError, settings: Settings, queue: str | None) -> str | None:
    """What failed, with its address: the dependency that raised ``exc`` (None: not one)."""
    if isinstance(exc, StoreError | StoreUnavailable):
        return redis_name(settings)
    if isinstance(exc, QueueUnavailable):
        return f"SQS queue {queue or settings.queue_url}"
    if isinstance(exc, UpstreamError | UpstreamUnavailable):
        return f"Edge API {settings.edge_api_url}"
    return None


@contextmanager
def naming(settings: Settings, *, queue: str | None = None) -> Iterator[None]:
    """A dependency's failure inside ends the command naming that dependency.

    ``queue`` names the SQS queue (or queues) the work inside talks to
    (default: QUEUE_URL). Errors of no dependency pass through unchanged.
    """
    try:
        yield
    except CachePipelineError as exc:
        what = dependency_of(exc, settings, queue)
        if what is None:
            raise
        raise Failed(what, exc) from None


def ending(program: str, exc: Failed | CachePipelineError) -> tuple[str, ExitCode]:
    """The last line a command prints for a failure, and its exit code."""
    if isinstance(exc, Failed):
        return f"{program}: {exc.what}: {exc.cause}", exc.exit_code
    return f"{program}: {exc}", exit_code_of(exc)
