"""Rebuild an environment's cache from the upstream API (``cache-pipeline resync``).

After Redis lost its data the stream only brings back what changes next; the
rest comes back on cache misses, one upstream call each. A resync lists every
customer scope the upstream knows (``GET /v1/customers``), fetches each
snapshot and writes it as an ``entitlements.updated`` message under UPSERT with
the upstream's own timestamp, so the monotonic rule keeps anything newer that
the worker wrote meanwhile. When every scope was handled it stamps
``resyncedAt`` on the schema marker, which clears the data-loss detail of
/readyz on every pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cache_pipeline.config import CacheUpdatePolicy, Settings
from cache_pipeline.errors import CachePipelineError, StoreError
from cache_pipeline.keys import KeyLayout
from cache_pipeline.messages import CustomerRef, EntitlementsUpdated
from cache_pipeline.redis_client import connect
from cache_pipeline.schema import SchemaGuard
from cache_pipeline.store import Outcome, RedisClient, Store
from cache_pipeline.upstream import UpstreamClient, UpstreamOptions

WRITE_BATCH = 100  # snapshots per pipelined round trip


@dataclass
class ResyncReport:
    """What a resync did, scope by scope."""

    customers: int = 0
    written: int = 0
    stale: int = 0  # the cache already held a newer version
    missing: int = 0  # listed, then unknown to the upstream when fetched
    failures: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, object]:
        return {
            "customers": self.customers,
            "written": self.written,
            "stale": self.stale,
            "missing": self.missing,
            "failed": len(self.failures),
        }


def upstream_options(settings: Settings) -> UpstreamOptions:
    key = settings.server_api_key.get_secret_value() if settings.server_api_key else None
    return UpstreamOptions(url=settings.edge_api_url, api_key=key, timeout=10.0, retries=3)


def run_resync(settings: Settings, *, concurrency: int = 8) -> ResyncReport:
    """Resync the configured environment (connections built from the settings)."""
    client = connect(settings)
    upstream = UpstreamClient(upstream_options(settings))
    try:
        layout = KeyLayout(settings.environment_prefix, cluster=settings.redis_cluster)
        return resync(
            client, layout, upstream, ttl=settings.keys_ttl_in_secs, concurrency=concurrency
        )
    finally:
        upstream.close()
        client.close()


def resync(
    client: RedisClient,
    layout: KeyLayout,
    upstream: UpstreamClient,
    *,
    ttl: int,
    concurrency: int = 8,
) -> ResyncReport:
    """Write every upstream snapshot to the cache; stamp the marker when nothing failed.

    Raises ``SchemaVersionMismatch`` before any write when the keyspace has another
    key-schema version, and the upstream's errors when it cannot list customers.
    """
    guard = SchemaGuard(client, layout)
    guard.check()
    store = Store(client, layout, ttl=ttl, policy=CacheUpdatePolicy.UPSERT)
    report = ResyncReport()
    scopes = upstream.customers()
    report.customers = len(scopes)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        fetched = pool.map(lambda ref: _fetch(upstream, ref), scopes)
        for batch in _batches(fetched, WRITE_BATCH):
            _write(store, batch, report)
    if report.complete:
        guard.mark_resynced()
    return report


def _fetch(upstream: UpstreamClient, ref: CustomerRef) -> EntitlementsUpdated | str | None:
    """The scope's message, None when the upstream no longer knows it, or why it failed."""
    try:
        answer = upstream.fetch(ref.customer_id, ref.resource_id)
    except CachePipelineError as exc:
        return f"{ref.customer_id!r}/{ref.resource_id!r}: {exc}"
    return None if answer is None else answer.to_message()


def _write(
    store: Store, batch: list[EntitlementsUpdated | str | None], report: ResyncReport
) -> None:
    messages = [item for item in batch if isinstance(item, EntitlementsUpdated)]
    report.missing += sum(item is None for item in batch)
    report.failures.extend(item for item in batch if isinstance(item, str))
    for message, outcome in zip(messages, store.apply_batch(messages), strict=True):
        if isinstance(outcome, StoreError):
            report.failures.append(f"{message.data.customer_id!r}: {outcome}")
        elif outcome is Outcome.WRITTEN:
            report.written += 1
        else:
            report.stale += 1


def _batches(
    items: Iterable[EntitlementsUpdated | str | None], size: int
) -> Iterator[list[EntitlementsUpdated | str | None]]:
    batch: list[EntitlementsUpdated | str | None] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
