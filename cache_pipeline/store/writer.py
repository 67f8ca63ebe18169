"""The atomic Redis store: runs planned script calls, one round trip per batch.

Every write rule of CONTRACT.md section 3 lives in the Lua scripts under
``cache_pipeline/store/lua``; this module registers them once, runs them (alone or
pipelined) and translates redis-py errors into the package's error tree. What to
run comes planned (``cache_pipeline.contract.plan.Planner``): the store never plans.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

from cache_pipeline.contract.messages import CacheInvalidated, Message
from cache_pipeline.contract.plan import (
    BatchResult,
    InvalidateAll,
    Outcome,
    Planned,
    ScriptCall,
    ScriptName,
    invalidate_call,
    invalidate_environment_call,
    invalidate_key_call,
)
from cache_pipeline.errors import StoreError, StoreUnavailable
from cache_pipeline.keys import KeyLayout, is_private, value_key_of
from cache_pipeline.store.scripts import script_source

__all__ = [
    "TRANSIENT_REPLIES",
    "BatchResult",
    "Outcome",
    "RedisClient",
    "ScriptRunner",
    "Store",
    "is_transient_reply",
    "translate_errors",
]

RedisClient: TypeAlias = "redis.Redis | RedisCluster"
# Error replies of a Redis that will take the write again once it recovers: out of memory
# (noeviction), a read-only replica, a server still loading its data, a replica without
# its master, a cluster slot moving, a script cache flushed again before the rerun; and
# BUSY (another client's script), which redis-py leaves a plain ResponseError.
TRANSIENT_REPLIES = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.MasterDownError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.NoScriptError,
)
PROBE_TTL_MS = 10_000  # the write probe's key expires on its own
UNLINK_BATCH = 500  # keys per SCAN page and per UNLINK: each call stays well under a millisecond

_SCRIPTS: tuple[ScriptName, ...] = ("v2_write_scope", "v2_write_usage", "v2_invalidate_scope")


class Store:
    """Runs planned writes on one environment's keys, and the calls no message plans:
    the steps of ``{"all": true}``, the operator's purges and the health probes.

    ``ttl`` is the expiry of what those calls write (seconds, or <= 0 for none); a
    planned write carries its own.
    """

    def __init__(self, client: RedisClient, layout: KeyLayout, *, ttl: int) -> None:
        self.client = client
        self.layout = layout
        self.ttl = ttl
        self._runner = ScriptRunner(client, _SCRIPTS)

    def apply_planned(self, planned: Sequence[Planned]) -> BatchResult:
        """Apply planned messages in order with one pipelined round trip.

        An ``{"all": true}`` invalidation splits the batch around it. Returns one
        entry per message: its outcome, or the ``StoreError`` Redis answered for it
        alone (a key of another type at one of its names). Raises
        ``StoreUnavailable`` when Redis cannot be reached or cannot take writes now
        (nothing is known to be written; every write is idempotent, so the batch
        can be retried).
        """
        results: BatchResult = []
        pending: list[Planned] = []
        for item in planned:
            if any(isinstance(step, InvalidateAll) for step in item.steps):
                results.extend(self._run_pipelined(pending))
                pending = []
                results.append(self._apply_alone(item))
            else:
                pending.append(item)
        results.extend(self._run_pipelined(pending))
        return results

    def invalidate_environment(self, at: int) -> int:
        """``{"all": true}`` at ``at`` (rule 4): every key under ``P:`` whose version is <= ``at``.

        ``P:__invalidated__`` takes ``at`` first, so the write scripts refuse anything not
        newer from then on; then SCAN pages of ``UNLINK_BATCH`` keys, each key checked and
        deleted by its own pipelined script call (no call blocks Redis for long). Keys
        newer than ``at`` stay, so a late or repeated ``all`` removes nothing newer than
        itself. Returns the keys deleted (values and versions).
        """
        self._run(
            invalidate_environment_call(self.layout.environment_invalidated, at=at, ttl=self.ttl)
        )
        removed = 0
        for page in self._environment_pages():
            calls = [
                invalidate_key_call(key, self.layout.usage_owner(key), at=at, ttl=self.ttl)
                for key in page
            ]
            replies = self._runner.run_calls(calls)
            removed += sum(int(reply) for reply in replies if not isinstance(reply, Exception))
        return removed

    def purge_environment(self) -> int:
        """Remove every key under ``P:`` whatever its version (``cache-pipeline migrate``), with
        SCAN + UNLINK in bounded batches. The schema marker stays: it is what tells a flush by
        Redis from this one."""
        removed = 0
        with translate_errors():
            for page in self._environment_pages(values_only=False):
                removed += int(self.client.unlink(*page))
        return removed

    def purge(self, customer_id: str, resource_id: str | None, at: int) -> int:
        """Drop one scope whatever its versions and set its invalidation time to ``at``.

        Even a later invalidation time is lowered (a producer's clock ran ahead): messages
        from ``at`` on are written again. Returns the keys deleted (values and versions).
        """
        keys = self.layout.customer(customer_id, resource_id)
        return int(self._run(invalidate_call(keys, at=at, ttl=self.ttl, force=True)))

    def ping(self) -> bool:
        """True when Redis answers."""
        with translate_errors():
            return bool(self.client.ping())

    def probe_write(self) -> None:
        """Write the environment's probe key (it expires on its own).

        A PING is answered by a Redis out of memory, a read-only replica or one
        whose script is BUSY; a write is not. Raises ``StoreUnavailable`` while
        Redis cannot take writes, ``StoreError`` when it refuses this one.
        """
        with translate_errors():
            self.client.set(self.layout.write_probe, "1", px=PROBE_TTL_MS)

    def _apply_alone(self, planned: Planned) -> Outcome:
        """One message step by step, each in its own round trip (``{"all": true}``)."""
        results: list[Any] = []
        for step in planned.steps:
            if isinstance(step, InvalidateAll):
                results.append(self.invalidate_environment(step.at))
            else:
                results.append(self._run(step))
        return _outcome(planned.message, results)

    def _run_pipelined(self, pending: list[Planned]) -> BatchResult:
        """Every script call of ``pending`` in one round trip; one result per message."""
        if not pending:
            return []
        calls = [s for item in pending for s in item.steps if isinstance(s, ScriptCall)]
        replies = self._runner.run_calls(calls)
        results: BatchResult = []
        position = 0
        for item in pending:
            own = replies[position : position + len(item.steps)]
            position += len(item.steps)
            failure = next((r for r in own if isinstance(r, Exception)), None)
            if failure is not None:
                results.append(StoreError(f"Redis refused the write: {failure}"))
            else:
                results.append(_outcome(item.message, own))
        return results

    def _run(self, call: ScriptCall) -> Any:
        """One script call in its own round trip; its reply."""
        with translate_errors():
            return self._runner.script(call.script)(keys=call.keys, args=call.args)

    def _environment_pages(self, *, values_only: bool = True) -> Iterator[list[str]]:
        """The environment's keys, a SCAN page at a time: value keys (``#timestamp`` folded
        into their value key, private keys left out), or every key but the schema marker."""
        special = {self.layout.schema_marker}
        if values_only:
            special |= {self.layout.environment_invalidated, self.layout.write_probe}
        with translate_errors():
            page: dict[str, None] = {}  # ordered, without the #timestamp duplicates
            for key in self.client.scan_iter(
                match=self.layout.environment_pattern, count=UNLINK_BATCH
            ):
                if values_only:
                    key = value_key_of(key)
                    if is_private(key):
                        continue
                if key not in special:
                    page[key] = None
                if len(page) >= UNLINK_BATCH:
                    yield list(page)
                    page = {}
            if page:
                yield list(page)


class ScriptRunner:
    """Runs ``ScriptCall`` batches in one pipelined round trip (EVALSHA).

    A script (``cache_pipeline.store.scripts.script_source``) is registered on its first call,
    or up front when named in ``preload``; after SCRIPT FLUSH the missing scripts are
    loaded and only their calls run again. The store and resync share it.
    """

    def __init__(self, client: RedisClient, preload: Sequence[str] = ()) -> None:
        self.client = client
        self.scripts: dict[str, Script] = {}
        for name in preload:
            self.script(name)

    def script(self, name: str) -> Script:
        """The registered script of that name."""
        if name not in self.scripts:
            self.scripts[name] = self.client.register_script(script_source(name))
        return self.scripts[name]

    def run_calls(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply, or the error Redis answered for it.

        Raises ``StoreUnavailable`` when Redis cannot be reached or cannot take writes now.
        """
        if not calls:
            return []
        with translate_errors():
            replies = self._pipeline(calls, first=True)
            missing = [
                i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)
            ]
            if missing:
                for name in {calls[i].script for i in missing}:
                    self.client.script_load(self.scripts[name].script)
                rerun = self._pipeline([calls[i] for i in missing], first=False)
                for i, reply in zip(missing, rerun, strict=True):
                    replies[i] = reply
        return replies

    def _pipeline(self, calls: Sequence[ScriptCall], *, first: bool) -> list[Any]:
        """The replies of one pipelined round trip; raises when Redis cannot take writes now.

        A NOSCRIPT is expected on the first run (SCRIPT FLUSH, a restart, a failover);
        on the rerun it means the script cache was flushed again: wait and retry.
        """
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            sha = self.script(call.script).sha
            pipe.execute_command("EVALSHA", sha, len(call.keys), *call.keys, *call.args)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
                raise reply
            if first and isinstance(reply, redis.exceptions.NoScriptError):
                continue
            if is_transient_reply(reply):
                raise StoreUnavailable(f"Redis cannot take writes now: {_named(reply)}")
        return replies


def _outcome(message: Message, replies: Sequence[Any]) -> Outcome:
    if isinstance(message, CacheInvalidated):
        return Outcome.INVALIDATED
    reply = int(replies[0])
    if reply > 0:
        return Outcome.WRITTEN
    return Outcome.STALE if reply == 0 else Outcome.POLICY


def is_transient_reply(reply: Any) -> bool:
    """An error reply that the same write will not get once Redis recovers."""
    return isinstance(reply, TRANSIENT_REPLIES) or (
        isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith("BUSY")
    )


def _named(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def translate_errors() -> Iterator[None]:
    """redis-py errors → StoreUnavailable (retry later) or StoreError (will not heal)."""
    try:
        yield
    except StoreUnavailable:
        raise
    except (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        # a rotated password heals when the new secret reaches the pod: wait, don't die
        raise StoreUnavailable(f"Redis refused the credentials: {exc}") from None
    except redis.exceptions.NoPermissionError as exc:
        raise StoreError(f"Redis ACL denies a command the store needs: {exc}") from None
    except (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.ClusterDownError,
        redis.exceptions.TryAgainError,
        redis.exceptions.ReadOnlyError,
        OSError,
    ) as exc:
        raise StoreUnavailable(f"Redis is unavailable: {_named(exc)}") from None
    except redis.exceptions.ResponseError as exc:
        if is_transient_reply(exc):
            raise StoreUnavailable(f"Redis cannot take writes now: {_named(exc)}") from None
        raise StoreError(f"Redis answered with an error: {exc}") from None
    except redis.exceptions.RedisError as exc:
        raise StoreError(f"Redis answered with an error: {exc}") from None
