"""The HTTP surface served by a real uvicorn, probing a real redis-server of its own."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cache_pipeline.api.server import ServerHandle, serve_in_thread
from cache_pipeline.config import Settings, load_settings
from cache_pipeline.ops.health import READINESS_REASONS, HealthState, Reason
from cache_pipeline.ops.metrics import (
    BASELINE_TYPES,
    HTTP_REQUEST_DURATION_NAME,
    HTTP_REQUESTS_NAME,
)
from cache_pipeline.store.connection import connect
from tests.support.servers import RedisServer, free_port, wait_until

UNROUTED = [
    "/",
    "/x",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/livez/x",
    "/metrics/x",
    "/health",
    "/metrics/",  # 404, not a 307 whose Location comes from the request's Host header
    "/livez/",
    "/readyz/",
]


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server these tests may stop and restart."""
    server = RedisServer().start()
    yield server
    server.stop()


class Surface:
    """A running HTTP surface and the state it reports."""

    def __init__(self, settings: Settings, redis_server: RedisServer) -> None:
        self.health = HealthState()
        self.redis = connect(settings)
        self.handle: ServerHandle = serve_in_thread(settings, self.health, self.redis)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=10)
        self.redis_server = redis_server

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def readyz(self) -> tuple[int, dict[str, Any]]:
        response = self.get("/readyz")
        return response.status_code, response.json()

    def close(self) -> None:
        self.http.close()
        self.handle.stop()
        self.redis.close()


def surface_settings(redis_server: RedisServer, **overrides: Any) -> Settings:
    return load_settings(
        port=free_port(), api_host="127.0.0.1", redis_port=redis_server.port, **overrides
    )


@pytest.fixture
def surface(own_redis: RedisServer) -> Iterator[Surface]:
    running = Surface(surface_settings(own_redis), own_redis)
    yield running
    running.close()
    if own_redis.process is None:
        own_redis.start()


def test_livez_is_up_without_consumers_or_redis(surface: Surface) -> None:
    surface.redis_server.stop()
    response = surface.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "UP"}


def test_readyz_up_when_consuming_and_redis_answers(surface: Surface) -> None:
    surface.health.set_consumers(3)
    assert surface.readyz() == (200, {"status": "UP", "consumers": 3, "redis": "CONNECTED"})


def test_readyz_down_without_consumers(surface: Surface) -> None:
    assert surface.readyz() == (
        503,
        {
            "status": "DOWN",
            "consumers": 0,
            "redis": "CONNECTED",
            "reason": "no_consumers",
            "message": "no queue consumer runs in this process",
        },
    )


def test_readyz_down_with_reason_while_paused(surface: Surface) -> None:
    surface.health.set_consumers(1)
    surface.health.pause(Reason.SCHEMA_REFUSED, "redis schema mismatch")
    surface.health.set_detail("schema", "expected 1, found 2")
    status, body = surface.readyz()
    assert status == 503
    assert body == {
        "status": "DOWN",
        "consumers": 1,
        "redis": "CONNECTED",
        "reason": "schema_refused",
        "message": "redis schema mismatch",
        "details": {"schema": "expected 1, found 2"},
    }
    surface.health.resume(Reason.SCHEMA_REFUSED)
    surface.health.set_detail("schema", None)
    wait_until(lambda: surface.readyz()[0] == 200, what="/readyz UP after resume")


def test_readyz_follows_redis_down_and_back(surface: Surface) -> None:
    surface.health.set_consumers(2)
    wait_until(lambda: surface.readyz()[0] == 200, what="/readyz UP")

    surface.redis_server.stop()
    down = {
        "status": "DOWN",
        "consumers": 2,
        "redis": "DISCONNECTED",
        "reason": "redis_unreachable",
        "message": "Redis does not answer a PING",
    }
    wait_until(lambda: surface.readyz() == (503, down), what="/readyz DOWN with Redis stopped")
    assert surface.health.redis_connected is False

    surface.redis_server.start()
    up = {"status": "UP", "consumers": 2, "redis": "CONNECTED"}
    wait_until(lambda: surface.readyz() == (200, up), what="/readyz UP with Redis back")


def test_readyz_answers_while_redis_hangs(surface: Surface) -> None:
    """A Redis that accepts but never answers makes /readyz answer DOWN, not hang."""
    surface.health.set_consumers(1)
    wait_until(lambda: surface.readyz()[0] == 200, what="/readyz UP")
    surface.redis_server.pause()
    try:
        wait_until(lambda: surface.readyz()[0] == 503, timeout=15, what="/readyz DOWN")
        assert surface.readyz()[1]["redis"] == "DISCONNECTED"
    finally:
        surface.redis_server.resume()
    wait_until(lambda: surface.readyz()[0] == 200, timeout=15, what="/readyz UP after resume")


@pytest.mark.parametrize("path", UNROUTED)
def test_everything_else_is_404(surface: Surface, path: str) -> None:
    assert surface.get(path).status_code == 404


def test_docs_only_when_enabled(own_redis: RedisServer) -> None:
    running = Surface(surface_settings(own_redis, api_docs=True), own_redis)
    try:
        assert running.get("/docs").status_code == 200
        schema = running.get("/openapi.json").json()
        assert set(schema["paths"]) == {"/livez", "/readyz", "/metrics"}
        assert running.get("/x").status_code == 404
    finally:
        running.close()


def test_metrics_is_prometheus_text(surface: Surface) -> None:
    response = surface.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE persistent_cache_messages_processed_total counter" in response.text


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_requests_are_counted_and_timed_per_handler_beside_the_baseline(
    surface: Surface,
) -> None:
    def requests(handler: str, status: str) -> float:
        labels = (("handler", handler), ("method", "GET"), ("status", status))
        return samples(surface.get("/metrics").text).get((HTTP_REQUESTS_NAME, labels), 0.0)

    livez, missing = requests("/livez", "2xx"), requests("none", "4xx")
    for _ in range(3):
        assert surface.get("/livez").status_code == 200
    assert surface.get("/nowhere").status_code == 404
    text = surface.get("/metrics").text
    assert requests("/livez", "2xx") == livez + 3
    assert requests("none", "4xx") == missing + 1, "unrouted paths share one handler label"
    latency = samples(text)
    count = (
        HTTP_REQUEST_DURATION_NAME + "_count",
        (("handler", "/livez"), ("method", "GET"), ("status", "2xx")),
    )
    assert latency[count] >= 3
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert families[HTTP_REQUEST_DURATION_NAME] == "histogram"
    for name, kind in BASELINE_TYPES.items():
        assert kind in (families.get(name), families.get(name.removesuffix("_total"))), name


def ready_series(surface: Surface) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in samples(surface.get("/metrics").text).items()
        if name == "persistent_cache_ready"
    }


def test_metrics_say_why_readyz_is_down(surface: Surface) -> None:
    """persistent_cache_ready{reason}: 1 for the reason /readyz reports, 0 for the others."""
    all_zero = {reason.value: 0.0 for reason in READINESS_REASONS}
    surface.health.set_consumers(1)
    wait_until(lambda: surface.readyz()[0] == 200, what="/readyz UP")
    assert ready_series(surface) == all_zero
    surface.health.pause(Reason.SCHEMA_REFUSED, "another key-schema version")
    status, body = surface.readyz()
    assert (status, body["reason"]) == (503, "schema_refused")
    assert ready_series(surface) == all_zero | {"schema_refused": 1.0}
    surface.health.resume(Reason.SCHEMA_REFUSED)
    surface.redis_server.stop()
    wait_until(lambda: surface.readyz()[0] == 503, what="/readyz DOWN with Redis stopped")
    assert ready_series(surface) == all_zero | {"redis_unreachable": 1.0}


def test_port_in_use_is_a_clear_error(own_redis: RedisServer) -> None:
    settings = surface_settings(own_redis)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", settings.port))
        taken.listen()
        redis_client = connect(settings)
        try:
            where = f"127.0.0.1:{settings.port}"
            with pytest.raises(RuntimeError, match=f"could not listen on {where}"):
                serve_in_thread(settings, HealthState(), redis_client)
        finally:
            redis_client.close()


def test_stop_releases_the_port(own_redis: RedisServer) -> None:
    settings = surface_settings(own_redis)
    running = Surface(settings, own_redis)
    assert running.get("/livez").status_code == 200
    running.close()
    assert not running.handle.thread.is_alive()
    with socket.socket() as again:
        again.bind(("127.0.0.1", settings.port))
