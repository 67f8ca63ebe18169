"""What /metrics exposes: this process's metrics (or every worker process's), plus Redis INFO.

With ``PROMETHEUS_MULTIPROC_DIR`` set (a prefork pool whose children count
messages), the counters and histograms of every process are merged from that
directory by prometheus_client's ``MultiProcessCollector``; otherwise the
default registry of this process is exposed. Either way the Redis INFO gauges,
the build info and this process's CPU and memory are included.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from cache_pipeline.api.redis_info import DEFAULT_MAX_AGE, RedisInfoCollector
from cache_pipeline.ops.metrics import BUILD_INFO, REDIS_UP

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Exposition(Collector):
    """The union of several collectors, rendered as Prometheus text."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, sources: Sequence[Collector]) -> None:
        self._sources = list(sources)

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source.collect()

    def render(self) -> bytes:
        """The Prometheus text exposition of every source."""
        return generate_latest(self)


def build_exposition(
    redis_client: Any,
    *,
    multiprocess_dir: str | None = None,
    info_max_age: float = DEFAULT_MAX_AGE,
) -> Exposition:
    """Sources for /metrics; ``multiprocess_dir`` defaults to ``$PROMETHEUS_MULTIPROC_DIR``."""
    # The published exposition has no ``*_created`` series beside counters and histograms.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    directory = multiprocess_dir or os.environ.get(MULTIPROC_ENV) or None
    # Redis first: the INFO read also sets persistent_cache_redis_up for this scrape.
    redis_info = RedisInfoCollector(
        redis_client, max_age=info_max_age, on_result=lambda ok: REDIS_UP.set(int(ok))
    )
    if directory is None:
        return Exposition([redis_info, REGISTRY])
    merged = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
    return Exposition([redis_info, merged, PROCESS_COLLECTOR, BUILD_INFO])
