"""The pod's HTTP surface: /livez, /readyz, /metrics (and /docs only when API_DOCS=1).

Nothing else is routed: every other path answers 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from cache_pipeline import __version__
from cache_pipeline.api.exposition import build_exposition
from cache_pipeline.api.instrumentation import instrument
from cache_pipeline.api.readiness import RedisProbe
from cache_pipeline.config import Settings
from cache_pipeline.ops.health import HealthState


def create_app(settings: Settings, health: HealthState, redis_client: Any) -> FastAPI:
    """The FastAPI application of one pod, reading ``health`` and probing ``redis_client``."""
    docs = settings.api_docs
    probe = RedisProbe(redis_client, health)
    exposition = build_exposition(redis_client)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        probe.close()

    app = FastAPI(
        lifespan=lifespan,
        title="cache-pipeline",
        version=__version__,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        swagger_ui_oauth2_redirect_url="/docs/oauth2-redirect" if docs else None,
        redirect_slashes=False,  # no 307 whose Location is built from the Host header
    )

    instrument(app)

    @app.get("/livez")
    def livez() -> JSONResponse:
        """200 while consumption can go on; 503 when every consumer is gone or stalled.

        Touches nothing external: Redis or SQS being away is readiness, not liveness.
        """
        body = health.liveness()
        return JSONResponse(body, status_code=200 if body["status"] == "UP" else 503)

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        """200 when this pod consumes, Redis answers and nothing has been failing; else 503."""
        probe.connected()
        body = health.as_dict()
        return JSONResponse(body, status_code=200 if body["status"] == "UP" else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(exposition.render(), media_type=exposition.content_type)

    return app
