"""The reader's outcomes counted into Prometheus, when ``prometheus_client`` is installed.

``ReaderOptions(outcomes=prometheus_outcomes())`` counts every getter call of a reader
in ``cache_pipeline_sdk_reads_total{outcome}``: ``hit`` (answered from the cache),
``miss`` (answered from the Edge API), ``fallback`` (answered with the fallback) and
``edge_error`` (an Edge API call failed; its call also counts a ``fallback``). Export
them as your application exports its other metrics. Off unless asked for: the SDK does
not depend on ``prometheus_client``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cache_pipeline.errors import InvalidArgument

OUTCOMES = ("hit", "miss", "fallback", "edge_error")
READS = "cache_pipeline_sdk_reads"


def prometheus_outcomes(registry: Any = None) -> Callable[[str], None]:
    """A counter of getter outcomes in ``registry`` (prometheus_client's default when None)."""
    try:
        from prometheus_client import REGISTRY, Counter
    except ImportError:
        raise InvalidArgument(
            "prometheus_outcomes() needs prometheus_client: pip install prometheus-client"
        ) from None
    counter = Counter(
        READS,
        "Getter calls of the cache-pipeline reader SDK, by outcome",
        ["outcome"],
        registry=REGISTRY if registry is None else registry,
    )
    children = {outcome: counter.labels(outcome) for outcome in OUTCOMES}

    def count(outcome: str) -> None:
        children[outcome].inc()

    return count
