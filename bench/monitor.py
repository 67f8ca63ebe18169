"""Watching a consumer process work: writes seen in Redis, its CPU time and memory.

Writes are counted on the Redis server (``INFO commandstats``: calls of the
write commands since a baseline), so the consumer under test does no extra
work for the measurement and every consumer is measured the same way.
CPU and RSS come from psutil on the consumer's pid and its children.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil
import redis

SAMPLE_INTERVAL = 0.02
FAMILY_REFRESH = 1.0
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall")


class StalledError(RuntimeError):
    """The consumer stopped making progress before it wrote everything."""


class WriteCounter:
    """Calls of the given commands on the Redis server since construction."""

    def __init__(self, client: redis.Redis, commands: Sequence[str]) -> None:
        self.client = client
        self.commands = tuple(commands)
        self.baseline = self._total()

    def _total(self) -> int:
        stats = self.client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in self.commands)

    def count(self) -> int:
        return self._total() - self.baseline


class ProcessWatch:
    """CPU seconds and memory of some processes and their children."""

    def __init__(self, *pids: int, children: bool = True) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.children = children
        self.peak_rss = 0
        self._members: list[psutil.Process] = []
        self._listed = -FAMILY_REFRESH

    def _family(self, refresh: bool = False) -> list[psutil.Process]:
        """The processes and their children; the child list (a /proc scan, a few ms)
        is refreshed at most once per FAMILY_REFRESH seconds unless asked."""
        if not refresh and time.monotonic() - self._listed < FAMILY_REFRESH:
            return self._members
        family: list[psutil.Process] = []
        for process in self.processes:
            try:
                family += [process, *(process.children(recursive=True) if self.children else [])]
            except psutil.NoSuchProcess:
                continue
        self._members, self._listed = family, time.monotonic()
        return family

    def cpu(self) -> float:
        """user + system seconds of the processes, their live children and reaped ones."""
        total = 0.0
        for member in self._family(refresh=True):
            try:
                times = member.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
            if self.children:
                total += times.children_user + times.children_system
        return total

    def sample_rss(self) -> int:
        """Current RSS of the family; the peak is kept."""
        rss = 0
        for member in self._family():
            try:
                rss += member.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def high_water_mark(self) -> int:
        """The kernel's peak RSS (VmHWM) summed over the live family, in bytes."""
        total = 0
        for member in self._family(refresh=True):
            try:
                status = Path(f"/proc/{member.pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        return total

    def alive(self) -> bool:
        """True while every watched process runs."""
        try:
            return all(
                p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in self.processes
            )
        except psutil.NoSuchProcess:
            return False


class MachineCpu:
    """Busy CPU seconds of the whole machine (every core, every process)."""

    def cpu(self) -> float:
        times = psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


class CpuSource(Protocol):
    def cpu(self) -> float: ...


@dataclass
class Progress:
    """Time, write count and CPU seconds (per watched group) at the first and last write."""

    started: float
    target: int
    first_time: float = 0.0
    first_count: int = 0
    first_cpu: dict[str, float] = field(default_factory=dict)
    last_time: float = 0.0
    last_count: int = 0
    last_cpu: dict[str, float] = field(default_factory=dict)

    @property
    def steady_rate(self) -> float:
        """Writes per second from the first observed write to the last."""
        span = self.last_time - self.first_time
        return (self.last_count - self.first_count) / span if span > 0 else 0.0

    @property
    def startup_rate(self) -> float:
        """Writes per second from the process start to the last write."""
        span = self.last_time - self.started
        return self.last_count / span if span > 0 else 0.0

    def cpu_per_1000(self, group: str) -> float:
        """CPU seconds of a group per 1,000 writes over the steady span."""
        done = self.last_count - self.first_count
        used = self.last_cpu.get(group, 0.0) - self.first_cpu.get(group, 0.0)
        return used / done * 1000 if done > 0 else 0.0

    def cpu_share(self, group: str) -> float:
        """Cores a group kept busy over the steady span (1.0 = one core)."""
        span = self.last_time - self.first_time
        used = self.last_cpu.get(group, 0.0) - self.first_cpu.get(group, 0.0)
        return used / span if span > 0 else 0.0


def _cpu(groups: dict[str, CpuSource]) -> dict[str, float]:
    return {name: group.cpu() for name, group in groups.items()}


def watch(
    counter: WriteCounter,
    subject: ProcessWatch,
    *,
    target: int,
    started: float,
    others: dict[str, CpuSource] | None = None,
    stall_seconds: float = 60.0,
    on_first_write: Callable[[], object] = lambda: None,
) -> Progress:
    """Sample until ``target`` writes are counted; raise ``StalledError`` on no progress.

    CPU is read for the subject (group ``"subject"``) and for ``others`` (the SQS
    endpoint, Redis, this process, the whole machine) at the first and the last write.
    """
    groups: dict[str, CpuSource] = {"subject": subject, **(others or {})}
    progress = Progress(started=started, target=target)
    last_change = time.monotonic()
    seen = 0
    while True:
        alive = subject.alive()
        count = counter.count()
        now = time.monotonic()
        subject.sample_rss()
        if count != seen:
            seen, last_change = count, now
            if progress.first_count == 0:
                progress.first_time, progress.first_count = now, count
                progress.first_cpu = _cpu(groups)
                on_first_write()
        if count >= target:
            progress.last_time, progress.last_count = now, count
            progress.last_cpu = _cpu(groups)
            return progress
        if not alive:
            raise StalledError(f"{count} of {target} writes, then the process exited")
        if now - last_change > stall_seconds:
            raise StalledError(
                f"{count} of {target} writes after {now - started:.1f}s: "
                f"no progress for {now - last_change:.0f}s"
            )
        time.sleep(SAMPLE_INTERVAL)
