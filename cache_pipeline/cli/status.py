"""``cache-pipeline status``: the environment at a glance, read-only.

The schema marker; the environment's keys by kind, from a SCAN of
``ENVIRONMENT_PREFIX:*`` stopped after ``max_keys`` (SCAN may return a key twice and
misses nothing that stayed, so the counts are approximate while keys are written or
expire, and a lower bound when the bound stopped it); the approximate depths of
the queue and the dead-letter queue (GetQueueAttributes), when configured.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from cache_pipeline.cli.doctor import describe_marker
from cache_pipeline.cli.failures import naming
from cache_pipeline.config import Settings
from cache_pipeline.errors import SchemaVersionMismatch
from cache_pipeline.keys import TIMESTAMP_SUFFIX, KeyLayout, is_private
from cache_pipeline.sqs.client import SqsQueue
from cache_pipeline.sqs.queue import QueueDepth
from cache_pipeline.sqs.wire import sqs_calls
from cache_pipeline.store.connection import connect
from cache_pipeline.store.schema import Marker, load_marker
from cache_pipeline.store.writer import RedisClient, translate_errors

KINDS = ("maps", "metadata", "usage", "credit", "versions", "private", "other")
SCAN_COUNT = 1000


@dataclass(frozen=True, slots=True)
class KeyCounts:
    """The environment's keys by kind, as far as the SCAN went."""

    by_kind: dict[str, int]
    scanned: int
    complete: bool  # False: stopped at the bound, the counts are a lower bound


@dataclass(frozen=True, slots=True)
class Status:
    environment: str
    redis: str
    marker: Marker | None
    marker_problem: str | None  # a marker that is there but cannot be read
    keys: KeyCounts
    queue: tuple[str, QueueDepth] | None
    dead_letter: tuple[str, QueueDepth] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "redis": self.redis,
            "marker": _marker_dict(self.marker, self.marker_problem),
            "keys": {
                **self.keys.by_kind,
                "scanned": self.keys.scanned,
                "complete": self.keys.complete,
            },
            "queue": _depth_dict(self.queue),
            "deadLetterQueue": _depth_dict(self.dead_letter),
        }


def read_status(settings: Settings, *, max_keys: int) -> Status:
    """The status of the configured environment. Raises ``StoreUnavailable``, ``StoreError``
    or ``QueueUnavailable`` when Redis or SQS cannot be read."""
    layout = KeyLayout(settings.environment_prefix, settings.redis_cluster)
    client = connect(settings)
    try:
        marker, problem = read_marker(client, layout)
        keys = count_keys(client, layout, max_keys=max_keys)
    finally:
        client.close()
    queue, dead_letter = read_depths(settings)
    return Status(
        environment=settings.environment_prefix,
        redis=f"{settings.redis_host}:{settings.redis_port}",
        marker=marker,
        marker_problem=problem,
        keys=keys,
        queue=queue,
        dead_letter=dead_letter,
    )


def read_marker(client: RedisClient, layout: KeyLayout) -> tuple[Marker | None, str | None]:
    """The schema marker (None when absent), or why the one there cannot be read."""
    try:
        return load_marker(client, layout.schema_marker), None
    except SchemaVersionMismatch as exc:
        return None, str(exc)


def count_keys(client: RedisClient, layout: KeyLayout, *, max_keys: int) -> KeyCounts:
    """Count the environment's keys by kind, stopping after ``max_keys``."""
    counts: Counter[str] = Counter({kind: 0 for kind in KINDS})
    scanned = 0
    with translate_errors():
        for key in client.scan_iter(match=layout.environment_pattern, count=SCAN_COUNT):
            if scanned >= max_keys:
                return KeyCounts(dict(counts), scanned, complete=False)
            counts[kind_of(layout, str(key))] += 1
            scanned += 1
    return KeyCounts(dict(counts), scanned, complete=True)


def kind_of(layout: KeyLayout, key: str) -> str:
    """The kind of a key of the environment (``KINDS``; keys.py names them)."""
    if key.endswith(TIMESTAMP_SUFFIX):
        return "versions"
    rest = key.removeprefix(layout.prefix + ":")
    if is_private(key) or rest.startswith("__"):
        return "private"
    if not rest.startswith(("c_", "{c_")):
        return "other"
    owner = layout.usage_owner(key)
    if owner is not None:
        return "usage" if key[len(owner.entitlements) :].startswith(":f_") else "credit"
    return "metadata" if key.endswith(":metadata") else "maps"


def read_depths(
    settings: Settings,
) -> tuple[tuple[str, QueueDepth] | None, tuple[str, QueueDepth] | None]:
    """The depths of QUEUE_URL and DEAD_LETTER_QUEUE_URL, each None when not set."""
    if not settings.queue_url:
        return None, None
    dead_letter_url = settings.dead_letter_queue_url
    queue = SqsQueue(sqs_calls(settings), settings.queue_url, dead_letter_url=dead_letter_url)
    try:
        depth = (settings.queue_url, queue.depth())
        if dead_letter_url is None:
            return depth, None
        with naming(settings, queue=dead_letter_url):
            return depth, (dead_letter_url, queue.depth(dead_letter=True))
    finally:
        queue.close()


def render(status: Status) -> str:
    """The status as aligned text lines."""
    keys = status.keys
    counted = ", ".join(f"{kind} {count}" for kind, count in keys.by_kind.items())
    scan = "complete" if keys.complete else "stopped at --max-keys: lower bounds"
    lines = [
        ("environment", f"{status.environment} on Redis {status.redis}"),
        ("marker", _marker_text(status.marker, status.marker_problem)),
        ("keys", f"{counted} ({keys.scanned} scanned, {scan}; approximate while keys change)"),
        ("queue", _depth_text(status.queue, "QUEUE_URL")),
        ("dead-letter", _depth_text(status.dead_letter, "DEAD_LETTER_QUEUE_URL")),
    ]
    return "\n".join(f"{label:<12} {text}" for label, text in lines)


def _marker_text(marker: Marker | None, problem: str | None) -> str:
    if problem is not None:
        return f"unreadable: {problem}"
    if marker is None:
        return "absent (a new environment, or Redis lost it)"
    return describe_marker(marker)


def _depth_text(found: tuple[str, QueueDepth] | None, variable: str) -> str:
    if found is None:
        return f"not configured ({variable} is not set)"
    url, depth = found
    return f"{depth.described}  {url}"


def _marker_dict(marker: Marker | None, problem: str | None) -> dict[str, Any] | None:
    if problem is not None:
        return {"problem": problem}
    if marker is None:
        return None
    return {
        "version": marker.version,
        "createdAt": marker.created_at,
        "lossDetectedAt": marker.loss_detected_at,
        "resyncedAt": marker.resynced_at,
    }


def _depth_dict(found: tuple[str, QueueDepth] | None) -> dict[str, Any] | None:
    if found is None:
        return None
    url, depth = found
    return {
        "url": url,
        "visible": depth.visible,
        "inFlight": depth.in_flight,
        "delayed": depth.delayed,
    }
