"""Latency mode (``make bench BENCH_ARGS="--latency-mode"``): the subjects under production latency.

On loopback a ReceiveMessage or a Redis round trip costs microseconds; in
production a ReceiveMessage costs 10-30 ms and a Redis round trip 0.3-1 ms, so
a consumer that waits on one call at a time is bound by latency, not CPU. Here
a delay proxy (``bench.delay_proxy``, each its own process) sits in front of
the SQS endpoint and one in front of Redis, adding ``--sqs-delay-ms`` (10) and
``--redis-delay-ms`` (0.25) to every chunk in each direction. The consumers
and the latency probes' sends go through the proxies; the bench's own filling,
write counting, keyspace watching and state check stay direct, so they neither
slow down nor distort what is measured.

Before the matrix a self-check prints the round trips direct and through each
proxy (a Redis PING and an SQS GetQueueAttributes, interleaved so they share
the machine's noise): through the proxy each must cost at least 2 x the delay
more. Then, per round, for each BATCH_SIZE: the bare loop (receive, one Redis
pipeline, DeleteMessageBatch, one call at a time), then the worker at each
WORKER_CONCURRENCY (``default``: the variable unset, the worker's own default).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from bench.delay_proxy import ProxyProcess
from bench.run import Result, Settings, run_subject
from bench.services import Queues, RedisTarget, on_endpoint, sqs_client
from bench.workload import Workload, generate

SQS_DELAY_MS = 10.0
REDIS_DELAY_MS = 0.25
BATCH_SIZES = "1,10"
CONCURRENCIES = "default,4,8,16"
MESSAGES = 5000  # at most, per run
CELL_SECONDS = 10.0  # a run gets about this much work at its latency-bound rate
FLOOR_MESSAGES = 1000  # at least, per run (unless -n is smaller)
SERVICE_SECONDS = 0.01  # LocalStack's own time per call, for the estimate only
RATE = 100.0  # probes per second: the per-instance rate Stigg publishes
LATENCY_SECONDS = 10.0
SUBJECTS = ("bare", "bare-lua", "worker")
NEAR_CAPACITY = 1.25  # a steady rate under this x the offered rate: latency marked '*'
CHECK_PINGS = 400
CHECK_SQS_CALLS = 30
CHECK_TOLERANCE = 0.9  # the added round trip must be at least this share of 2 x the delay

# Issue 14, item 2: one worker process with nothing else set, under the default delays.
TARGETS = {
    1: {"rate": 300.0, "cpu": 2.0, "rss": 100.0},
    10: {"rate": 1500.0, "cpu": 0.4, "rss": 100.0},
}


def probe_senders(rate: float, sqs_delay_ms: float) -> int:
    """Sender threads enough to offer ``rate`` when each send waits one delayed round trip
    plus up to 150 ms (LocalStack's own time and the bench's CPU on a busy machine)."""
    return max(2, math.ceil(rate * (2 * sqs_delay_ms / 1000 + 0.15)) + 2)


def default_concurrency(batch_size: int) -> int:
    """The worker's consumers when WORKER_CONCURRENCY is unset (its settings model)."""
    from cache_pipeline.config import Settings as WorkerSettings

    # Built without reading the environment: WORKER_CONCURRENCY unset is what "default" means.
    return WorkerSettings.model_construct(batch_size=batch_size, worker_concurrency=None).consumers


@dataclass(frozen=True)
class Cell:
    """One point of the matrix."""

    subject: str
    batch_size: int
    concurrency: int | None  # None: WORKER_CONCURRENCY unset

    @property
    def tag(self) -> str:
        return f"b{self.batch_size}" + (
            "" if self.subject != "worker" else f"-c{self.concurrency or 'd'}"
        )

    def as_dict(self) -> dict[str, Any]:
        figures: dict[str, Any] = {"batch_size": self.batch_size}
        if self.subject == "worker":
            figures["concurrency"] = self.concurrency or default_concurrency(self.batch_size)
            figures["concurrency_default"] = self.concurrency is None
        return figures

    def bound(self, sqs_delay_ms: float, redis_delay_ms: float) -> float:
        """Messages per second if waiting were the only cost: each worker consumer does one
        receive and one Redis write per batch (deletes overlap the next receive); the bare
        loop does a receive, a write and a delete, one after the other."""
        sqs = 2 * sqs_delay_ms / 1000 + SERVICE_SECONDS
        redis = 2 * redis_delay_ms / 1000
        if self.subject == "worker":
            consumers = self.concurrency or default_concurrency(self.batch_size)
            return self.batch_size * consumers / (sqs + redis)
        return self.batch_size / (2 * sqs + redis)

    def messages(
        self, seconds: float, most: int, sqs_delay_ms: float, redis_delay_ms: float
    ) -> int:
        """Stream size of this run: ``seconds`` at the latency-bound rate, between
        FLOOR_MESSAGES and ``most`` (``most`` when ``seconds`` is 0)."""
        if seconds <= 0:
            return most
        wanted = round(self.bound(sqs_delay_ms, redis_delay_ms) * seconds)
        return max(min(FLOOR_MESSAGES, most), min(most, wanted))

    def apply(self, settings: Settings) -> Settings:
        env = {"BATCH_SIZE": str(self.batch_size)}
        if self.concurrency is not None:
            env["WORKER_CONCURRENCY"] = str(self.concurrency)
        return dataclasses.replace(settings, worker_env=env, bare_receive=self.batch_size)


def parse_batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated integers 1..10") from None
    if not sizes or any(not 1 <= s <= 10 for s in sizes):
        raise click.BadParameter(f"{value!r}: comma-separated integers 1..10")
    return sizes


def parse_concurrencies(value: str) -> list[int | None]:
    found: list[int | None] = []
    for item in (v.strip() for v in value.split(",")):
        if item == "default":
            found.append(None)
        elif item.isdigit() and 1 <= int(item) <= 64:
            found.append(int(item))
        elif item:
            raise click.BadParameter(f"{item!r}: 'default' or an integer 1..64")
    if not found:
        raise click.BadParameter("no concurrency given")
    return found


def cells(
    subjects: Sequence[str], sizes: Sequence[int], levels: Sequence[int | None]
) -> list[Cell]:
    """Per BATCH_SIZE: the bare loop(s), then the worker at each concurrency."""
    found = []
    for size in sizes:
        found += [Cell(s, size, None) for s in subjects if s.startswith("bare")]
        if "worker" in subjects:
            found += [Cell("worker", size, level) for level in levels]
    return found


@dataclass
class Proxies:
    sqs: ProxyProcess
    redis: ProxyProcess
    sqs_delay_ms: float
    redis_delay_ms: float
    counters: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pids(self) -> tuple[int, int]:
        return self.sqs.pid, self.redis.pid


@contextmanager
def delay_proxies(
    endpoint: str, redis: RedisTarget, sqs_delay_ms: float, redis_delay_ms: float, log_dir: Path
) -> Iterator[Proxies]:
    """One proxy process in front of the SQS endpoint, one in front of Redis."""
    url = urllib.parse.urlsplit(endpoint)
    if url.hostname is None:
        raise click.ClickException(f"SQS endpoint {endpoint!r} has no host")
    target = (url.hostname, url.port or 80)
    sqs = ProxyProcess("sqs", target, sqs_delay_ms, log_dir / "delay-proxy-sqs.log")
    try:
        redis_proxy = ProxyProcess(
            "redis", (redis.host, redis.port), redis_delay_ms, log_dir / "delay-proxy-redis.log"
        )
    except BaseException:
        sqs.stop()
        raise
    proxies = Proxies(sqs, redis_proxy, sqs_delay_ms, redis_delay_ms)
    try:
        yield proxies
    finally:
        proxies.counters = {"sqs": sqs.stop(), "redis": redis_proxy.stop()}


@dataclass
class RoundTrip:
    """One call timed direct and through its proxy, interleaved; times in ms."""

    what: str
    delay_ms: float
    direct: list[float]
    proxied: list[float]

    @property
    def added_ms(self) -> float:
        return statistics.median(self.proxied) - statistics.median(self.direct)

    @property
    def expected_ms(self) -> float:
        return 2 * self.delay_ms

    @property
    def added_floor_ms(self) -> float:
        """Fastest call through the proxy minus fastest direct call: a busy machine only
        adds time, so the minima show what the proxy adds more steadily than the medians."""
        return min(self.proxied) - min(self.direct)

    @property
    def ok(self) -> bool:
        """At least (nearly) 2 x the delay added; an upper bound is not asserted."""
        return self.added_floor_ms >= CHECK_TOLERANCE * self.expected_ms

    def as_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "direct_p50_ms": round(statistics.median(self.direct), 3),
            "proxied_p50_ms": round(statistics.median(self.proxied), 3),
            "proxied_p99_ms": round(_p99(self.proxied), 3),
            "added_ms": round(self.added_ms, 3),
            "added_floor_ms": round(self.added_floor_ms, 3),
            "expected_ms": self.expected_ms,
            "ok": self.ok,
        }

    def line(self) -> str:
        d = self.as_dict()
        verdict = "ok" if self.ok else "FAILED: less than the delay was added"
        return (
            f"self-check {self.what}: direct p50 {d['direct_p50_ms']} ms, through the proxy "
            f"p50 {d['proxied_p50_ms']} ms (p99 {d['proxied_p99_ms']}): "
            f"+{d['added_ms']} ms (fastest calls: +{d['added_floor_ms']} ms),"
            f" expected +{d['expected_ms']:g} ms: {verdict}"
        )


def _p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def _interleaved(
    direct: Callable[[], object], proxied: Callable[[], object], count: int
) -> tuple[list[float], list[float]]:
    for call in (direct, proxied, direct, proxied):  # warm: connections, caches
        call()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(count):
        for call, found in ((direct, times[0]), (proxied, times[1])):
            start = time.perf_counter()
            call()
            found.append((time.perf_counter() - start) * 1000)
    return times


def self_check(settings: Settings, proxies: Proxies, queues: Queues) -> list[RoundTrip]:
    """A Redis PING and an SQS call, direct and through the proxies."""
    direct_redis = settings.redis.client()
    proxied_redis = settings.consumer_redis.client()
    try:
        direct, proxied = _interleaved(direct_redis.ping, proxied_redis.ping, CHECK_PINGS)
    finally:
        direct_redis.close()
        proxied_redis.close()
    checks = [RoundTrip("Redis PING", proxies.redis_delay_ms, direct, proxied)]
    queue = queues.create(f"bench-{settings.run_id}-selfcheck")
    direct_sqs = sqs_client(settings.endpoint)
    proxied_sqs = sqs_client(settings.consumer_endpoint)
    proxied_queue = on_endpoint(queue, settings.consumer_endpoint)
    try:
        direct, proxied = _interleaved(
            lambda: direct_sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"]),
            lambda: proxied_sqs.get_queue_attributes(
                QueueUrl=proxied_queue, AttributeNames=["All"]
            ),
            CHECK_SQS_CALLS,
        )
    finally:
        direct_sqs.close()
        proxied_sqs.close()
    checks.append(RoundTrip("SQS GetQueueAttributes", proxies.sqs_delay_ms, direct, proxied))
    return checks


def run_matrix(
    settings: Settings,
    sizes: dict[Cell, int],
    seed: int,
    rounds: int,
    queues: Queues,
    load: Callable[[], str],
) -> list[Result]:
    """Every cell in every round, each on a stream of its own size (same seed)."""
    workloads: dict[int, Workload] = {}
    results: list[Result] = []
    for round_no in range(1, rounds + 1):
        for cell, size in sizes.items():
            workload = workloads.get(size) or workloads.setdefault(size, generate(size, seed=seed))
            click.echo(
                f"bench: round {round_no}, {cell.subject} {cell.tag}, {size} messages"
                f" (load {load()}) ..."
            )
            result = run_subject(
                cell.subject,
                cell.apply(settings),
                workload,
                queues,
                round_no,
                tag=cell.tag,
                cell=cell.as_dict(),
            )
            results.append(result)
            click.echo(f"bench: {json.dumps(result.as_dict())}")
    return results


LABELS = {"bare": "bare loop (SET)", "bare-lua": "bare loop (Lua)", "worker": "worker"}


def render(
    results: Sequence[Result],
    header: dict[str, Any],
    checks: Sequence[RoundTrip],
    proxies: Proxies,
) -> str:
    """The figures block of a latency-mode run."""
    lines = [
        "",
        f"== bench {header.get('version', '')}, latency mode: SQS +{proxies.sqs_delay_ms:g} ms and"
        f" Redis +{proxies.redis_delay_ms:g} ms each way,"
        f" {header['cores']} cores, load {header['load_start']} at start,"
        f" {header['load_end']} at end ==",
        *(check.line() for check in checks),
        f"{'subject':<17}{'BATCH':>6}{'CONC':>6}{'round':>6}{'msgs':>6}{'steady/s':>9}"
        f"{'CPU s/1k':>9}{'RSS MB':>7}{'msg/write':>10}{'LS cores':>9}{'others':>7}"
        f"{'p50 ms':>8}{'p99 ms':>8}{'send p50':>9}{'sent/s':>7}  state",
    ]
    lines += [_row(r) for r in results]
    rate = header.get("rate")
    lines.append(
        f"p50/p99: send-to-readable of {header.get('probes', 0)} probes offered at {rate:g}/s "
        "after the steady phase (sends through the SQS proxy; 'send p50': the SendMessage"
        " call alone); 'over': the run's steady rate is below the offered rate, so no latency"
        f" was measured (the probes would only queue); '*': steady rate under {NEAR_CAPACITY:g} x"
        " the offered rate, near capacity, so the probes partly queue. 'LS cores': cores"
        " LocalStack kept busy,"
        " 'others': cores used by other processes of the machine, both over the steady phase"
    )
    lines += _proxy_lines(proxies)
    lines += target_lines(results)
    return "\n".join(lines)


def _concurrency(result: Result) -> str:
    if result.subject != "worker":
        return "-"
    level = str(result.cell.get("concurrency", "?"))
    return f"{level}d" if result.cell.get("concurrency_default") else level


def _row(result: Result) -> str:
    label = LABELS.get(result.subject, result.subject)
    head = (
        f"{label:<17}{result.cell.get('batch_size', '?'):>6}{_concurrency(result):>6}"
        f"{result.round:>6}{result.messages:>6}"
    )
    state = result.check.summary() if result.check else ("written" if result.ok else "")
    if result.error:
        state = f"FAILED: {result.error.splitlines()[0]}"
    p = result.progress
    if p is None:
        dashes = "".join(f"{'-':>{width}}" for width in (9, 9, 7, 10, 9, 7, 8, 8, 9, 7))
        return f"{head}{dashes}  {state}"
    figures = result.as_dict()
    per_write = figures.get("messages_per_batch")
    machine = figures["cores_busy"].get("machine")
    ours = sum(v for k, v in figures["cores_busy"].items() if k != "machine")
    other = f"{max(0.0, machine - ours):.2f}" if machine is not None else "-"
    sqs = figures["cores_busy"].get("sqs")
    localstack = f"{sqs:.2f}" if sqs is not None else "-"
    p50 = p99 = sent = send = "-"
    if result.latency_skipped:
        p99 = "over"
    elif result.latency and result.latency.latencies:
        d = result.latency.as_dict()
        near = "*" if p.steady_rate < NEAR_CAPACITY * result.latency.offered_rate else ""
        p50, p99 = f"{d['p50_ms']:.1f}", f"{d['p99_ms']:.1f}{near}"
        sent, send = f"{d['achieved_rate']:.0f}", f"{d['send_p50_ms']:.1f}"
    return (
        f"{head}{p.steady_rate:>9.0f}{p.cpu_per_1000('subject'):>9.3f}"
        f"{figures['peak_rss_mb']:>7.1f}{per_write if per_write else '-':>10}{localstack:>9}"
        f"{other:>7}{p50:>8}{p99:>8}{send:>9}{sent:>7}  {state}"
    )


def _proxy_lines(proxies: Proxies) -> list[str]:
    lines = []
    for name, counters in proxies.counters.items():
        if not counters:
            continue
        lines.append(
            f"proxy {name}: {counters.get('connections')} connections, "
            f"{counters.get('chunks_up')} chunks up / {counters.get('chunks_down')} down, "
            f"worst lateness beyond the delay {counters.get('max_late_ms')} ms, "
            f"{counters.get('late_over_1ms')} chunks more than 1 ms late"
        )
    return lines


def _defaults(results: Sequence[Result], batch_size: int) -> list[Result]:
    return [
        r
        for r in results
        if r.subject == "worker"
        and r.cell.get("batch_size") == batch_size
        and r.cell.get("concurrency_default")
        and r.progress is not None
        and r.error is None
    ]


def target_lines(results: Sequence[Result]) -> list[str]:
    """Issue 14 item 2: the worker with its defaults (only BATCH_SIZE set) under the delays."""
    lines = []
    for size, target in TARGETS.items():
        runs = _defaults(results, size)
        if not runs:
            lines.append(f"targets BATCH_SIZE={size}: no run with WORKER_CONCURRENCY unset")
            continue
        rate = statistics.median(r.progress.steady_rate for r in runs if r.progress)
        cpu = statistics.median(r.progress.cpu_per_1000("subject") for r in runs if r.progress)
        rss = max(r.as_dict()["peak_rss_mb"] for r in runs)
        equal = all(r.check is not None and r.check.ok for r in runs)
        for name, value, op, goal in (
            ("steady msg/s (median)", rate, ">=", target["rate"]),
            ("CPU s/1k (median)", cpu, "<=", target["cpu"]),
            ("peak RSS MB (max)", rss, "<=", target["rss"]),
        ):
            met = value >= goal if op == ">=" else value <= goal
            lines.append(
                f"target BATCH_SIZE={size}, defaults: {name:<22}{value:>9.3f}  {op} {goal:g}: "
                f"{'met' if met else 'MISSED'}"
            )
        lines.append(
            f"target BATCH_SIZE={size}, defaults: final state equal to the model: "
            f"{'met' if equal else 'MISSED'}"
        )
    for size in sorted({int(r.cell.get("batch_size", 0)) for r in results}):
        bare = [
            r.progress.steady_rate
            for r in results
            if r.subject == "bare" and r.cell.get("batch_size") == size and r.progress
        ]
        runs = _defaults(results, size)
        if bare and runs:
            worker = statistics.median(r.progress.steady_rate for r in runs if r.progress)
            lines.append(
                f"ratio worker (defaults) / bare loop (SET) at BATCH_SIZE={size} under latency: "
                f"{worker / statistics.median(bare):.2f}"
            )
    return lines
