"""/metrics as a Prometheus parser sees it, with Redis INFO read from a real redis-server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache_pipeline import __version__
from cache_pipeline.api.exposition import build_exposition
from cache_pipeline.api.redis_info import RedisInfoCollector, read_info
from cache_pipeline.api.server import ServerHandle, serve_in_thread
from cache_pipeline.config import load_settings
from cache_pipeline.ops.health import READINESS_REASONS, HealthState, Reason
from cache_pipeline.ops.metrics import (
    BASELINE_TYPES,
    HIT_RATIO_NAME,
    HITS_NAME,
    MEMORY_USAGE_NAME,
    MISSES_NAME,
)
from cache_pipeline.store.connection import connect
from tests.support.servers import RedisServer, free_port, wait_until

INFO_GAUGES = (HITS_NAME, MISSES_NAME, HIT_RATIO_NAME, MEMORY_USAGE_NAME)


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this module only: its hits and misses are ours alone."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def client(own_redis: RedisServer) -> Iterator[redis.Redis]:
    if own_redis.process is None:
        own_redis.start()
    connection = own_redis.client()
    yield connection
    connection.close()


class Scraper:
    """A running HTTP surface and a parsed view of its /metrics."""

    def __init__(self, own_redis: RedisServer) -> None:
        settings = load_settings(port=free_port(), api_host="127.0.0.1", redis_port=own_redis.port)
        self.redis = connect(settings)
        self.handle: ServerHandle = serve_in_thread(settings, HealthState(), self.redis)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=10)

    def text(self) -> str:
        response = self.http.get("/metrics")
        assert response.status_code == 200
        return response.text

    def samples(self) -> dict[str, Sample]:
        """Unlabelled samples by name."""
        return {
            sample.name: sample
            for family in text_string_to_metric_families(self.text())
            for sample in family.samples
            if not sample.labels
        }

    def wait_for(
        self, predicate: Callable[[dict[str, Sample]], bool], what: str
    ) -> dict[str, Sample]:
        """The first scrape whose samples satisfy ``predicate``."""
        seen: list[dict[str, Sample]] = []

        def scrape() -> bool:
            seen.append(self.samples())
            return predicate(seen[-1])

        wait_until(scrape, what=what)
        return seen[-1]

    def close(self) -> None:
        self.http.close()
        self.handle.stop()
        self.redis.close()


@pytest.fixture
def scraper(own_redis: RedisServer) -> Iterator[Scraper]:
    running = Scraper(own_redis)
    yield running
    running.close()
    if own_redis.process is None:
        own_redis.start()


def exposed_types(text: str) -> dict[str, str]:
    """Published name → type, as a parser sees them (counters get their ``_total`` back)."""
    types = {}
    for family in text_string_to_metric_families(text):
        names = {sample.name for sample in family.samples}
        if family.type == "counter" and (not names or f"{family.name}_total" in names):
            types[f"{family.name}_total"] = family.type
        else:
            types[family.name] = family.type
    return types


def test_every_baseline_name_with_its_type(scraper: Scraper) -> None:
    text = scraper.text()
    types = exposed_types(text)
    for name, kind in BASELINE_TYPES.items():
        assert types.get(name) == kind, f"{name}: {types.get(name)}"
        assert f"# TYPE {name} {kind}\n" in text


def test_operator_metrics_beside_the_baseline(scraper: Scraper) -> None:
    text = scraper.text()
    types = exposed_types(text)
    assert types["process_cpu_seconds_total"] == "counter"
    assert types["process_resident_memory_bytes"] == "gauge"
    assert types["persistent_cache_redis_up"] == "gauge"
    assert types["persistent_cache_consumers"] == "gauge"
    for counter in ("messages_failed", "messages_skipped", "receive_errors"):
        assert types[f"persistent_cache_{counter}_total"] == "counter"
    build = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "persistent_cache_build_info"
    ]
    assert [sample.labels for sample in build] == [{"version": __version__}]
    assert "_created" not in text


def test_info_gauges_follow_real_hits_and_misses(scraper: Scraper, client: redis.Redis) -> None:
    before = scraper.samples()
    client.set("metrics:present", "x")
    for _ in range(7):
        client.get("metrics:present")
    for _ in range(3):
        client.get("metrics:absent")
    hits = before[HITS_NAME].value + 7
    misses = before[MISSES_NAME].value + 3

    after = scraper.wait_for(lambda s: s[HITS_NAME].value == hits, "hits to reach the scrape")
    assert after[MISSES_NAME].value == misses
    assert after[HIT_RATIO_NAME].value == pytest.approx(hits / (hits + misses))
    assert after[MEMORY_USAGE_NAME].value == pytest.approx(
        float(client.info("memory")["used_memory"]), rel=0.5
    )
    assert after["persistent_cache_redis_up"].value == 1


def test_redis_down_leaves_the_info_gauges_out(scraper: Scraper, own_redis: RedisServer) -> None:
    wait_until(lambda: HITS_NAME in scraper.samples(), what="Redis gauges")
    own_redis.stop()
    samples = scraper.wait_for(lambda s: s["persistent_cache_redis_up"].value == 0, "redis_up 0")
    assert not set(INFO_GAUGES) & set(samples)
    assert "persistent_cache_messages_processed_total" in exposed_types(scraper.text())

    own_redis.start()
    wait_until(lambda: HITS_NAME in scraper.samples(), what="Redis gauges back")


def test_hit_ratio_is_zero_without_lookups(own_redis: RedisServer) -> None:
    fresh = RedisServer().start()
    try:
        with fresh.client() as connection:
            reading = read_info(connection)
        assert (reading.hits, reading.misses, reading.hit_ratio) == (0, 0, 0.0)
        assert reading.used_memory > 0
    finally:
        fresh.stop()


def test_one_info_per_max_age(client: redis.Redis) -> None:
    now = [0.0]
    collector = RedisInfoCollector(client, max_age=1.5, clock=lambda: now[0])

    def info_calls() -> int:
        stats = client.info("commandstats").get("cmdstat_info", {"calls": 0})
        return int(stats["calls"])

    start = info_calls()
    list(collector.collect())
    for _ in range(5):
        now[0] += 0.2
        list(collector.collect())
    after_burst = info_calls()
    now[0] += 1.5
    list(collector.collect())
    # one reading is INFO stats + INFO memory; the commandstats calls count themselves
    assert after_burst - start == 2 + 1
    assert info_calls() - after_burst == 2 + 1


def test_describe_does_not_touch_redis() -> None:
    unreachable = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    collector = RedisInfoCollector(unreachable)
    assert sorted(family.name for family in collector.describe()) == sorted(INFO_GAUGES)
    assert list(collector.collect()) == []
    unreachable.close()


CHILD = textwrap.dedent(
    """
    import sys
    from cache_pipeline.ops.metrics import MESSAGES_PROCESSED, MESSAGES_FAILED
    MESSAGES_PROCESSED.labels(type="usage.updated").inc(int(sys.argv[1]))
    MESSAGES_FAILED.labels(reason="not_json").inc()
    """
)


def test_multiprocess_counts_every_process(tmp_path: Path, client: redis.Redis) -> None:
    """A prefork pool's children count in files; /metrics sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for count in (3, 4):
        subprocess.run([sys.executable, "-c", CHILD, str(count)], env=env, check=True, timeout=60)
    text = build_exposition(client, multiprocess_dir=str(tmp_path)).render().decode()
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    processed = ("persistent_cache_messages_processed_total", (("type", "usage.updated"),))
    failed = ("persistent_cache_messages_failed_total", (("reason", "not_json"),))
    assert values[processed] == 7
    assert values[failed] == 2
    types = exposed_types(text)
    for name, kind in BASELINE_TYPES.items():
        assert types.get(name) == kind, f"{name}: {types.get(name)}"


def ready_gauge() -> dict[str, float | None]:
    return {
        reason.value: REGISTRY.get_sample_value("persistent_cache_ready", {"reason": reason.value})
        for reason in READINESS_REASONS
    }


def assert_gauge_says(health: HealthState, reason: Reason | None) -> None:
    """One series is 1, that of /readyz's reason (none while UP); the others are 0."""
    expected = {r.value: float(r is reason) for r in READINESS_REASONS}
    assert ready_gauge() == expected
    assert health.readiness().get("reason") == (None if reason is None else reason.value)
    assert ready_gauge() == expected, "reading readiness publishes the same"


def test_readiness_reasons_are_every_reason_but_liveness_s() -> None:
    assert set(READINESS_REASONS) == set(Reason) - {Reason.CONSUMERS_STALLED}
    assert len(READINESS_REASONS) == len(set(READINESS_REASONS))


def test_ready_gauge_names_the_reason_readyz_reports() -> None:
    now = [1000.0]
    health = HealthState(window=5, clock=lambda: now[0])
    assert_gauge_says(health, Reason.NO_CONSUMERS)
    health.set_consumers(2)
    assert_gauge_says(health, Reason.REDIS_UNREACHABLE)
    health.set_redis(True)
    assert_gauge_says(health, None)

    health.pause(Reason.POISON_FLOOD, "70 of 100 invalid")
    assert_gauge_says(health, Reason.POISON_FLOOD)
    health.pause(Reason.SCHEMA_REFUSED, "schema 1 found")
    assert_gauge_says(health, Reason.SCHEMA_REFUSED)  # the first in /readyz's order
    health.resume(Reason.SCHEMA_REFUSED)
    health.resume(Reason.POISON_FLOOD)
    assert_gauge_says(health, None)

    for run in (
        Reason.REDIS_WRITES_FAILING,
        Reason.QUEUE_RECEIVES_FAILING,
        Reason.QUEUE_DELETES_FAILING,
    ):
        health.failed(run, "timeout")
        assert_gauge_says(health, None)  # one failed call does not flip readiness
        now[0] += 6
        health.failed(run, "timeout")  # the next failure, past the window, shows
        assert ready_gauge()[run.value] == 1
        assert_gauge_says(health, run)
        health.succeeded(run)
        assert_gauge_says(health, None)

    health.failed(Reason.QUEUE_DELETES_FAILING, "throttled")
    now[0] += 6  # no further call: /readyz (each probe) publishes it
    assert ready_gauge()[Reason.QUEUE_DELETES_FAILING.value] == 0
    assert health.readiness()["reason"] == Reason.QUEUE_DELETES_FAILING.value
    assert_gauge_says(health, Reason.QUEUE_DELETES_FAILING)
    health.set_redis(False)
    assert_gauge_says(health, Reason.REDIS_UNREACHABLE)
    health.set_consumers(0)
    assert_gauge_says(health, Reason.NO_CONSUMERS)


def test_ready_gauge_is_exposed_with_every_reason(client: redis.Redis) -> None:
    health = HealthState()
    health.set_consumers(1)
    health.set_redis(True)
    health.pause(Reason.SCHEMA_REFUSED, "schema 1 found")
    text = build_exposition(client).render().decode()
    assert "# TYPE persistent_cache_ready gauge\n" in text
    series = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "persistent_cache_ready"
    }
    assert series == {r.value: float(r is Reason.SCHEMA_REFUSED) for r in READINESS_REASONS}
