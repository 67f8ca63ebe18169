"""The benchmark harness works: its workload, its reference check, one small run.

Against the suite's own redis-server and moto server; no timing assertions
(the figures are printed by ``make bench``, never asserted).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import click
import pytest
import redis

from bench import latency_mode, sqs_ceiling
from bench.check import check_redis, parsed, seed
from bench.consumers import worker_unavailable
from bench.run import Settings, run_subject
from bench.services import Queues, RedisTarget
from bench.workload import Mix, generate
from cache_pipeline.keys import KeyLayout
from tests.support.applying import Applier
from tests.support.servers import RedisServer, SqsServer

SMALL = 300


def _apply(client: redis.Redis, layout: KeyLayout, stream: list[dict[str, object]]) -> None:
    store = Applier.of(client, layout, ttl=604800)
    for start in range(0, len(stream), 10):
        results = store.apply_batch(parsed(stream[start : start + 10]))
        assert not [r for r in results if isinstance(r, Exception)]


def test_workload_has_the_promised_shape() -> None:
    workload = generate(2000, seed=3)
    assert len(workload.stream) == 2000
    assert set(workload.counts) == {
        "usage.updated",
        "credits.updated",
        "entitlements.updated",
        "cache.invalidated",
    }
    assert workload.counts["usage.updated"] > sum(workload.counts.values()) / 2
    timestamps = [int(m["timestamp"]) for m in workload.stream]
    assert len(set(timestamps)) == len(timestamps)
    late = sum(1 for a, b in itertools.pairwise(timestamps) if b < a)
    assert 0 < late < len(timestamps) * 0.1
    per_customer = [m["data"].get("customerId") for m in workload.stream]
    assert per_customer.count("cus-00000") > per_customer.count("cus-00050") * 5  # skewed


def test_any_delivery_order_ends_in_the_model_state(redis_client: redis.Redis, prefix: str) -> None:
    """The generator's promise: the model in timestamp order is exact for every order."""
    workload = generate(SMALL, mix=Mix(invalidations=0.03), seed=11)
    for n, order in enumerate(("sent", "reversed", "shuffled")):
        layout = KeyLayout(f"{prefix}-{n}")
        stream = list(workload.stream)
        if order == "reversed":
            stream.reverse()
        elif order == "shuffled":
            random.Random(5).shuffle(stream)
        seed(redis_client, layout, workload.seeds)
        _apply(redis_client, layout, stream)
        check = check_redis(redis_client, layout, workload.seeds, workload.stream)
        assert check.ok, f"{order}: {check.summary()}"


def test_the_check_finds_stale_missing_and_unexpected_keys(
    redis_client: redis.Redis, layout: KeyLayout
) -> None:
    workload = generate(100, seed=5)
    seed(redis_client, layout, workload.seeds)
    _apply(redis_client, layout, workload.in_timestamp_order())
    assert check_redis(redis_client, layout, workload.seeds, workload.stream).ok

    usage = layout.customer("cus-00000").feature_usage("feature-api-calls")
    redis_client.set(usage + "#timestamp", "1")  # an old version: stale
    metadata = layout.customer("cus-00001").metadata
    redis_client.delete(metadata, metadata + "#timestamp")  # missing
    redis_client.set(f"{layout.prefix}:c_nobody", json.dumps({}))  # unexpected
    redis_client.set(f"{layout.prefix}:c_nobody#timestamp", "5")

    check = check_redis(redis_client, layout, workload.seeds, workload.stream)
    assert not check.ok
    assert check.stale == [usage]
    assert check.missing == [metadata]
    assert check.unexpected == [f"{layout.prefix}:c_nobody"]


def require_worker() -> None:
    """Fail, saying why, when the bench cannot start the real worker (never a weaker subject)."""
    why = worker_unavailable()
    assert why is None, f"the bench cannot start `cache-pipeline worker` (run make install): {why}"


def test_one_small_run_end_to_end(
    redis_server: RedisServer, sqs_server: SqsServer, tmp_path: Path
) -> None:
    """Through the real worker, with latency probes."""
    require_worker()
    settings = Settings(
        endpoint=sqs_server.endpoint,
        redis=RedisTarget("127.0.0.1", redis_server.port),
        run_id=uuid.uuid4().hex[:8],
        log_dir=tmp_path,
        rate=50.0,
        latency_seconds=1.0,
    )
    workload = generate(SMALL, seed=13)
    queues = Queues(sqs_server.endpoint)
    try:
        result = run_subject("worker", settings, workload, queues, 1)
    finally:
        queues.close()
    assert result.error is None, result.error
    assert result.check is not None
    assert result.check.ok, result.check.summary()
    assert result.progress is not None
    assert result.progress.last_count >= workload.script_calls
    assert result.exit_codes == [0]
    assert result.latency is not None
    assert result.latency.seen == result.latency.sent == 50


def test_latency_mode_cells_and_options() -> None:
    sizes = latency_mode.parse_batch_sizes("1,10")
    levels = latency_mode.parse_concurrencies("default,4")
    matrix = latency_mode.cells(["bare", "worker"], sizes, levels)
    assert [(c.subject, c.batch_size, c.concurrency) for c in matrix] == [
        ("bare", 1, None),
        ("worker", 1, None),
        ("worker", 1, 4),
        ("bare", 10, None),
        ("worker", 10, None),
        ("worker", 10, 4),
    ]
    assert matrix[1].apply(Settings("e", RedisTarget("h", 1), "r", Path())).worker_env == {
        "BATCH_SIZE": "1"
    }  # 'default' leaves WORKER_CONCURRENCY to the worker
    assert matrix[2].apply(Settings("e", RedisTarget("h", 1), "r", Path())).worker_env == {
        "BATCH_SIZE": "1",
        "WORKER_CONCURRENCY": "4",
    }
    # Each run's stream: about --cell-seconds at its latency-bound rate, within bounds.
    slow, fast = latency_mode.Cell("bare", 1, None), latency_mode.Cell("worker", 10, 16)
    assert slow.messages(10, 5000, 10, 0.25) == 1000  # the floor: the bound is ~16/s
    assert fast.messages(10, 5000, 10, 0.25) == 5000  # the cap: the bound is ~5,000/s
    assert slow.messages(10, 300, 10, 0.25) == 300  # never more than -n
    assert latency_mode.Cell("worker", 10, None).messages(0, 4321, 10, 0.25) == 4321
    for bad in ("0", "11", "x", ""):
        with pytest.raises(click.BadParameter):
            latency_mode.parse_batch_sizes(bad)
    for bad in ("0", "65", "many", ""):
        with pytest.raises(click.BadParameter):
            latency_mode.parse_concurrencies(bad)


def test_latency_mode_end_to_end(
    redis_server: RedisServer, sqs_server: SqsServer, tmp_path: Path
) -> None:
    """`python -m bench --latency-mode`, narrowed and small: proxies, self-check, matrix, report."""
    require_worker()
    subjects = "bare,worker"
    figures = tmp_path / "figures.json"
    env = {
        **os.environ,
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
    }
    reply = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--latency-mode",
            "-n",
            "120",
            "--subjects",
            subjects,
            "--batch-sizes",
            "10",
            "--concurrencies",
            "default",
            "--sqs-delay-ms",
            "2",
            "--latency-seconds",
            "1",
            "--rate",
            "20",
            "--json",
            str(figures),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=240,
        check=False,
    )
    assert reply.returncode == 0, reply.stdout[-3000:] + reply.stderr[-3000:]
    assert "self-check Redis PING" in reply.stdout
    assert "target BATCH_SIZE=10" in reply.stdout
    report = json.loads(figures.read_text())
    assert report["mode"] == "latency"
    assert [c["what"] for c in report["self_check"]] == ["Redis PING", "SQS GetQueueAttributes"]
    assert all(c["ok"] for c in report["self_check"])  # the proxies added the delays
    assert report["proxies"]["sqs"]["connections"] > 0
    assert report["proxies"]["redis"]["connections"] > 0
    results = report["results"]
    assert [r["subject"] for r in results] == subjects.split(",")
    assert all(r["ok"] and r["batch_size"] == 10 for r in results)
    for result in results:
        if result["subject"] != "bare":
            assert result["check"]["ok"]
        if result["subject"] == "worker":
            assert result["concurrency_default"]
            assert result["latency"]["seen"] == result["latency"]["sent"] == 20


def test_sqs_ceiling_empties_the_queue(sqs_server: SqsServer) -> None:
    queues = Queues(sqs_server.endpoint)
    try:
        line = sqs_ceiling.measure(sqs_server.endpoint, queues, 2, 10, 60)
    finally:
        queues.close()
    assert "receive 10, 2 consumers: 60 messages in" in line
