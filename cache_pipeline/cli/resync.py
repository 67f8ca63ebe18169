"""Rebuild an environment's cache from Stigg's Edge API (``cache-pipeline resync``).

After Redis lost its data the stream only brings back what changes next; the rest
comes back on cache misses, one Edge call each. A resync refetches the scopes it is
given (Stigg's Edge cannot list customers: the operator names them, see
``cache_pipeline.contract.scopes``; the edge stub can list its own) with ``EdgeClient``, and
writes each answer as Stigg's SDK would after a miss: ``lua/v2_write_scope.lua`` under
UPSERT, the map versioned by ``edge_version`` of the entries, usage keys by their
``usageUpdatedAt``, gated by the time the request started. So anything newer the
worker wrote meanwhile is kept (rule 1), and an invalidation that happened after the
request refuses it (rule 4). Writes go in pipelined batches. When every scope was
handled it stamps ``resyncedAt`` on the schema marker, which clears the data-loss
detail of /readyz on every pod.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cache_pipeline.client.upstream import EdgeAnswer, EdgeClient, EdgeOptions
from cache_pipeline.client.write_back import write_back_call
from cache_pipeline.config import Settings
from cache_pipeline.contract.plan import ScriptCall
from cache_pipeline.contract.scopes import ScopeRef
from cache_pipeline.contract.stigg_map import entry_problem
from cache_pipeline.errors import (
    CachePipelineError,
    StoreError,
    UpstreamNotFound,
    UpstreamRefused,
)
from cache_pipeline.keys import KeyLayout, unsafe_id_problem
from cache_pipeline.store.connection import connect
from cache_pipeline.store.schema import SchemaGuard
from cache_pipeline.store.writer import RedisClient, ScriptRunner

WRITE_BATCH = 100  # scopes fetched, then written in one pipelined round trip


@dataclass
class ResyncReport:
    """What a resync did, scope by scope."""

    scopes: int = 0
    written: int = 0
    stale: int = 0  # the cache already held a newer version, or a later invalidation
    missing: list[str] = field(default_factory=list)  # unknown to the Edge (404)
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, object]:
        return {
            "scopes": self.scopes,
            "written": self.written,
            "stale": self.stale,
            "missing": len(self.missing),
            "failed": len(self.failures),
        }


@dataclass(frozen=True, slots=True)
class Fetched:
    """One scope's Edge answer, or why there is none (``missing`` or ``failure``)."""

    scope: ScopeRef
    answer: EdgeAnswer | None = None
    missing: bool = False
    failure: str | None = None


def edge_options(settings: Settings) -> EdgeOptions:
    """The Edge API of these settings (EDGE_API_URL, SERVER_API_KEY), Stigg's retry budget."""
    key = settings.server_api_key.get_secret_value() if settings.server_api_key else None
    return EdgeOptions(url=settings.edge_api_url, api_key=key)


def run_resync(
    settings: Settings, scopes: Sequence[ScopeRef], *, concurrency: int = 8
) -> ResyncReport:
    """Resync ``scopes`` in the configured environment (connections built from the settings)."""
    client = connect(settings)
    edge = EdgeClient(edge_options(settings))
    try:
        layout = KeyLayout(settings.environment_prefix, cluster=settings.redis_cluster)
        return resync(
            client, layout, edge, scopes, ttl=settings.keys_ttl_in_secs, concurrency=concurrency
        )
    finally:
        edge.close()
        client.close()


def resync(
    client: RedisClient,
    layout: KeyLayout,
    edge: EdgeClient,
    scopes: Sequence[ScopeRef],
    *,
    ttl: int,
    concurrency: int = 8,
) -> ResyncReport:
    """Fetch and write every scope; stamp the marker when none failed.

    Raises ``SchemaVersionMismatch`` before any write when the keyspace has another
    key-schema version, ``UpstreamRefused`` at once when the Edge refuses the API key,
    and ``StoreUnavailable`` when Redis cannot be reached.
    """
    guard = SchemaGuard(client, layout)
    guard.check()
    runner = ScriptRunner(client)
    report = ResyncReport(scopes=len(scopes))
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for batch in _batches(scopes, WRITE_BATCH):
            fetched = list(pool.map(lambda scope: fetch(edge, scope), batch))
            write(runner, layout, fetched, report, ttl=ttl)
    if report.complete:
        guard.mark_resynced()
    return report


def fetch(edge: EdgeClient, scope: ScopeRef) -> Fetched:
    """One scope's Edge answer; a 404 is ``missing``; other errors, and an answer that
    cannot be cached (``answer_problem``), are a ``failure``."""
    try:
        answer = edge.fetch(scope.customer_id, scope.resource_id)
    except UpstreamRefused:
        raise
    except UpstreamNotFound:
        return Fetched(scope, missing=True)
    except CachePipelineError as exc:
        return Fetched(scope, failure=f"{scope}: {exc}")
    problem = answer_problem(answer.entitlements)
    if problem is not None:
        return Fetched(scope, failure=f"{scope}: the Edge answered {problem}; nothing written")
    return Fetched(scope, answer)


def answer_problem(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """Why Edge entries cannot be written (as the pipeline refuses such a message), or None."""
    for index, entry in enumerate(entries):
        problem = entry_problem(entry)
        if problem is None:
            problem = unsafe_id_problem(str(entry["feature"]["refId"]))
        if problem is not None:
            return f"an entry it cannot cache: entitlements[{index}] {problem}"
    return None


def write_call(layout: KeyLayout, scope: ScopeRef, answer: EdgeAnswer, *, ttl: int) -> ScriptCall:
    """The write of one Edge answer, as Stigg's SDK writes it after a miss (entries without
    a date versioned at the time the request started)."""
    return write_back_call(
        layout.customer(scope.customer_id, scope.resource_id),
        answer,
        ttl=ttl,
        environment_gate=layout.environment_gate,
        now=answer.requested_at_ms,
    )


def write(
    runner: ScriptRunner,
    layout: KeyLayout,
    fetched: Sequence[Fetched],
    report: ResyncReport,
    *,
    ttl: int,
) -> None:
    """Write the answers of one batch in one round trip; count what happened to each scope."""
    answered = [(item.scope, item.answer) for item in fetched if item.answer is not None]
    report.missing += [str(item.scope) for item in fetched if item.missing]
    report.failures += [item.failure for item in fetched if item.failure is not None]
    calls = [write_call(layout, scope, answer, ttl=ttl) for scope, answer in answered]
    for (scope, _), reply in zip(answered, runner.run_calls(calls), strict=True):
        if isinstance(reply, Exception):
            report.failures.append(f"{scope}: {StoreError(f'Redis refused the write: {reply}')}")
        elif int(reply) > 0:
            report.written += 1
        else:
            report.stale += 1


def _batches(scopes: Sequence[ScopeRef], size: int) -> Iterator[Sequence[ScopeRef]]:
    for start in range(0, len(scopes), size):
        yield scopes[start : start + size]
