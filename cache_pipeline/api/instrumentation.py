"""Request count and latency per handler of the HTTP surface, by prometheus-fastapi-instrumentator.

The two series go into the default registry and so appear on the same /metrics
as the pipeline's own (the instrumentator's own /metrics route is not used).
Their collectors are made once per process: building a second app (tests do)
reuses them instead of registering the names twice.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from fastapi import FastAPI
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as http_metrics

from cache_pipeline.ops.metrics import (
    HTTP_REQUEST_DURATION_BUCKETS,
    HTTP_REQUEST_DURATION_NAME,
    HTTP_REQUESTS_NAME,
)

Instrumentation = Callable[[http_metrics.Info], None]


@cache
def _instrumentations() -> tuple[Instrumentation, ...]:
    requests = http_metrics.requests(
        metric_name=HTTP_REQUESTS_NAME,
        metric_doc="HTTP requests of the health and metrics surface, by handler, method, status",
    )
    latency = http_metrics.latency(
        metric_name=HTTP_REQUEST_DURATION_NAME,
        metric_doc="Seconds to answer an HTTP request of the surface, by handler, method, status",
        buckets=HTTP_REQUEST_DURATION_BUCKETS,
    )
    made = tuple(fn for fn in (requests, latency) if fn is not None)
    assert len(made) == 2, "HTTP metric names already registered by someone else"
    return made


def instrument(app: FastAPI) -> None:
    """Count and time every request of ``app`` per route (unrouted paths as ``none``)."""
    instrumentator = Instrumentator(
        should_group_status_codes=True,
        should_group_untemplated=True,
        should_respect_env_var=False,
    )
    instrumentator.add(*_instrumentations())
    instrumentator.instrument(app)
