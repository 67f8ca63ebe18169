"""One benchmark subject, end to end: seed, fill a fresh queue, consume, measure, check.

Subjects:

* ``bare``       the bare boto3 loop with plain SETs: the ceiling.
* ``bare-lua``   the bare loop with the store's atomic Lua writes (model-checked),
                 then the latency probes (a reference for the worker's).
* ``worker``     one ``cache-pipeline worker`` process, then the latency probes.
* ``concurrent`` the most concurrent settings: several worker processes, each
                 with WORKER_CONCURRENCY consumers; must end with zero stale values.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench import profile
from bench.check import Check, check_redis, seed
from bench.consumers import Consumer, start_bare, start_worker
from bench.latency import LatencyResult, ProbeWatcher, measure_latency
from bench.monitor import (
    SCRIPT_COMMANDS,
    CpuSource,
    MachineCpu,
    ProcessWatch,
    Progress,
    StalledError,
    WriteCounter,
    watch,
)
from bench.services import Queues, RedisTarget, on_endpoint
from bench.workload import Workload, bodies
from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.keys import KeyLayout

SUBJECTS = ("bare", "bare-lua", "worker", "concurrent")
LATENCY_SUBJECTS = ("bare-lua", "worker")  # the ones that write probes as the contract says
LOCALSTACK_PIDFILE = Path.home() / ".cache" / "localstack-host" / "pid"
LOCALSTACK_ENDPOINTS = ("http://127.0.0.1:4566", "http://localhost:4566")


@dataclass
class Settings:
    """What every subject of a run shares."""

    endpoint: str
    redis: RedisTarget
    run_id: str
    log_dir: Path
    rate: float = 200.0
    latency_seconds: float = 15.0
    concurrency: int = 4
    processes: int = 2
    worker_env: dict[str, str] = field(default_factory=dict)
    profile_dir: Path | None = None  # py-spy profiles of the steady phase, when set
    # Latency mode: what the subjects (consumers and latency probes) talk to, when it is
    # not ``endpoint``/``redis`` (those stay direct for filling, counting and checking).
    subject_endpoint: str | None = None
    subject_redis: RedisTarget | None = None
    bare_receive: int = 10  # MaxNumberOfMessages of the bare loop
    latency_senders: int = 2  # threads sending the latency probes, one call at a time each
    # Skip the latency probes when the steady rate is below the offered rate (they would
    # only queue, and p99 would measure the backlog, not the latency).
    latency_within_capacity: bool = False
    proxy_pids: tuple[int, ...] = ()  # delay proxies, whose CPU the run reports

    @property
    def consumer_endpoint(self) -> str:
        return self.subject_endpoint or self.endpoint

    @property
    def consumer_redis(self) -> RedisTarget:
        return self.subject_redis or self.redis


@dataclass
class Result:
    """Figures of one subject in one round."""

    subject: str
    round: int
    messages: int
    cell: dict[str, Any] = field(default_factory=dict)  # latency mode: BATCH_SIZE, ...
    progress: Progress | None = None
    peak_rss: int = 0
    high_water_mark: int = 0
    check: Check | None = None
    latency: LatencyResult | None = None
    latency_skipped: str | None = None  # why no latency was measured, when it was asked for
    processed_metric: float | None = None  # persistent_cache_messages_processed_total
    write_batches: float | None = None  # persistent_cache_write_duration_seconds_count
    exit_codes: list[int | None] = field(default_factory=list)
    error: str | None = None
    profile: Path | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and (self.check is None or self.check.ok)

    def as_dict(self) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "subject": self.subject,
            "round": self.round,
            "messages": self.messages,
            **self.cell,
            "ok": self.ok,
            "error": self.error,
            "peak_rss_mb": round(max(self.peak_rss, self.high_water_mark) / 2**20, 1),
            "check": self.check.as_dict() if self.check else None,
            "latency": self.latency.as_dict() if self.latency else None,
            "latency_skipped": self.latency_skipped,
            "processed_metric": self.processed_metric,
            "write_batches": self.write_batches,
            "messages_per_batch": round(self.processed_metric / self.write_batches, 2)
            if self.processed_metric and self.write_batches
            else None,
            "exit_codes": self.exit_codes,
            "profile": str(self.profile) if self.profile else None,
        }
        if self.progress:
            p = self.progress
            figures |= {
                "steady_msgs_per_s": round(p.steady_rate, 1),
                "with_startup_msgs_per_s": round(p.startup_rate, 1),
                "steady_seconds": round(p.last_time - p.first_time, 2),
                "startup_seconds": round(p.first_time - p.started, 2),
                "cpu_s_per_1000": {g: round(p.cpu_per_1000(g), 3) for g in p.last_cpu},
                "cores_busy": {g: round(p.cpu_share(g), 2) for g in p.last_cpu},
            }
        return figures


def run_subject(
    subject: str,
    settings: Settings,
    workload: Workload,
    queues: Queues,
    round_no: int,
    *,
    tag: str = "",
    cell: dict[str, Any] | None = None,
) -> Result:
    """Run one subject on its own prefix and queue; never raises for a failed run.

    ``tag`` tells apart the prefixes (and queues) of several runs of one subject in a
    round; ``cell`` is copied into the result (the latency matrix's settings).
    """
    prefix = f"bench-{settings.run_id}-{subject}{'-' + tag if tag else ''}-{round_no}"
    client = settings.redis.client()
    result = Result(subject, round_no, len(workload.stream), dict(cell or {}))
    try:
        _run(subject, settings, workload, queues, prefix, client, result)
    except (StalledError, RuntimeError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        _drop_prefix(client, KeyLayout(prefix))
        client.close()
    return result


def _run(
    subject: str,
    settings: Settings,
    workload: Workload,
    queues: Queues,
    prefix: str,
    client: Any,
    result: Result,
) -> None:
    layout = KeyLayout(prefix)
    seed(client, layout, workload.seeds)
    queue_url = queues.create(prefix)
    queues.fill(queue_url, bodies(workload.stream, prefix))
    bare = subject.startswith("bare")
    counter = WriteCounter(client, ("set",) if subject == "bare" else SCRIPT_COMMANDS)
    started = time.monotonic()
    probes_count = _probes(settings) if subject in LATENCY_SUBJECTS else 0
    consumers = _start(subject, settings, queue_url, prefix, len(workload.stream) + probes_count)
    profiler = Profiler(settings.profile_dir, prefix, consumers[0].pid)
    try:
        group = ProcessWatch(*(c.pid for c in consumers))
        result.progress = watch(
            counter,
            group,
            target=workload.script_calls,
            started=started,
            others=_others(settings),
            on_first_write=profiler.start,
        )
        result.profile = profiler.stop()
        queues.wait_empty(queue_url)  # every message deleted, not only written
        if not bare:  # the stream's batches, before the probes (mostly one per receive)
            result.processed_metric, result.write_batches = _worker_counts(consumers)
        probes: list[dict[str, Any]] = []
        if subject in LATENCY_SUBJECTS and settings.latency_seconds > 0:
            steady = result.progress.steady_rate
            if settings.latency_within_capacity and steady < settings.rate:
                result.latency_skipped = (
                    f"steady {steady:.0f}/s is below the offered {settings.rate:g}/s"
                )
            else:
                result.latency, probes = _latency(settings, workload, queue_url, layout, group)
        group.sample_rss()
        result.peak_rss, result.high_water_mark = group.peak_rss, group.high_water_mark()
    except StalledError as exc:
        raise StalledError(f"{exc}\n{consumers[0].name} log:\n{consumers[0].tail()}") from None
    finally:
        profiler.stop()
        result.exit_codes = [c.stop() for c in consumers]
    if subject != "bare":
        policy = CacheUpdatePolicy(
            settings.worker_env.get("CACHE_UPDATE_POLICY", CacheUpdatePolicy.UPDATE_IF_EXISTS)
        )
        stream = [*workload.stream, *probes]
        result.check = check_redis(client, layout, workload.seeds, stream, policy)


class Profiler:
    """py-spy on one consumer from its first write to its last, when a directory is set."""

    def __init__(self, directory: Path | None, name: str, pid: int) -> None:
        self.output = directory / f"{name}.txt" if directory else None
        self.pid = pid
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.output is not None:
            self.process = profile.start(self.pid, self.output)

    def stop(self) -> Path | None:
        """Stop sampling; the profile's path once written."""
        if self.process is None:
            return None
        profile.stop(self.process)
        self.process = None
        return self.output


def _start(
    subject: str, settings: Settings, queue_url: str, prefix: str, expect: int
) -> list[Consumer]:
    endpoint = settings.consumer_endpoint
    common: dict[str, Any] = {
        "log_dir": settings.log_dir,
        "endpoint": endpoint,
        "queue_url": on_endpoint(queue_url, endpoint),
        "redis_host": settings.consumer_redis.host,
        "redis_port": settings.consumer_redis.port,
        "prefix": prefix,
    }
    if subject.startswith("bare"):
        writes = "set" if subject == "bare" else "lua"
        return [
            start_bare(
                f"{prefix}",
                expect=expect,
                writes=writes,
                receive=settings.bare_receive,
                **common,
            )
        ]
    if subject == "worker":
        return [start_worker(prefix, extra_env=settings.worker_env, **common)]
    env = {**settings.worker_env, "WORKER_CONCURRENCY": str(settings.concurrency)}
    return [
        start_worker(f"{prefix}-{i}", extra_env=env, **common) for i in range(settings.processes)
    ]


def _latency(
    settings: Settings,
    workload: Workload,
    queue_url: str,
    layout: KeyLayout,
    group: ProcessWatch,
) -> tuple[LatencyResult, list[dict[str, Any]]]:
    watcher_client = settings.redis.client()
    watcher = ProbeWatcher(watcher_client, layout).start()
    try:
        endpoint = settings.consumer_endpoint  # the probes' sends cross the SQS delay too
        return measure_latency(
            endpoint=endpoint,
            queue_url=on_endpoint(queue_url, endpoint),
            workload=workload,
            watcher=watcher,
            layout=layout,
            environment=layout.prefix,
            rate=settings.rate,
            count=_probes(settings),
            on_tick=group.sample_rss,
            senders=settings.latency_senders,
        )
    finally:
        watcher.close()
        watcher_client.close()


def _probes(settings: Settings) -> int:
    return round(settings.rate * settings.latency_seconds)


def _others(settings: Settings) -> dict[str, CpuSource]:
    """The other processes on the machine whose CPU the run reports."""
    others: dict[str, CpuSource] = {
        "bench": ProcessWatch(os.getpid(), children=False),
        "machine": MachineCpu(),
    }
    if settings.endpoint.rstrip("/") in LOCALSTACK_ENDPOINTS:
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            others["sqs"] = ProcessWatch(int(LOCALSTACK_PIDFILE.read_text().strip()))
    redis_pid = _redis_pid(settings.redis)
    if redis_pid:
        others["redis"] = ProcessWatch(redis_pid)
    if settings.proxy_pids:
        others["proxies"] = ProcessWatch(*settings.proxy_pids, children=False)
    return others


def _redis_pid(target: RedisTarget) -> int | None:
    if target.host not in ("127.0.0.1", "localhost"):
        return None
    client = target.client()
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def _worker_counts(consumers: list[Consumer]) -> tuple[float | None, float | None]:
    """Messages processed and Redis round trips (write batches), summed over /metrics."""
    processed = batches = 0.0
    for consumer in consumers:
        try:
            text = httpx.get(f"http://127.0.0.1:{consumer.port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None, None
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "persistent_cache_messages_processed_total":
                    processed += sample.value
                elif sample.name == "persistent_cache_write_duration_seconds_count":
                    batches += sample.value
    return processed, batches


def _drop_prefix(client: Any, layout: KeyLayout) -> None:
    batch: list[str] = []
    for key in client.scan_iter(match=layout.environment_pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def dump(results: list[Result], header: dict[str, Any], path: Path) -> None:
    """Write the machine-readable report."""
    path.write_text(json.dumps({**header, "results": [r.as_dict() for r in results]}, indent=2))
