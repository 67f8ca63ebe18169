"""Reader SDK latency on loopback: hits and misses, p50/p99/p99.9.

Hits read one customer (10 metered features with their usage keys, 3 credits) written
the contract-v2 way; misses read customers the cache does not hold, so each one asks
a recording Edge API stand-in over HTTP and writes the answer back.
The hit kinds and a bare PING through the same connection pool (the floor: one
round trip and nothing else) are timed in turn, so they share the machine's noise.

    python -m bench.sdk_latency [--hits 20000] [--misses 2000]

Redis is REDIS_HOST/REDIS_PORT when REDIS_HOST is set, otherwise a redis-server
of its own on a free port. Not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import click

from cache_pipeline.client import EntitlementsCache, ReaderOptions
from cache_pipeline.config import load_settings
from cache_pipeline.keys import KeyLayout
from cache_pipeline.store.connection import connect
from tests.support.edge_answers import answer, metered, request_line
from tests.support.recording_edge import RecordingEdge
from tests.support.servers import RedisServer
from tests.support.v2_writes import credit, write_scope

ENTRIES = [metered(f"feature-{i}", 100, i) for i in range(10)]
CREDITS = {f"c-{i}": credit(10 * i, 1000) for i in range(3)}
API_KEY = "bench-key"
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
    """Write the hit customer the contract-v2 way, as the pipeline does."""
    client = connect(settings)
    try:
        layout = KeyLayout(settings.environment_prefix)
        write_scope(client, layout, customer, ENTRIES, credits=CREDITS, ttl=3600)
    finally:
        client.close()


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
    prefix = f"bench-sdk-{os.getpid()}-{time.monotonic_ns()}"
    port = own.port if own else int(os.environ.get("REDIS_PORT", "6379"))
    miss_customers = [f"miss-{i}" for i in range(misses + WARMUP)]
    stub = RecordingEdge({request_line(c): answer(*ENTRIES) for c in miss_customers}).start()
    settings = load_settings(
        redis_host=os.environ.get("REDIS_HOST", "127.0.0.1"),
        redis_port=port,
        environment_prefix=prefix,
        edge_api_url=stub.url,
        server_api_key=API_KEY,
    )
    try:
        seed_cache(settings, "hit")
        click.echo(f"sdk-latency: load average {os.getloadavg()[0]:.2f}, redis port {port}")
        with EntitlementsCache(settings, ReaderOptions()) as cache:
            calls: list[tuple[str, Callable[[int], Any]]] = [
                (
                    "hit get_metered_entitlement",
                    lambda i: cache.get_metered_entitlement("hit", "feature-3", requested_usage=1),
                ),
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
                "miss (Edge stand-in + write-back)",
                timed(lambda i: cache.get_entitlements(miss_customers[WARMUP + i]), misses),
            )
        local = ReaderOptions(local_ttl_seconds=5)
        with EntitlementsCache(settings, local) as cache:
            call = lambda i: cache.get_metered_entitlement("hit", "feature-3")  # noqa: E731
            timed(call, WARMUP)
            report("hit get_metered_entitlement, local cache on", timed(call, hits))
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
