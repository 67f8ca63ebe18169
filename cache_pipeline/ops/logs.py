"""Logs: one JSON object per line on stdout, through loguru.

Each line carries ``time`` (UTC, ISO 8601), ``level`` (error, warn, info,
debug), ``logger`` (for records from stdlib logging), every field bound with
``logger.bind`` (``id``, ``type``, ``customer`` on lines about a message), the
message under LOG_MESSAGE_KEY and, when there is one, the error under
LOG_ERROR_KEY as ``{"type", "message", "stack"}``.

The stdlib loggers of celery, kombu, botocore, uvicorn (and everything else
that propagates to the root logger) are routed into the same sink, and so are
the notices Celery's worker prints outside logging. Every string
of every line goes through a redaction step that replaces the secrets of the
configuration and of the environment with ``**********``.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit

from loguru import logger

from cache_pipeline.config import Settings

if TYPE_CHECKING:
    from loguru import Message, Record

LEVELS = {"error": "ERROR", "warn": "WARNING", "info": "INFO", "debug": "DEBUG"}
LEVEL_LABELS = {"WARNING": "warn", "CRITICAL": "fatal"}
INTERCEPTED = (
    "celery",
    "kombu",
    "botocore",
    "boto3",
    "urllib3",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "sentry_sdk.errors",
)
OWN_HANDLER = ("celery.task", "multiprocessing")
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
MASK = "**********"
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces every known secret (and its URL-encoded forms) in strings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                forms.update({secret, quote(secret, safe=""), quote_plus(secret)})
        self._forms = sorted(forms, key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with every secret masked."""
        for form in self._forms:
            if form in value:
                value = value.replace(form, MASK)
        return value

    def deep(self, value: Any) -> Any:
        """A copy of ``value`` with every string (mapping keys too) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(key)): self.deep(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.deep(item) for item in value]
        return value  # numbers, None, and objects that are serialised (then redacted) later


def secret_values(
    settings: Settings, environ: Mapping[str, str] | None = None, *, include_dsn: bool = True
) -> list[str]:
    """The secrets that must never be written: settings and AWS credentials.

    ``include_dsn=False`` leaves out the Sentry DSN, which Sentry itself must receive.
    """
    environ = os.environ if environ is None else environ
    values = [
        secret.get_secret_value()
        for secret in (settings.server_api_key, settings.redis_password)
        if secret is not None
    ]
    values += [environ[name] for name in SECRET_ENV if environ.get(name)]
    if settings.sentry_dsn is not None and include_dsn:
        values.append(settings.sentry_dsn.get_secret_value())
        dsn = urlsplit(settings.sentry_dsn.get_secret_value())
        values += [part for part in (dsn.username, dsn.password) if part]
    return values


class JsonSink:
    """A loguru sink writing each record as one redacted JSON line."""

    def __init__(
        self,
        stream: IO[str],
        *,
        message_key: str,
        error_key: str,
        redactor: Redactor,
        min_level: int = 0,
    ) -> None:
        self.min_level = min_level
        self._stream = stream
        self._message_key = message_key
        self._error_key = error_key
        self._redactor = redactor
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        line = json.dumps(
            self._redactor.deep(self.fields(message.record)),
            ensure_ascii=False,
            default=lambda value: self._redactor.text(str(value)),
        )
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def notice(self, text: str) -> None:
        """An info line written with one ``os.write`` and no lock: safe in a signal handler."""
        if logger.level("INFO").no < self.min_level:
            return
        fields = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "info",
            self._message_key: text,
        }
        line = json.dumps(self._redactor.deep(fields), ensure_ascii=False) + "\n"
        try:
            os.write(self._stream.fileno(), line.encode())
        except (OSError, ValueError, io.UnsupportedOperation):
            return

    def fields(self, record: Record) -> dict[str, Any]:
        """The JSON object of one record, before redaction."""
        level = record["level"].name
        fields: dict[str, Any] = {
            "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
            "level": LEVEL_LABELS.get(level, level.lower()),
        }
        fields.update({k: v for k, v in record["extra"].items() if k not in fields})
        fields[self._message_key] = record["message"]
        exception = record["exception"]
        if exception is not None and exception.type is not None:
            fields[self._error_key] = {
                "type": exception.type.__name__,
                "message": str(exception.value),
                "stack": "".join(
                    traceback.format_exception(exception.type, exception.value, exception.traceback)
                ),
            }
        return fields


class InterceptHandler(logging.Handler):
    """Sends stdlib logging records to loguru (the recipe from loguru's documentation)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.bind(logger=record.name).opt(depth=depth, exception=record.exc_info).log(
            level, record.getMessage()
        )


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> None:
    """Route loguru and stdlib logging to one JSON-lines sink on ``stream`` (stdout).

    Safe to call again: the previous configuration is replaced.
    """
    global _active_sink
    level = LEVELS[settings.log_level]
    sink = JsonSink(
        stream if stream is not None else sys.stdout,
        message_key=settings.log_message_key,
        error_key=settings.log_error_key,
        redactor=Redactor(secret_values(settings)),
        min_level=logger.level(level).no,
    )
    logger.remove()
    logger.add(sink, level=level, format="{message}", backtrace=False, diagnose=False)
    _active_sink = sink
    intercept_stdlib(level)
    if "celery" in sys.modules:  # only where Celery is already loaded: the worker
        route_celery_notices()


_active_sink: JsonSink | None = None


def route_celery_notices() -> None:
    """Make the notices Celery's worker prints from its signal handlers JSON lines too.

    Celery writes them ("worker: Warm shutdown (MainProcess)") straight to stdout
    with ``safe_say``, outside logging; they go through the active sink instead.
    """
    import celery.apps.worker

    setattr(celery.apps.worker, "safe_say", _celery_say)  # noqa: B010 (no stub for it)


def _celery_say(msg: str, f: Any = None) -> None:
    if _active_sink is not None:
        _active_sink.notice(msg.strip())


def intercept_stdlib(level: str) -> None:
    """Route the root logger, and the libraries' own loggers, into loguru at ``level``."""
    logging.basicConfig(handlers=[InterceptHandler()], level=level, force=True)
    for name in INTERCEPTED:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    # Loggers that Celery sets up with a plain stderr handler of their own and no propagation,
    # unless they already have a handler: they get ours, directly.
    for name in OWN_HANDLER:
        library = logging.getLogger(name)
        library.handlers[:] = [InterceptHandler()]
        library.propagate = False
