"""Redis-derived gauges, read from Redis INFO when /metrics is scraped.

``RedisInfoCollector`` yields the published hits, misses, hit ratio and memory
gauges from INFO ``stats`` and ``memory``. One reading serves every scrape for
``max_age`` seconds, so a burst of scrapes costs Redis one INFO. When Redis does
not answer, the four gauges are left out of the exposition (an absent series is
"unknown"; ``persistent_cache_redis_up`` says why) and the scrape still succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cache_pipeline.ops.metrics import HIT_RATIO_NAME, HITS_NAME, MEMORY_USAGE_NAME, MISSES_NAME

DEFAULT_MAX_AGE = 1.5

_HELP = {
    HITS_NAME: "Total number of cache hits in Redis (keyspace_hits)",
    MISSES_NAME: "Total number of cache misses in Redis (keyspace_misses)",
    HIT_RATIO_NAME: "Ratio of Redis cache hits to all cache lookups, 0 when there were none",
    MEMORY_USAGE_NAME: "Amount of memory used by the Redis cache in bytes (used_memory)",
}


@dataclass(frozen=True)
class RedisReading:
    """The INFO fields the gauges are made of."""

    hits: int
    misses: int
    used_memory: int

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def values(self) -> dict[str, float]:
        """Gauge name → value."""
        return {
            HITS_NAME: float(self.hits),
            MISSES_NAME: float(self.misses),
            HIT_RATIO_NAME: self.hit_ratio,
            MEMORY_USAGE_NAME: float(self.used_memory),
        }


def read_info(client: Any) -> RedisReading:
    """One reading of INFO stats and memory (summed over the nodes of a cluster)."""
    stats = _flatten(client.info("stats"))
    memory = _flatten(client.info("memory"))
    return RedisReading(
        hits=_total(stats, "keyspace_hits"),
        misses=_total(stats, "keyspace_misses"),
        used_memory=_total(memory, "used_memory"),
    )


def _flatten(info: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A single node's INFO, or a cluster client's {node: INFO}, as a list of INFO dicts."""
    nested = [value for value in info.values() if isinstance(value, Mapping)]
    return nested if nested and len(nested) == len(info) else [info]


def _total(nodes: Iterable[Mapping[str, Any]], field: str) -> int:
    return sum(int(node.get(field, 0)) for node in nodes)


class RedisInfoCollector(Collector):
    """A prometheus_client collector of the Redis INFO gauges, cached for ``max_age`` seconds."""

    def __init__(
        self,
        client: Any,
        *,
        max_age: float = DEFAULT_MAX_AGE,
        on_result: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._max_age = max_age
        self._on_result = on_result
        self._clock = clock
        self._lock = threading.Lock()
        self._reading: RedisReading | None = None
        self._read_at = float("-inf")

    def describe(self) -> Iterable[Metric]:
        """The four families, without touching Redis (registration stays offline)."""
        return [GaugeMetricFamily(name, text) for name, text in _HELP.items()]

    def collect(self) -> Iterable[Metric]:
        reading = self.reading()
        if reading is None:
            return []
        return [
            GaugeMetricFamily(name, _HELP[name], value=value)
            for name, value in reading.values().items()
        ]

    def reading(self) -> RedisReading | None:
        """The cached reading, refreshed when older than ``max_age``; None when Redis failed."""
        with self._lock:
            if self._clock() - self._read_at >= self._max_age:
                self._reading = self._refresh()
                self._read_at = self._clock()
            return self._reading

    def _refresh(self) -> RedisReading | None:
        try:
            reading = read_info(self._client)
        except (redis.RedisError, OSError, ValueError):
            reading = None
        if self._on_result is not None:
            self._on_result(reading is not None)
        return reading
