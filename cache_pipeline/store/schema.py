"""The environment's schema marker: key-schema version, and proof that Redis kept its data.

``P:__schema__`` holds JSON ``{"version": "2", "createdAt": ms}``; it never
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
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cache_pipeline.errors import SchemaVersionMismatch
from cache_pipeline.keys import SCHEMA_VERSION, KeyLayout
from cache_pipeline.store.writer import RedisClient, translate_errors


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


def load_marker(client: RedisClient, key: str) -> Marker | None:
    """The marker stored at ``key`` (one GET); None when there is none.

    Raises ``SchemaVersionMismatch`` for anything unreadable there, and what
    ``translate_errors`` raises when Redis fails. Writes nothing.
    """
    with translate_errors():
        raw = client.get(key)
    return None if raw is None else Marker.from_json(str(raw), key)


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
        stored = load_marker(self.client, self.key)
        if stored is None:
            return self._recreate()
        marker = self._compatible(stored)
        self.seen = True
        return SchemaCheck(SchemaStatus.OK, marker)

    def mark_resynced(self) -> Marker:
        """Stamp ``resyncedAt`` (after a full resync); creates the marker if needed."""
        stored = load_marker(self.client, self.key)
        marker = (
            Marker(SCHEMA_VERSION, self.clock()) if stored is None else self._compatible(stored)
        )
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
