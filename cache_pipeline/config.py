"""Settings: validated models, read from the environment by the entry point.

``ReaderSettings`` is what the reader SDK reads (Redis, the environment prefix, the
Edge API); ``Settings`` adds the rest of the service's (the queue optional: commands
that do not consume); ``WorkerSettings`` requires QUEUE_URL (the worker, and the
commands that talk to the queue). Every variable of the published settings table
keeps its name, type and default. A bad value raises ``ConfigError`` with one line
naming the variable, the value and what is allowed; the CLI prints that line and
exits with code 2.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cache_pipeline.errors import ConfigError

NO_EXPIRY = -1
# WORKER_CONCURRENCY unset: consumers = max(AUTO_MIN_CONSUMERS, AUTO_RECEIVES // BATCH_SIZE)
AUTO_RECEIVES = 16
AUTO_MIN_CONSUMERS = 12
SQS_READ_TIMEOUT_SECS = 20  # cache_pipeline.sqs.wire.READ_TIMEOUT: above SQS's longest long poll
SQS_BATCH_LIMIT = 10  # SQS's most messages per receive and entries per batch call
# Seconds from SIGTERM until the worker's consumers are stopped, whatever Redis and SQS do
# (cache_pipeline/tasks/shutdown.py); the process exits well within a second after that.
# Below docker compose's default stop grace period (10 s) and Kubernetes' default
# terminationGracePeriodSeconds (30 s): SIGKILL never lands on a worker still settling its
# messages. compose.yaml's stop_grace_period and the chart's (and kustomize base's)
# terminationGracePeriodSeconds are at least SHUTDOWN_GRACE_SECS.
SHUTDOWN_BUDGET_SECS = 8
SHUTDOWN_GRACE_SECS = 15  # the least grace a supervisor should give: the budget and a margin
_MODULE = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
MODULE_LIST = rf"^\s*{_MODULE}(\s*,\s*{_MODULE})*\s*$"  # CELERY_IMPORTS: a, b.c


class CacheUpdatePolicy(StrEnum):
    """CONTRACT.md rule 2."""

    UPDATE_IF_EXISTS = "UPDATE_IF_EXISTS"
    UPSERT = "UPSERT"


LogLevel = Literal["error", "warn", "info", "debug"]


def _allowed(text: str) -> Any:
    return {"allowed": text}


Port = Annotated[int, Field(ge=1, le=65535, json_schema_extra=_allowed("an integer 1..65535"))]
Flag = Annotated[bool, Field(json_schema_extra=_allowed("0 or 1"))]


class ReaderSettings(BaseSettings):
    """What the reader SDK reads, from environment variables of the same name."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, validate_default=True
    )

    server_api_key: SecretStr | None = None
    environment_prefix: Annotated[
        str,
        Field(
            min_length=1,
            max_length=128,
            pattern=r"^[^\s:{}#*?\[\]\\]+$",
            json_schema_extra=_allowed("1..128 characters without spaces or : { } # * ? [ ] \\"),
        ),
    ] = "production"

    redis_host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    redis_port: Port = 6379
    redis_db: Annotated[int, Field(ge=0, le=15, json_schema_extra=_allowed("an integer 0..15"))] = 0
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_tls: Flag = False
    redis_tls_ca_file: str | None = None
    redis_cluster: Flag = False
    redis_timeout_secs: Annotated[
        float, Field(gt=0, le=60, json_schema_extra=_allowed("seconds, more than 0 and at most 60"))
    ] = 2.0
    keys_ttl_in_secs: Annotated[
        int, Field(json_schema_extra=_allowed("a positive number of seconds, or -1 for no expiry"))
    ] = 604800
    edge_api_url: Annotated[
        str, Field(pattern=r"^https?://\S+$", json_schema_extra=_allowed("an http(s) URL"))
    ] = "https://edge.api.stigg.io"

    @field_validator("keys_ttl_in_secs")
    @classmethod
    def _ttl(cls, value: int) -> int:
        if value != NO_EXPIRY and value < 1:
            raise ValueError("must be a positive number of seconds or -1")
        return value

    @field_validator("redis_username", "redis_tls_ca_file", mode="before")
    @classmethod
    def _empty_reader_value_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _cluster_has_one_database(self) -> ReaderSettings:
        if self.redis_cluster and self.redis_db != 0:
            raise ValueError(
                f"REDIS_DB={self.redis_db} cannot be used with REDIS_CLUSTER=1: a Redis Cluster"
                " has database 0 only (unset REDIS_DB or set it to 0)"
            )
        return self

    @property
    def ttl(self) -> int | None:
        """Seconds every written key lives, or None for no expiry."""
        return None if self.keys_ttl_in_secs == NO_EXPIRY else self.keys_ttl_in_secs


class Settings(ReaderSettings):
    """Every setting of the service; QUEUE_URL optional (``WorkerSettings`` requires it)."""

    aws_region: str = "us-east-1"
    queue_url: str | None = None
    batch_size: Annotated[
        int,
        Field(
            ge=1,
            le=SQS_BATCH_LIMIT,
            json_schema_extra=_allowed(
                f"an integer 1..{SQS_BATCH_LIMIT} (SQS receives at most {SQS_BATCH_LIMIT})"
            ),
        ),
    ] = 1
    sentry_dsn: SecretStr | None = None
    disable_sentry: Flag = False
    port: Port = 4000
    api_host: Annotated[str, Field(min_length=1)] = "0.0.0.0"  # noqa: S104 (the pod's probe port)
    api_docs: Flag = False
    cache_update_policy: Annotated[
        CacheUpdatePolicy, Field(json_schema_extra=_allowed("UPDATE_IF_EXISTS or UPSERT"))
    ] = CacheUpdatePolicy.UPDATE_IF_EXISTS
    log_level: Annotated[
        LogLevel, Field(json_schema_extra=_allowed("error, warn, info or debug"))
    ] = "info"
    log_message_key: Annotated[str, Field(min_length=1)] = "msg"
    log_error_key: Annotated[str, Field(min_length=1)] = "err"

    sqs_endpoint_url: Annotated[
        str | None, Field(pattern=r"^https?://\S+$", json_schema_extra=_allowed("an http(s) URL"))
    ] = None
    dead_letter_queue_url: str | None = None
    visibility_timeout: Annotated[
        int, Field(ge=1, le=43200, json_schema_extra=_allowed("seconds, 1..43200"))
    ] = 30
    worker_concurrency: Annotated[
        int | None,
        Field(ge=1, le=64, json_schema_extra=_allowed("an integer 1..64, or unset")),
    ] = None
    poison_flood_ratio: Annotated[
        float, Field(ge=0, le=1, json_schema_extra=_allowed("a share 0..1 (0 turns the guard off)"))
    ] = 0.5
    poison_flood_window: Annotated[
        int, Field(ge=1, le=100000, json_schema_extra=_allowed("a number of messages 1..100000"))
    ] = 100
    poison_flood_min_messages: Annotated[
        int, Field(ge=1, le=100000, json_schema_extra=_allowed("a number of messages 1..100000"))
    ] = 20
    poison_flood_cooldown_secs: Annotated[
        int,
        Field(ge=0, le=86400, json_schema_extra=_allowed("seconds 0..86400 (0: stay paused)")),
    ] = 300
    max_future_skew_secs: Annotated[
        int,
        Field(ge=0, le=86400, json_schema_extra=_allowed("seconds 0..86400")),
    ] = 300
    not_ready_after_secs: Annotated[
        int, Field(ge=1, le=3600, json_schema_extra=_allowed("seconds 1..3600"))
    ] = 5
    stalled_after_secs: Annotated[
        int, Field(ge=10, le=86400, json_schema_extra=_allowed("seconds 10..86400"))
    ] = 120
    celery_imports: Annotated[
        str | None,
        Field(pattern=MODULE_LIST, json_schema_extra=_allowed("module names separated by commas")),
    ] = None

    @field_validator(
        "queue_url", "dead_letter_queue_url", "worker_concurrency", "celery_imports", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def consumers(self) -> int:
        """Consumer threads (receives in flight) per worker process.

        WORKER_CONCURRENCY when set; else enough receives in flight to keep a
        process busy when each SQS round trip costs tens of milliseconds:
        ``AUTO_RECEIVES // BATCH_SIZE`` messages' worth, at least ``AUTO_MIN_CONSUMERS``.
        """
        if self.worker_concurrency is not None:
            return self.worker_concurrency
        return max(AUTO_MIN_CONSUMERS, AUTO_RECEIVES // self.batch_size)

    def liveness_warning(self) -> str | None:
        """Why STALLED_AFTER_SECS may fail /livez on a slow but working dependency, if it may.

        A consumer can legitimately sit in one call for 2 x REDIS_TIMEOUT_SECS (a
        write and its retry) plus the SQS read timeout (20 s).
        """
        floor = 2 * self.redis_timeout_secs + SQS_READ_TIMEOUT_SECS
        if self.stalled_after_secs > floor:
            return None
        return (
            f"STALLED_AFTER_SECS={self.stalled_after_secs} is not above 2 x REDIS_TIMEOUT_SECS"
            f" + {SQS_READ_TIMEOUT_SECS} s ({floor:g} s), the longest call a consumer can"
            " legitimately be in: /livez may fail, and the pod be restarted, while Redis or"
            " SQS answers slowly"
        )

    @property
    def celery_import_modules(self) -> tuple[str, ...]:
        """CELERY_IMPORTS as module names: Celery's ``imports``, imported when the worker starts."""
        if not self.celery_imports:
            return ()
        return tuple(name.strip() for name in self.celery_imports.split(","))


class WorkerSettings(Settings):
    """The service's settings with QUEUE_URL set: what consuming or sending needs."""

    queue_url: Annotated[str, Field(min_length=1)]


S = TypeVar("S", bound=ReaderSettings)


def load_settings(**overrides: Any) -> Settings:
    """The service's settings from the environment (and explicit overrides).

    Raises ``ConfigError`` with one line per bad variable.
    """
    return _load(Settings, overrides)


def load_worker_settings(**overrides: Any) -> WorkerSettings:
    """The settings of a process that consumes or sends: QUEUE_URL is required."""
    if not load_settings(**overrides).queue_url:
        raise ConfigError("QUEUE_URL is not set: the worker needs the URL of the queue to consume")
    return _load(WorkerSettings, overrides)


def load_reader_settings(**overrides: Any) -> ReaderSettings:
    """The reader SDK's settings from the environment (and explicit overrides)."""
    return _load(ReaderSettings, overrides)


def _load(model: type[S], overrides: dict[str, Any]) -> S:
    try:
        return model(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(model, exc)) from None


def _describe(model: type[ReaderSettings], exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # a rule across variables: its message names them
            lines.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        field = str(error["loc"][0])
        info = model.model_fields.get(field)
        extra = info.json_schema_extra if info is not None else None
        allowed = extra.get("allowed") if isinstance(extra, dict) else None
        reason = str(allowed) if allowed else error["msg"]
        lines.append(f"{field.upper()}={error['input']!r} is not allowed: expected {reason}")
    return "\n".join(lines)
