"""The environment's schema marker: key-schema version, and proof that Redis kept its data.

``P:__schema__`` holds JSON ``{"version": "1", "createdAt": ms}``; it never
expires and ``{"all": true}`` invalidation leaves it alone. A writer checks it:

* absent on first sight: a new environment; the marker is created.
* absent after this process has seen it: Redis lost the environment's data
  (restart without persistence, FLUSHALL, FLUSHDB). The marker is re-created
  with ``lossDetectedAt`` so every pod reports the loss until
  ``cache-pipeline resync`` stamps ``resyncedAt``.
* another ``version``: the keyspace was written by an incompatible layout;
  ``SchemaVersionMismatch`` says so and the writer must not write.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from loguru import logger

from cache_pipeline import metrics
from cache_pipeline.errors import SchemaVersionMismatch, StoreError, StoreUnavailable
from cache_pipeline.health import HealthState, Reason
from cache_pipeline.keys import SCHEMA_VERSION, KeyLayout
from cache_pipeline.store import RedisClient, translate_errors

DETAIL = "redis_data"  # name of the /readyz detail about data loss
CHECK_INTERVAL = 5.0  # seconds between a writer's looks at the marker


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Marker:
    """Content of ``P:__schema__``."""

    version: str
    created_at: int
    loss_detected_at: int | None = None
    resynced_at: int | None = None

    def to_json(self) -> str:
        body: dict[str, Any] = {"version": self.version, "createdAt": self.created_at}
        if self.loss_detected_at is not None:
            body["lossDetectedAt"] = self.loss_detected_at
        if self.resynced_at is not None:
            body["resyncedAt"] = self.resynced_at
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str, key: str) -> Marker:
        """Parse a stored marker; anything unreadable is an incompatible schema."""
        try:
            body = json.loads(raw)
            return cls(
                version=str(body["version"]),
                created_at=int(body["createdAt"]),
                loss_detected_at=_optional_int(body.get("lossDetectedAt")),
                resynced_at=_optional_int(body.get("resyncedAt")),
            )
        except (ValueError, TypeError, KeyError):
            raise SchemaVersionMismatch(
                f"{key} holds {raw[:80]!r}, not a key-schema marker this version understands"
                f" (version {SCHEMA_VERSION}): refusing to write"
            ) from None

    @property
    def needs_resync(self) -> bool:
        """Data was lost and no resync has finished since."""
        if self.loss_detected_at is None:
            return False
        return self.resynced_at is None or self.resynced_at < self.loss_detected_at


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


class SchemaStatus(StrEnum):
    CREATED = "created"  # no marker yet: a new environment
    OK = "ok"
    DATA_LOST = "data_lost"  # this check found the marker gone after seeing it


@dataclass(frozen=True, slots=True)
class SchemaCheck:
    """Result of one look at the marker."""

    status: SchemaStatus
    marker: Marker

    def detail(self) -> str | None:
        """The /readyz detail, or None when there is nothing to report."""
        if not self.marker.needs_resync:
            return None
        assert self.marker.loss_detected_at is not None
        when = datetime.fromtimestamp(self.marker.loss_detected_at / 1000, UTC)
        return (
            f"Redis lost this environment's data (noticed {when:%Y-%m-%dT%H:%M:%SZ});"
            " run `cache-pipeline resync SCOPES` to refill its scopes from the Edge API"
        )


class SchemaGuard:
    """Checks and maintains one environment's marker for a writer process."""

    def __init__(
        self, client: RedisClient, layout: KeyLayout, *, clock: Callable[[], int] = now_ms
    ) -> None:
        self.client = client
        self.key = layout.schema_marker
        self.clock = clock
        self.seen = False

    def check(self) -> SchemaCheck:
        """Read the marker (one GET; a SET NX when it is missing).

        Raises ``SchemaVersionMismatch`` for another version, ``StoreUnavailable``
        when Redis cannot be reached.
        """
        with translate_errors():
            raw = self.client.get(self.key)
            if raw is None:
                return self._recreate()
        marker = self._compatible(Marker.from_json(str(raw), self.key))
        self.seen = True
        return SchemaCheck(SchemaStatus.OK, marker)

    def mark_resynced(self) -> Marker:
        """Stamp ``resyncedAt`` (after a full resync); creates the marker if needed."""
        with translate_errors():
            raw = self.client.get(self.key)
        if raw is None:
            marker = Marker(SCHEMA_VERSION, self.clock())
        else:
            marker = self._compatible(Marker.from_json(str(raw), self.key))
        marker = replace(marker, resynced_at=self.clock())
        with translate_errors():
            self.client.set(self.key, marker.to_json())
        return marker

    def _recreate(self) -> SchemaCheck:
        lost = self.seen
        now = self.clock()
        marker = Marker(SCHEMA_VERSION, now, loss_detected_at=now if lost else None)
        with translate_errors():
            created = self.client.set(self.key, marker.to_json(), nx=True)
            raw = None if created else self.client.get(self.key)
        self.seen = True
        if raw is not None:  # another writer re-created it first
            return SchemaCheck(
                SchemaStatus.OK, self._compatible(Marker.from_json(str(raw), self.key))
            )
        if lost:
            metrics.REDIS_DATA_LOSS.inc()
            return SchemaCheck(SchemaStatus.DATA_LOST, marker)
        return SchemaCheck(SchemaStatus.CREATED, marker)

    def _compatible(self, marker: Marker) -> Marker:
        if marker.version != SCHEMA_VERSION:
            raise SchemaVersionMismatch(
                f"{self.key} says key-schema version {marker.version!r}, this worker writes"
                f" version {SCHEMA_VERSION!r}: refusing to write; migrate the keyspace or"
                " use another ENVIRONMENT_PREFIX"
            )
        return marker


def refresh_health(guard: SchemaGuard, health: HealthState) -> SchemaCheck:
    """Check the marker and show the outcome in /readyz.

    A data loss becomes the ``redis_data`` detail; a version mismatch pauses
    consumption with the reason (readiness DOWN) and is raised again.
    """
    try:
        check = guard.check()
    except SchemaVersionMismatch as exc:
        health.pause(Reason.SCHEMA_REFUSED, str(exc))
        raise
    health.set_detail(DETAIL, check.detail())
    return check


class SchemaWatch:
    """A writer's periodic look at the marker, shared by its consumer threads.

    ``allows_writes()`` checks at most every ``interval`` seconds (at once after
    ``recheck_soon()``, which the consumer calls when Redis comes back). A version
    mismatch, or a marker Redis cannot read (a key of another type at its name),
    pauses consumption with the reason until a later check passes; an unreachable
    Redis is left to the write path.

    One thread reads the marker at a time, and no lock is held while it does: the
    others go on with the last answer instead of queueing behind a read that a
    hung Redis can hold for seconds (queued, each would then read in turn, and a
    shutdown would wait for all of them). Only the very first answer is waited for:
    nothing is written before the marker was looked at once.
    """

    def __init__(
        self,
        guard: SchemaGuard,
        health: HealthState,
        *,
        interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guard = guard
        self.health = health
        self.interval = interval
        self.clock = clock
        self.mismatch: str | None = None
        self._next = 0.0
        self._checking = False  # a thread is reading the marker
        self._answered = False  # a first check has ended
        self._cond = threading.Condition()

    def allows_writes(self) -> bool:
        if self._claim():
            try:
                self._check()
            finally:
                self._checked()
        return self.mismatch is None

    def recheck_soon(self) -> None:
        with self._cond:
            self._next = 0.0

    def _claim(self) -> bool:
        """True when the calling thread is to read the marker now (no other thread is)."""
        with self._cond:
            self._cond.wait_for(lambda: self._answered or not self._checking)
            if self._checking or self.clock() < self._next:
                return False
            self._checking = True
            self._next = self.clock() + self.interval
            return True

    def _checked(self) -> None:
        with self._cond:
            self._checking = False
            self._answered = True
            self._cond.notify_all()

    def _check(self) -> None:
        try:
            check = refresh_health(self.guard, self.health)
        except SchemaVersionMismatch as exc:
            self._refuse(str(exc))
            return
        except StoreUnavailable:
            return
        except StoreError as exc:
            message = f"{self.guard.key} cannot be read, refusing to write until it can: {exc}"
            self.health.pause(Reason.SCHEMA_REFUSED, message)
            self._refuse(message)
            return
        if self.mismatch is not None:
            self.health.resume(Reason.SCHEMA_REFUSED)
            self.mismatch = None
            logger.warning("the schema marker allows writing again: consumption resumed")
        if check.status is SchemaStatus.DATA_LOST:
            logger.error("{}", check.detail())

    def _refuse(self, message: str) -> None:
        if self.mismatch is None:
            logger.error("{}", message)
        self.mismatch = message
