"""``python -m bench``: run the benchmark subjects and print one block of figures.

Exit code 0 when every run ended with the exact contract model's state, 1 when a run
failed or a state check found a difference, 2 when a service is missing, 3 when
a worker subject was asked for but ``cache-pipeline worker`` does not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import click

from bench import latency_mode
from bench.consumers import bytecode_warning, worker_available
from bench.profile import summarize
from bench.report import render
from bench.run import SUBJECTS, Result, Settings, dump, run_subject
from bench.services import Queues, RedisTarget, ServiceError, redis_target, sqs_endpoint
from bench.workload import SHAPES, Shape, Workload, generate
from cache_pipeline.config import CacheUpdatePolicy


def _subjects(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in SUBJECTS]
    if unknown:
        raise click.BadParameter(
            f"unknown subject {unknown[0]!r}; choose from {', '.join(SUBJECTS)}"
        )
    return names


def _version() -> str:
    """The commit under test, marked when the worker's code has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "tasks", "cache_pipeline", "api"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+uncommitted" if dirty else head


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _warn_bytecode() -> None:
    warning = bytecode_warning()
    if warning:
        click.echo(warning, err=True)


def _run_all(settings: Settings, workload: Workload, names: list[str], rounds: int) -> list[Result]:
    results: list[Result] = []
    queues = Queues(settings.endpoint)
    try:
        for round_no in range(1, rounds + 1):
            for name in names:
                click.echo(f"bench: round {round_no}, {name} (load {_load()}) ...")
                result = run_subject(name, settings, workload, queues, round_no)
                results.append(result)
                click.echo(f"bench: {json.dumps(result.as_dict())}")
    finally:
        queues.close()
    return results


@click.command()
@click.option(
    "-n",
    "--messages",
    type=click.IntRange(min=10),
    envvar="BENCH_MESSAGES",
    help="stream messages per subject  [default: 20000; in --latency-mode at most"
    f" {latency_mode.MESSAGES} per run, see --cell-seconds]",
)
@click.option(
    "--subjects",
    default="bare,worker",
    show_default=True,
    envvar="BENCH_SUBJECTS",
    help=f"comma-separated, from: {', '.join(SUBJECTS)} ({', '.join(latency_mode.SUBJECTS)}"
    " in --latency-mode)",
)
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--rate",
    type=float,
    help=f"latency probes per second  [default: 200; {latency_mode.RATE:g} in --latency-mode]",
)
@click.option(
    "--latency-seconds",
    type=float,
    help="seconds of latency probes, 0 skips latency"
    f"  [default: 15; {latency_mode.LATENCY_SECONDS:g} in --latency-mode]",
)
@click.option(
    "--concurrency",
    type=int,
    default=4,
    show_default=True,
    help="WORKER_CONCURRENCY of 'concurrent'",
)
@click.option("--processes", type=int, default=2, show_default=True, help="workers of 'concurrent'")
@click.option("--seed", type=int, default=7, show_default=True, help="workload random seed")
@click.option(
    "--policy",
    type=click.Choice([p.value for p in CacheUpdatePolicy]),
    default=CacheUpdatePolicy.UPDATE_IF_EXISTS.value,
    show_default=True,
    help="CACHE_UPDATE_POLICY of the worker subjects (the state check follows it)",
)
@click.option(
    "--shape",
    type=click.Choice(SHAPES),
    default="steady",
    show_default=True,
    help="steady: independent versions; reorder: invalidations, 400-place reorders, duplicates",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write figures here",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="consumer logs (default: a temp dir)",
)
@click.option(
    "--profile",
    "profile_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="record py-spy profiles of each consumer's steady phase here (slows it a little)",
)
@click.option(
    "--latency-mode",
    "latency",
    is_flag=True,
    help="put delay proxies in front of SQS and Redis and run the matrix of"
    " --batch-sizes x --concurrencies (docs/benchmarks.md, 'Under production latency')",
)
@click.option(
    "--sqs-delay-ms",
    type=click.FloatRange(min=0),
    default=latency_mode.SQS_DELAY_MS,
    show_default=True,
    help="latency mode: one-way delay added to SQS, each direction",
)
@click.option(
    "--redis-delay-ms",
    type=click.FloatRange(min=0),
    default=latency_mode.REDIS_DELAY_MS,
    show_default=True,
    help="latency mode: one-way delay added to Redis, each direction",
)
@click.option(
    "--batch-sizes",
    default=latency_mode.BATCH_SIZES,
    show_default=True,
    help="latency mode: BATCH_SIZE values (the bare loop's messages per receive)",
)
@click.option(
    "--cell-seconds",
    type=click.FloatRange(min=0),
    default=latency_mode.CELL_SECONDS,
    show_default=True,
    help="latency mode: size each run's stream for about this many seconds at its"
    f" latency-bound rate, between {latency_mode.FLOOR_MESSAGES} and -n messages (0: -n)",
)
@click.option(
    "--concurrencies",
    default=latency_mode.CONCURRENCIES,
    show_default=True,
    help="latency mode: WORKER_CONCURRENCY values; 'default' leaves it unset",
)
def main(
    messages: int | None,
    subjects: str,
    rounds: int,
    rate: float | None,
    latency_seconds: float | None,
    concurrency: int,
    processes: int,
    seed: int,
    policy: str,
    shape: Shape,
    json_path: Path | None,
    log_dir: Path | None,
    profile_dir: Path | None,
    latency: bool,
    sqs_delay_ms: float,
    redis_delay_ms: float,
    batch_sizes: str,
    cell_seconds: float,
    concurrencies: str,
) -> None:
    """End-to-end benchmark of the worker against SQS_ENDPOINT_URL and a real Redis."""
    if latency:
        run_latency_mode(
            messages=messages or latency_mode.MESSAGES,
            subjects=subjects,
            rounds=rounds,
            rate=latency_mode.RATE if rate is None else rate,
            latency_seconds=latency_mode.LATENCY_SECONDS
            if latency_seconds is None
            else latency_seconds,
            seed=seed,
            json_path=json_path,
            log_dir=log_dir,
            sqs_delay_ms=sqs_delay_ms,
            redis_delay_ms=redis_delay_ms,
            sizes=latency_mode.parse_batch_sizes(batch_sizes),
            levels=latency_mode.parse_concurrencies(concurrencies),
            cell_seconds=cell_seconds,
        )
        return
    messages = messages or 20000
    rate = 200.0 if rate is None else rate
    latency_seconds = 15.0 if latency_seconds is None else latency_seconds
    names = _subjects(subjects)
    if any(n in ("worker", "concurrent") for n in names) and not worker_available():
        click.echo(
            "bench: `cache-pipeline worker` does not exist yet; run --subjects bare,bare-lua",
            err=True,
        )
        sys.exit(3)
    header = {
        "version": _version(),
        "messages": messages,
        "cores": os.cpu_count(),
        "load_start": _load(),
        "subjects": names,
    }
    click.echo(
        f"bench: code {header['version']}, load average at start {header['load_start']}"
        f" on {header['cores']} cores"
    )
    _warn_bytecode()
    workload = generate(messages, seed=seed, shape=shape)
    click.echo(
        f"bench: {shape} workload {workload.counts}, {len(workload.seeds)} seeded scopes, {policy}"
    )
    logs = log_dir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    if profile_dir:
        profile_dir.mkdir(parents=True, exist_ok=True)
    try:
        with sqs_endpoint() as endpoint, redis_target() as target:
            header["endpoint"] = endpoint
            settings = Settings(
                endpoint=endpoint,
                redis=target,
                run_id=uuid.uuid4().hex[:8],
                log_dir=logs,
                rate=rate,
                latency_seconds=latency_seconds,
                concurrency=concurrency,
                processes=processes,
                profile_dir=profile_dir,
                worker_env={"CACHE_UPDATE_POLICY": policy},
            )
            results = _run_all(settings, workload, names, rounds)
    except ServiceError as exc:
        click.echo(f"bench: {exc}", err=True)
        sys.exit(2)
    header["load_end"] = _load()
    header["logs"] = str(logs)
    click.echo(render(results, header))
    click.echo(f"consumer logs: {logs}")
    for result in results:
        if result.profile and result.profile.exists():
            click.echo(f"\nprofile of {result.subject} round {result.round} ({result.profile}):")
            click.echo(summarize(result.profile).render())
    if json_path:
        dump(results, header, json_path)
    sys.exit(0 if results and all(r.ok for r in results) else 1)


def _names(value: str, allowed: tuple[str, ...]) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown subject {(unknown or [''])[0]!r}; choose from {', '.join(allowed)}"
        )
    return names


def run_latency_mode(
    *,
    messages: int,
    subjects: str,
    rounds: int,
    rate: float,
    latency_seconds: float,
    seed: int,
    json_path: Path | None,
    log_dir: Path | None,
    sqs_delay_ms: float,
    redis_delay_ms: float,
    sizes: list[int],
    levels: list[int | None],
    cell_seconds: float,
) -> None:
    """The matrix under production latency; same exit codes as the loopback run."""
    names = _names(subjects, latency_mode.SUBJECTS)
    if "worker" in names and not worker_available():
        click.echo("bench: `cache-pipeline worker` does not exist yet", err=True)
        sys.exit(3)
    matrix = latency_mode.cells(names, sizes, levels)
    streams = {
        cell: cell.messages(cell_seconds, messages, sqs_delay_ms, redis_delay_ms) for cell in matrix
    }
    header: dict[str, Any] = {
        "mode": "latency",
        "version": _version(),
        "messages": messages,
        "cell_seconds": cell_seconds,
        "cores": os.cpu_count(),
        "load_start": _load(),
        "subjects": names,
        "sqs_delay_ms": sqs_delay_ms,
        "redis_delay_ms": redis_delay_ms,
        "rate": rate,
        "probes": round(rate * latency_seconds),
        "worker_default_concurrency": {
            str(size): latency_mode.default_concurrency(size) for size in sizes
        },
    }
    click.echo(
        f"bench: code {header['version']}, load average at start {header['load_start']}"
        f" on {header['cores']} cores; latency mode, {len(matrix)} runs per round,"
        f" {sum(streams.values())} messages in all"
    )
    _warn_bytecode()
    logs = log_dir or Path(tempfile.mkdtemp(prefix="bench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    checks: list[latency_mode.RoundTrip] = []
    results: list[Result] = []
    try:
        with (
            sqs_endpoint() as endpoint,
            redis_target() as target,
            latency_mode.delay_proxies(
                endpoint, target, sqs_delay_ms, redis_delay_ms, logs
            ) as proxies,
        ):
            header["endpoint"] = endpoint
            settings = Settings(
                endpoint=endpoint,
                redis=target,
                run_id=uuid.uuid4().hex[:8],
                log_dir=logs,
                rate=rate,
                latency_seconds=latency_seconds,
                subject_endpoint=proxies.sqs.endpoint,
                subject_redis=RedisTarget(*proxies.redis.address),
                proxy_pids=proxies.pids,
                latency_senders=latency_mode.probe_senders(rate, sqs_delay_ms),
                latency_within_capacity=True,
            )
            queues = Queues(endpoint)
            try:
                checks = latency_mode.self_check(settings, proxies, queues)
                for check in checks:
                    click.echo(f"bench: {check.line()}")
                results = latency_mode.run_matrix(settings, streams, seed, rounds, queues, _load)
            finally:
                queues.close()
    except ServiceError as exc:
        click.echo(f"bench: {exc}", err=True)
        sys.exit(2)
    header["load_end"] = _load()
    header["logs"] = str(logs)
    header["self_check"] = [c.as_dict() for c in checks]
    header["proxies"] = proxies.counters
    click.echo(latency_mode.render(results, header, checks, proxies))
    click.echo(f"consumer and proxy logs: {logs}")
    if json_path:
        dump(results, header, json_path)
    ok = results and all(r.ok for r in results) and checks and all(c.ok for c in checks)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
