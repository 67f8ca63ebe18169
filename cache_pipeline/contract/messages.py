"""Queue bodies in: the contract's message models (CONTRACT.md section 1), their parser, and
the Celery envelope a producer's ``send_task`` puts on the queue.

``decode(body)`` (a ``Decoder`` of one environment) is what the worker reads a body
with: a Celery message (kombu's SQS envelope with a ``task`` header) gives the
``TaskCall`` it carries; anything else is a contract message, validated by
``parse_message`` into one of the four models. Both raise ``InvalidMessage`` with a
reason code. Pure: no I/O (the decoder's clock is injected), so everything here can be
tested and fuzzed on its own.

Celery messages: ``app.send_task(name, args=[message], queue=...)`` puts a JSON
object on SQS (base64-encoded by kombu's default) whose ``headers.task`` names the
task and whose ``body`` holds Celery's protocol 2 call ``[args, kwargs, embed]`` as
JSON (base64 again when ``properties.body_encoding`` says so). Only a body of that
shape *with* a task header is a Celery message; any other body is a contract
message, whatever its top-level fields. No kombu, no Celery.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from cache_pipeline.contract.dates import epoch_ms
from cache_pipeline.contract.stigg_map import entry_problem
from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.keys import unsafe_id_problem

MESSAGE_TYPES = ("entitlements.updated", "usage.updated", "credits.updated", "cache.invalidated")
MAX_SAFE_INTEGER = 2**53 - 1  # timestamps and counts stay exact in JSON, Lua and JavaScript
MAX_DEPTH = 32  # nesting of a body: far beyond the contract's, far below any recursion limit

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]  # raw: see _unsafe_id
EpochMs = Annotated[int, Field(gt=0, le=MAX_SAFE_INTEGER)]
Amount = Annotated[
    int | float, Field(ge=-MAX_SAFE_INTEGER, le=MAX_SAFE_INTEGER, allow_inf_nan=False)
]


class _Wire(BaseModel):
    """camelCase on the wire, snake_case in Python; wrong JSON types are rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, strict=True, frozen=True
    )


class CustomerRef(_Wire):
    """A customer, optionally scoped to one of its resources."""

    customer_id: Id
    resource_id: Id | None = None


def _as_epoch_ms(value: Any) -> Any:
    """An ISO-8601 date becomes epoch ms; anything else is left for validation."""
    if isinstance(value, str):
        parsed = epoch_ms(value)
        return value if parsed is None else parsed
    return value


DateMs = Annotated[EpochMs, BeforeValidator(_as_epoch_ms)]


class CreditBalance(_Wire):
    """One credit balance of a scope (``credits[]`` of an entitlements snapshot)."""

    currency_id: Id
    current_usage: Amount
    usage_limit: Amount | None = None
    usage_period_start: DateMs | None = None
    usage_period_end: DateMs | None = None

    def as_stored(self) -> dict[str, Any]:
        """The ``S:credit_<currencyId>`` value (CONTRACT.md section 2)."""
        return {
            "currentUsage": self.current_usage,
            "usageLimit": self.usage_limit,
            "usagePeriodStart": self.usage_period_start,
            "usagePeriodEnd": self.usage_period_end,
        }


class EntitlementsData(CustomerRef):
    """A full snapshot of one scope: Stigg Edge API entries, as the Edge returns them."""

    access_denied_reason: str | None = None
    entitlements: list[dict[str, Any]]
    credits: list[CreditBalance] = Field(default_factory=list)

    @model_validator(mode="after")
    def _edge_entries(self) -> EntitlementsData:
        for position, entry in enumerate(self.entitlements):
            if "feature" not in entry and {"kind", "id"} <= entry.keys():
                raise ValueError(
                    f"entry {position} is a contract v1 entitlement (kind/id); contract v2"
                    " takes Stigg Edge API entries (feature.refId, featureType, ...)"
                )
            problem = entry_problem(entry)
            if problem is not None:
                raise ValueError(f"entry {position} {problem}")
        return self


class UsageData(CustomerRef):
    feature_id: Id
    current_usage: Amount
    usage_period_start: DateMs | None = None
    usage_period_end: DateMs | None = None

    def as_stored(self) -> dict[str, Any]:
        """The ``S:f_<featureId>`` value: absent periods are omitted, as Stigg writes it."""
        value: dict[str, Any] = {"currentUsage": self.current_usage}
        if self.usage_period_start is not None:
            value["usagePeriodStart"] = self.usage_period_start
        if self.usage_period_end is not None:
            value["usagePeriodEnd"] = self.usage_period_end
        return value


class CreditsData(CreditBalance, CustomerRef):
    """One credit balance of one scope."""


class InvalidationData(_Wire):
    """Either a list of customers or ``{"all": true}``."""

    customers: list[CustomerRef] = Field(default_factory=list)
    all: bool = False

    @model_validator(mode="after")
    def _one_form(self) -> InvalidationData:
        if self.all == bool(self.customers):
            raise ValueError('give either a non-empty "customers" list or "all": true')
        return self


class _Envelope(_Wire):
    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    timestamp: EpochMs
    environment: str | None = None


class EntitlementsUpdated(_Envelope):
    type: Literal["entitlements.updated"]
    data: EntitlementsData


class UsageUpdated(_Envelope):
    type: Literal["usage.updated"]
    data: UsageData


class CreditsUpdated(_Envelope):
    type: Literal["credits.updated"]
    data: CreditsData


class CacheInvalidated(_Envelope):
    type: Literal["cache.invalidated"]
    data: InvalidationData


Message = Annotated[
    EntitlementsUpdated | UsageUpdated | CreditsUpdated | CacheInvalidated,
    Field(discriminator="type"),
]
_MESSAGE: TypeAdapter[Message] = TypeAdapter(Message)


def parse_message(body: bytes | str, environment: str, *, latest_ms: int | None = None) -> Message:
    """Validate one queue message body; unwrap an SNS envelope first.

    ``latest_ms`` is the newest timestamp accepted (the worker's clock plus
    MAX_FUTURE_SKEW_SECS): one message from the far future would otherwise win
    every later update of its keys. Raises ``InvalidMessage`` (never retried)
    with reason ``not_json``, ``unknown_type``, ``invalid_field``,
    ``wrong_environment``, ``unsafe_id`` or ``timestamp_in_future``.
    """
    payload = unwrap_sns(decode_json(body))
    if not isinstance(payload, dict):
        raise InvalidMessage(InvalidReason.NOT_JSON, "the body is JSON but not an object")
    message_id = _message_id(payload)
    kind = payload.get("type")
    if kind not in MESSAGE_TYPES:
        reason = InvalidReason.UNKNOWN_TYPE if "type" in payload else InvalidReason.INVALID_FIELD
        raise InvalidMessage(
            reason, f"type {_short(kind)} is not one of {MESSAGE_TYPES}", message_id
        )
    try:
        message = _MESSAGE.validate_python(payload)
    except ValidationError as exc:
        raise InvalidMessage(InvalidReason.INVALID_FIELD, _first_error(exc), message_id) from None
    if message.environment is not None and message.environment != environment:
        raise InvalidMessage(
            InvalidReason.WRONG_ENVIRONMENT,
            f"environment {_short(message.environment)} is not {environment!r}",
            message.id,
        )
    unsafe = _unsafe_id(message)
    if unsafe is not None:
        raise InvalidMessage(InvalidReason.UNSAFE_ID, unsafe, message.id)
    if latest_ms is not None and message.timestamp > latest_ms:
        raise InvalidMessage(
            InvalidReason.TIMESTAMP_IN_FUTURE,
            f"timestamp {message.timestamp} is {message.timestamp - latest_ms} ms beyond the"
            " accepted clock skew",
            message.id,
        )
    return message


def message_ids(message: Message) -> Iterator[tuple[str, str]]:
    """Every ``(field, id)`` of a message that becomes part of a Redis key name."""
    data = message.data
    refs: list[CustomerRef] = data.customers if isinstance(data, InvalidationData) else [data]
    for ref in refs:
        yield "customerId", ref.customer_id
        if ref.resource_id is not None:
            yield "resourceId", ref.resource_id
    if isinstance(data, EntitlementsData):
        for entry in data.entitlements:
            yield "feature.refId", str(entry["feature"]["refId"])
        for credit in data.credits:
            yield "credits.currencyId", credit.currency_id
    elif isinstance(data, UsageData):
        yield "featureId", data.feature_id
    elif isinstance(data, CreditsData):
        yield "currencyId", data.currency_id


def _unsafe_id(message: Message) -> str | None:
    for name, value in message_ids(message):
        problem = unsafe_id_problem(value)
        if problem is not None:
            return f"{name}: {problem}"
    return None


def decode_json(body: bytes | str) -> Any:
    """UTF-8 JSON to Python values; NaN, Infinity, lone surrogates, runaway nesting: not JSON."""
    try:
        if isinstance(body, bytes | bytearray):
            text = body.decode("utf-8")
        else:
            text = body
            text.encode("utf-8")  # a str body may hold lone surrogates
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        _check_depth(value)
        if "\\u" in text:  # an escape may spell a lone surrogate, which Redis cannot store
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise InvalidMessage(InvalidReason.NOT_JSON, _short_text(str(exc))) from None


def unwrap_sns(payload: Any) -> Any:
    """Return the inner message of an SNS notification envelope, or the payload itself."""
    if (
        isinstance(payload, dict)
        and payload.get("Type") == "Notification"
        and isinstance(payload.get("Message"), str)
    ):
        return decode_json(payload["Message"])
    return payload


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    """A JSON number such as ``1e400`` would become infinity, which no store can encode."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _check_depth(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH, without recursion."""
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH + 1):
        level = [
            child
            for item in level
            if isinstance(item, dict | list)
            for child in (item.values() if isinstance(item, dict) else item)
        ]
        if not level:
            return
    raise ValueError(f"the body nests deeper than {MAX_DEPTH} levels")


def _message_id(payload: dict[str, Any]) -> str | None:
    value = payload.get("id")
    return value[:128] if isinstance(value, str) else None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return _short_text(f"{where}: {error['msg']}")


def _short(value: Any) -> str:
    return _short_text(repr(value))


def _short_text(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Decoder:
    """Reads queue bodies for one environment, timestamps within the accepted clock skew."""

    environment: str
    max_future_skew_secs: int = 300
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def __call__(self, body: str) -> Message | TaskCall:
        """The Celery call ``body`` carries, else the contract message it is.

        Raises ``InvalidMessage``.
        """
        call = task_call(body)
        return call if call is not None else self.message(body)

    def message(self, body: str | bytes) -> Message:
        """``body`` as a contract message of this environment. Raises ``InvalidMessage``."""
        latest = int(self.clock() * 1000) + self.max_future_skew_secs * 1000
        return parse_message(body, self.environment, latest_ms=latest)


# Celery messages (kombu's SQS envelope)

JSON_CONTENT = "application/json"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


@dataclass(frozen=True, slots=True)
class TaskCall:
    """A Celery protocol 2 call: the task's name, its id and its arguments as sent."""

    task: str
    task_id: str
    args: Any  # a list when the producer used Celery; anything when it did not
    kwargs: dict[str, Any]


def task_call(body: str) -> TaskCall | None:
    """The Celery call ``body`` carries, or None when it is not a Celery message.

    Raises ``InvalidMessage`` for a Celery message that cannot be read (another
    content type, a broken encoding, a body that is not ``[args, kwargs, embed]``).
    """
    envelope = _envelope(body)
    if envelope is None:
        return None
    headers: dict[str, Any] = envelope["headers"]
    name, task_id = str(headers["task"]), headers.get("id")
    content_type = envelope.get("content-type", JSON_CONTENT)
    if content_type != JSON_CONTENT:
        raise InvalidMessage(
            InvalidReason.NOT_JSON, f"Celery message for {name} is {content_type!r}, not JSON"
        )
    call = decode_json(_inner_text(envelope, name))
    if not (isinstance(call, list) and len(call) == 3 and isinstance(call[1], dict)):
        raise InvalidMessage(
            InvalidReason.INVALID_FIELD, f"Celery message for {name} is not [args, kwargs, embed]"
        )
    return TaskCall(name, task_id if isinstance(task_id, str) else "", call[0], call[1])


def _envelope(body: str) -> dict[str, Any] | None:
    """kombu's envelope of a task message, or None (cheap for a contract message)."""
    text = body.strip()
    if not text.startswith("{"):
        text = _unbase64(text) or ""
    if not text.startswith("{") or '"task"' not in text or '"properties"' not in text:
        return None
    try:
        payload = decode_json(text)
    except InvalidMessage:
        return None
    headers = payload.get("headers") if isinstance(payload, dict) else None
    if (
        isinstance(payload, dict)
        and isinstance(payload.get("properties"), dict)
        and "body" in payload
        and isinstance(headers, dict)
        and isinstance(headers.get("task"), str)
        and headers["task"]
    ):
        return payload
    return None


def _inner_text(envelope: dict[str, Any], name: str) -> str:
    body = envelope["body"]
    if envelope["properties"].get("body_encoding") == "base64":
        body = _unbase64(body) if isinstance(body, str) else None
    if not isinstance(body, str):
        raise InvalidMessage(InvalidReason.NOT_JSON, f"Celery message for {name}: unreadable body")
    return body


def _unbase64(text: str) -> str | None:
    if not _BASE64.fullmatch(text):
        return None
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
