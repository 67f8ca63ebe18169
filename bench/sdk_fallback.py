"""How long a getter takes to return its fallback when Redis and the Edge API both refuse.

``.venv/bin/python -m bench.sdk_fallback [--calls N]`` points a reader at two closed
loopback ports and prints, for the sync and the asyncio reader, the first call (it
meets both refusals) and the median and p99 of the calls after it (the Edge API and
Redis then rest: ``edge_retry_after_seconds``, ``redis_retry_after_seconds``).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import click

from cache_pipeline.client import AsyncEntitlementsCache, EntitlementsCache
from tests.support.servers import free_port


def settings() -> dict[str, object]:
    return {
        "redis_port": free_port(),
        "edge_api_url": f"http://127.0.0.1:{free_port()}",
        "environment_prefix": "bench-fallback",
        "server_api_key": "k",
    }


def sync_times(calls: int) -> list[float]:
    times = []
    with EntitlementsCache(**settings()) as cache:  # type: ignore[arg-type]
        for _ in range(calls + 1):
            started = time.perf_counter()
            assert cache.get_metered_entitlement("cus-1", "seats").is_fallback
            times.append(time.perf_counter() - started)
    return times


async def async_times(calls: int) -> list[float]:
    times = []
    async with AsyncEntitlementsCache(**settings()) as cache:  # type: ignore[arg-type]
        for _ in range(calls + 1):
            started = time.perf_counter()
            assert (await cache.get_metered_entitlement("cus-1", "seats")).is_fallback
            times.append(time.perf_counter() - started)
    return times


def line(name: str, times: list[float]) -> str:
    after = sorted(times[1:])
    p99 = after[min(len(after) - 1, int(len(after) * 0.99))]
    return (
        f"{name}: first {times[0] * 1000:.1f} ms; after it, median"
        f" {statistics.median(after) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms ({len(after)} calls)"
    )


@click.command()
@click.option("--calls", type=click.IntRange(min=1), default=1000, show_default=True)
def main(calls: int) -> None:
    """Print the fallback latency of both readers with Redis and the Edge API refusing."""
    click.echo(line("sync", sync_times(calls)))
    click.echo(line("asyncio", asyncio.run(async_times(calls))))


if __name__ == "__main__":
    main()
