"""Celery task messages on the queue: kombu's SQS envelope, read as plain JSON.

A producer's ``app.send_task(name, args=[message], queue=...)`` puts a kombu
envelope on SQS: a JSON object (base64-encoded by kombu's default) whose
``headers.task`` names the task and whose ``body`` holds Celery's protocol 2
call ``[args, kwargs, embed]`` as JSON (base64 again when
``properties.body_encoding`` says so). Only a body of that shape *with* a task
header is a Celery message; any other body is a contract message, whatever its
top-level fields. Pure: no kombu, no Celery.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from cache_pipeline.contract.messages import decode_json
from cache_pipeline.errors import InvalidMessage, InvalidReason

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
