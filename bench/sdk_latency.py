"""Reader SDK latency on loopback: hits and misses, p50/p99/p99.9.

Hits read one customer (10 features, 3 credits, usage on each) that the
pipeline's store wrote; misses read customers the cache does not hold, so each
one asks the edge stub (a real process over HTTP) and writes the answer back.
The hit kinds and a bare PING through the same connection pool (the floor: one
round trip and nothing else) are timed in turn, so they share the machine's noise.

    python -m bench.sdk_latency [--hits 20000] [--misses 2000]

Redis is REDIS_HOST/REDIS_PORT when REDIS_HOST is set, otherwise a redis-server
of its own on a free port. Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from cache_pipeline.client import EntitlementsCache, ReaderOptions
from cache_pipeline.config import CacheUpdatePolicy, load_settings
from cache_pipeline.keys import KeyLayout
from cache_pipeline.messages import parse_message
from cache_pipeline.redis_client import connect
from cache_pipeline.store import Store
from tests.support.edge import STUB_API_KEY, EdgeStub, snapshot_body
from tests.support.servers import RedisServer

FEATURES = {f"feature-{i}": i for i in range(10)}
CREDITS = {f"c-{i}": 10 * i for i in range(3)}
WARMUP = 500


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p99/p99.9 and max, in milliseconds (nearest rank)."""
    ordered = sorted(samples)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] * 1000

    return {"p50": rank(0.5), "p99": rank(0.99), "p99.9": rank(0.999), "max": ordered[-1] * 1000}


def timed(call: Callable[[int], Any], count: int) -> list[float]:
    samples = []
    for i in range(count):
        start = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - start)
    return samples


def interleaved(
    calls: list[tuple[str, Callable[[int], Any]]], count: int
) -> dict[str, list[float]]:
    """Time the calls in turn, ``count`` times each, so they share the machine's noise."""
    samples: dict[str, list[float]] = {name: [] for name, _ in calls}
    for i in range(WARMUP + count):
        for name, call in calls:
            start = time.perf_counter()
            call(i)
            elapsed = time.perf_counter() - start
            if i >= WARMUP:
                samples[name].append(elapsed)
    return samples


def seed_cache(settings: Any, customer: str) -> None:
    """Write the hit customer through the pipeline's own store."""
    body = {
        "id": str(uuid.uuid4()),
        "type": "entitlements.updated",
        "timestamp": int(time.time() * 1000),
        "data": {"customerId": customer, **snapshot_body(features=FEATURES, credits=CREDITS)},
    }
    client = connect(settings)
    try:
        store = Store(client, KeyLayout(settings.environment_prefix), ttl=3600)
        store.apply(
            parse_message(json.dumps(body), settings.environment_prefix),
            policy=CacheUpdatePolicy.UPSERT,
        )
    finally:
        client.close()


def seed_stub(path: Path, customers: list[str]) -> None:
    """The stub's file, written before it starts: one scope per miss customer."""
    now = int(time.time() * 1000)
    scopes = []
    for customer in customers:
        body = snapshot_body(features=FEATURES, credits=CREDITS, timestamp=now)
        scopes.append({"customerId": customer, "resourceId": None, **body})
    path.write_text(json.dumps({"scopes": scopes}))


def report(name: str, samples: list[float]) -> None:
    figures = percentiles(samples)
    cells = "  ".join(f"{k} {v:7.3f} ms" for k, v in figures.items())
    click.echo(f"{name:<34} n={len(samples):<6} {cells}")


@click.command()
@click.option("--hits", default=20_000, show_default=True, help="Measured hits per call kind.")
@click.option("--misses", default=2_000, show_default=True, help="Measured misses.")
def main(hits: int, misses: int) -> None:
    """Print hit and miss latency of the reader SDK."""
    own = None if os.environ.get("REDIS_HOST") else RedisServer().start()
    prefix = f"bench-sdk-{uuid.uuid4().hex[:8]}"
    port = own.port if own else int(os.environ.get("REDIS_PORT", "6379"))
    workdir = Path(tempfile.mkdtemp(prefix="sdk-bench-"))
    miss_customers = [f"miss-{i}" for i in range(misses + WARMUP)]
    seed_stub(workdir / "edge.json", miss_customers)
    stub = EdgeStub(data_file=workdir / "edge.json").start()
    settings = load_settings(
        redis_host=os.environ.get("REDIS_HOST", "127.0.0.1"),
        redis_port=port,
        environment_prefix=prefix,
        edge_api_url=stub.url,
        server_api_key=STUB_API_KEY,
    )
    try:
        seed_cache(settings, "hit")
        click.echo(f"sdk-latency: load average {os.getloadavg()[0]:.2f}, redis port {port}")
        with EntitlementsCache(settings, ReaderOptions()) as cache:
            calls: list[tuple[str, Callable[[int], Any]]] = [
                ("hit get_entitlement", lambda i: cache.get_entitlement("hit", "feature-3")),
                (
                    "hit get_credit_entitlement",
                    lambda i: cache.get_credit_entitlement("hit", "c-1"),
                ),
                ("hit get_entitlements", lambda i: cache.get_entitlements("hit")),
                ("floor: redis-py PING (same pool)", lambda i: cache.redis.ping()),
            ]
            for name, samples in interleaved(calls, hits).items():
                report(name, samples)
            timed(lambda i: cache.get_entitlements(miss_customers[i]), WARMUP)
            report(
                "miss (stub + write-back)",
                timed(lambda i: cache.get_entitlements(miss_customers[WARMUP + i]), misses),
            )
        local = ReaderOptions(local_ttl_seconds=5)
        with EntitlementsCache(settings, local) as cache:
            call = lambda i: cache.get_entitlement("hit", "feature-3")  # noqa: E731
            timed(call, WARMUP)
            report("hit get_entitlement, local cache on", timed(call, hits))
    finally:
        stub.stop()
        if own is not None:
            own.stop()
        else:
            client = connect(settings)
            for key in client.scan_iter(match=KeyLayout(prefix).environment_pattern):
                client.unlink(key)
            client.close()


if __name__ == "__main__":
    main()
