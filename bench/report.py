"""The figures block printed at the end of a run, and the targets it is judged by."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench.run import Result

TARGET_RATIO = 1.0
TARGET_CPU_PER_1000 = 0.4
TARGET_RSS_MB = 100.0
TARGET_P99_MS = 100.0
LABELS = {
    "bare": "bare loop (SET)",
    "bare-lua": "bare loop (Lua)",
    "worker": "worker",
    "concurrent": "worker, concurrent",
}


def ratios(results: Sequence[Result], base: str = "bare") -> list[float]:
    """Worker steady rate / ``base`` steady rate, per round that has both."""
    found = []
    for round_no in sorted({r.round for r in results}):
        rates = {
            r.subject: r.progress.steady_rate
            for r in results
            if r.round == round_no and r.progress and r.error is None
        }
        if rates.get(base) and "worker" in rates:
            found.append(rates["worker"] / rates[base])
    return found


def render(results: Sequence[Result], header: dict[str, Any]) -> str:
    """One block of figures: a row per subject and round, then the targets."""
    lines = [
        "",
        f"== bench {header.get('version', '')}: {header['messages']} messages, BATCH_SIZE=10, "
        f"{header['cores']} cores, "
        f"load {header['load_start']} at start, {header['load_end']} at end ==",
        f"{'subject':<20}{'round':>5}{'steady/s':>10}{'w/ start/s':>11}{'CPU s/1k':>10}"
        f"{'sqs s/1k':>10}{'redis s/1k':>11}{'RSS MB':>8}{'other cores':>12}  state",
    ]
    lines += [_row(r) for r in results]
    lines += _latency_lines(results)
    lines += _target_lines(results)
    return "\n".join(lines)


def _row(result: Result) -> str:
    label = LABELS.get(result.subject, result.subject)
    state = result.check.summary() if result.check else ("written" if result.ok else "")
    if result.error:
        state = f"FAILED: {result.error.splitlines()[0]}"
    p = result.progress
    if p is None:
        dashes = "".join(f"{'-':>{width}}" for width in (10, 11, 10, 10, 11, 8, 12))
        return f"{label:<20}{result.round:>5}{dashes}  {state}"
    rss = max(result.peak_rss, result.high_water_mark) / 2**20
    return (
        f"{label:<20}{result.round:>5}{p.steady_rate:>10.0f}{p.startup_rate:>11.0f}"
        f"{p.cpu_per_1000('subject'):>10.3f}{_cpu(p, 'sqs'):>10}{_cpu(p, 'redis'):>11}"
        f"{rss:>8.1f}{_other_cores(p):>12}  {state}"
    )


def _other_cores(progress: Any) -> str:
    """Cores kept busy by processes outside the run (other users of the machine)."""
    if "machine" not in progress.last_cpu:
        return "-"
    ours = sum(progress.cpu_share(g) for g in progress.last_cpu if g != "machine")
    return f"{max(0.0, progress.cpu_share('machine') - ours):.2f}"


def _cpu(progress: Any, group: str) -> str:
    return f"{progress.cpu_per_1000(group):.3f}" if group in progress.last_cpu else "-"


def _latency_lines(results: Sequence[Result]) -> list[str]:
    lines = []
    for r in results:
        if r.latency is None:
            continue
        d = r.latency.as_dict()
        lines.append(
            f"latency {LABELS.get(r.subject, r.subject)}, round {r.round}: "
            f"{d['sent']} probes offered at {d['offered_rate']:.0f}/s "
            f"(sent at {d['achieved_rate']:.0f}/s), {d['seen']} seen: p50 {d['p50_ms']} ms, "
            f"p90 {d['p90_ms']} ms, p99 {d['p99_ms']} ms, max {d['max_ms']} ms"
        )
    return lines


def _target_lines(results: Sequence[Result]) -> list[str]:
    workers = [r for r in results if r.subject == "worker" and r.progress and r.error is None]
    found = ratios(results)
    lines = []
    if found:
        lines.append(f"ratio worker/bare loop (SET) per round: {_each(found)}")
        lines.append(
            _target("ratio worker/bare (median)", statistics.median(found), ">=", TARGET_RATIO)
        )
    against_lua = ratios(results, "bare-lua")
    if against_lua:
        lines.append(f"ratio worker/bare loop (Lua) per round: {_each(against_lua)}")
    if workers:
        cpu = statistics.median(r.progress.cpu_per_1000("subject") for r in workers if r.progress)
        rss = max(max(r.peak_rss, r.high_water_mark) for r in workers) / 2**20
        lines.append(_target("worker CPU s/1k (median)", cpu, "<=", TARGET_CPU_PER_1000))
        lines.append(_target("worker peak RSS MB (max)", rss, "<=", TARGET_RSS_MB))
        p99 = [
            r.latency.percentile(0.99) * 1000 for r in workers if r.latency and r.latency.latencies
        ]
        if p99:
            lines.append(
                _target("p99 latency ms (median)", statistics.median(p99), "<=", TARGET_P99_MS)
            )
    checked = [r for r in results if r.check is not None]
    stale = sum(len(r.check.stale) for r in checked if r.check)
    equal = sum(1 for r in checked if r.check and r.check.ok)
    lines.append(
        f"state check: {equal}/{len(checked)} runs equal the contract model, {stale} stale values"
    )
    return lines


def _each(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _target(name: str, value: float, op: str, target: float) -> str:
    met = value >= target if op == ">=" else value <= target
    return f"{name:<28}{value:>9.3f}  target {op} {target:g}: {'met' if met else 'MISSED'}"
