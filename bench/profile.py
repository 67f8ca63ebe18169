"""Sampling profiles of a consumer during its steady phase: where its time goes.

py-spy attaches to the running process (``--nonblocking``: the process is never
paused) and writes collapsed stacks of every thread, waiting ones included
(``--idle``), so the samples of the consumer thread are its wall-clock time.
``summarize`` splits that time by phase of the consume loop (SQS receive,
parse, Redis write, SQS delete, ...) and, inside it, by component (the
innermost frame that belongs to botocore, kombu, redis-py, pydantic, ...).

On a machine whose cores are all busy, a thread that is runnable but not
running still shows where it stands; the shares are of elapsed time, not CPU.

    python -m bench.profile FILE.txt     # print the breakdown of a saved profile
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click

RATE = 200  # samples per second
# (name, fragments of a frame), checked from the innermost frame outwards.
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("SQS receive", ("receive (", "receive_batch (")),
    ("SQS delete", ("delete (", "delete_batch (")),
    ("parse", ("parse_message (",)),
    ("task (Celery tracer + plan)", ("trace_task (",)),
    ("Redis write", ("apply_planned (", "SetWriter.write (")),
    ("count + log", ("record_applied (", "record_poison (")),
    ("consumer loop", ("cache_pipeline/tasks/", "bench/bare_loop.py")),
)
# (name, path prefixes of a frame's file)
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("botocore/urllib3/http.client", ("botocore/", "urllib3/", "http/client.py", "boto3/")),
    ("socket/ssl/selectors (waiting)", ("socket.py", "ssl.py", "selectors.py")),
    ("redis-py", ("redis/", "hiredis")),
    ("pydantic + json", ("pydantic/", "pydantic_core", "json/")),
    ("celery + kombu", ("celery/", "kombu/")),
    ("loguru", ("loguru/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("cache_pipeline", ("cache_pipeline/",)),
    ("tasks (consumer)", ("cache_pipeline/tasks/",)),
)
CONSUMER_THREADS = ("queue-consumer", "MainThread")


def py_spy() -> str:
    path = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(path).exists():
        raise RuntimeError("py-spy is not installed: `make install` (it is in the dev group)")
    return path


def start(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` (all threads, CPU only) into ``output``."""
    args = [py_spy(), "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking"]
    args += ["--idle", "--format", "raw", "--threads", "--output", str(output)]
    log = output.with_suffix(".log").open("wb")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Make py-spy write its output and exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class Breakdown:
    """Where the samples of the consumer thread went."""

    thread: str
    samples: int
    phases: list[tuple[str, int]]
    components: list[tuple[str, int]]
    top_frames: list[tuple[str, int]]

    def render(self) -> str:
        total = self.samples
        lines = [f"{total} samples of {self.thread} at {RATE}/s (wall clock, waits included)"]
        lines += ["  by phase of the loop:"]
        lines += [f"    {share(n, total):>6}  {name}" for name, n in self.phases]
        lines += ["  by component (innermost frame):"]
        lines += [f"    {share(n, total):>6}  {name}" for name, n in self.components]
        lines += ["  top innermost frames:"]
        lines += [f"    {share(n, total):>6}  {name}" for name, n in self.top_frames]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "thread": self.thread,
            "samples": self.samples,
            "phases": {name: round(n / self.samples, 4) for name, n in self.phases},
            "components": {name: round(n / self.samples, 4) for name, n in self.components},
        }


def share(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "-"


def summarize(path: Path, top: int = 12) -> Breakdown:
    """The breakdown of the consumer thread in a py-spy ``raw`` (collapsed stacks) file."""
    stacks = _read(path)
    thread = _consumer_thread(stacks)
    phases: Counter[str] = Counter()
    components: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        if frames[0] != thread:
            continue
        phases[_match(frames[1:], PHASES, "other")] += count
        components[_match(frames[1:], COMPONENTS, "other (interpreter, stdlib)", files=True)] += (
            count
        )
        leaves[frames[-1]] += count
    return Breakdown(
        thread=thread,
        samples=sum(phases.values()),
        phases=phases.most_common(),
        components=components.most_common(),
        top_frames=leaves.most_common(top),
    )


def _read(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _consumer_thread(stacks: list[tuple[list[str], int]]) -> str:
    """The busiest thread whose name marks it as the consume loop."""
    totals: Counter[str] = Counter()
    for frames, count in stacks:
        totals[frames[0]] += count
    for name, _ in totals.most_common():
        if any(marker in name for marker in CONSUMER_THREADS[:1]):
            return name
    return totals.most_common(1)[0][0] if totals else "-"


def _match(
    frames: list[str],
    table: tuple[tuple[str, tuple[str, ...]], ...],
    default: str,
    *,
    files: bool = False,
) -> str:
    for frame in reversed(frames):
        text = _file(frame) if files else frame
        for name, fragments in table:
            if any((text.startswith(f) if files else f in text) for f in fragments):
                return name
    return default


def _file(frame: str) -> str:
    """``path/file.py`` of a ``function (path/file.py:line)`` frame."""
    return frame.rpartition("(")[2].rpartition(":")[0]


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def main(path: Path) -> None:
    """Print where the CPU samples of a saved profile went."""
    click.echo(summarize(path).render())


if __name__ == "__main__":
    main()
