"""Entry point of the local stack: start the parts, print where to look, stop on Ctrl-C."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from cache_pipeline.config import load_settings
from cache_pipeline.dev.devstack.processes import StackError
from cache_pipeline.dev.devstack.stack import (
    DEFAULTS,
    Stack,
    missing_prerequisites,
    redis_answers,
    say,
    sdk_command,
)
from cache_pipeline.errors import ConfigError

DEMO_DIR = Path(__file__).resolve().parents[3] / "deploy" / "demo"
EXIT_FAILED = 1
EXIT_MISSING = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make run", description="Run Redis, SQS, the edge stub and the worker on this machine."
    )
    parser.add_argument(
        "--demo-dir", type=Path, default=DEMO_DIR, help="customers.json and feed.jsonl"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory (logs, data) on exit"
    )
    return parser.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Run the stack until Ctrl-C; exit with 0, 1 (a part failed) or 2 (something missing)."""
    args = parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        say(f"make run: {exc}")
        sys.exit(EXIT_MISSING)
    missing = missing_prerequisites(need_redis_server=not redis_answers(settings))
    for demo_file in ("customers.json", "feed.jsonl"):
        if not (args.demo_dir / demo_file).is_file():
            missing.append(f"{args.demo_dir / demo_file} is missing: run from a checkout")
    if missing:
        for line in missing:
            say(f"make run: {line}")
        sys.exit(EXIT_MISSING)
    run_dir = Path(tempfile.mkdtemp(prefix="cache-pipeline-dev-"))
    env = {name: str(getattr(settings, name.lower())) for name in DEFAULTS}
    env |= {name: value for name, value in DEFAULTS.items() if name not in _explicit()}
    stack = Stack(run_dir, args.demo_dir, settings, env=env)
    signal.signal(signal.SIGTERM, _terminate)
    code = 0
    try:
        say(f"cache-pipeline local stack (logs and data in {run_dir})")
        base = start(stack)
        banner(stack, base)
        supervise(stack)
    except KeyboardInterrupt:
        say("\nstopping")
    except StackError as exc:
        say(f"make run: {exc}")
        code = EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        if code == 0 and not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            say(f"logs kept in {run_dir}")
    sys.exit(code)


def _explicit() -> set[str]:
    """Stack settings the user set in the environment (they win over the stack's defaults)."""
    import os

    return {name for name in DEFAULTS if os.environ.get(name)}


def start(stack: Stack) -> str:
    stack.use_redis()
    stack.start_sqs()
    stack.start_edge_stub()
    base = stack.start_worker()
    count = stack.publish_demo_feed()
    say(f"  demo feed  {count} messages published and written to Redis")
    return base


def banner(stack: Stack, base: str) -> None:
    env = stack.env
    say(
        "\nThe stack is up. Ctrl-C stops everything started here.\n"
        f"  readiness  {base}/readyz\n"
        f"  metrics    {base}/metrics\n"
        f"  upstream   {env['EDGE_API_URL']}  (edge stub serving Stigg's Edge API; "
        f"data in {stack.run_dir}/edge-data.json)\n"
        f"  redis      {env['REDIS_HOST']}:{env['REDIS_PORT']}  "
        f"(keys under {env['ENVIRONMENT_PREFIX']}:)\n"
        f"  queue      {env['QUEUE_URL']}  (dead letters: {env['DEAD_LETTER_QUEUE_URL']})\n"
        f"  worker log {stack.run_dir}/worker.log\n"
        "Demo customers: cus-demo-1..3 (cus-demo-3 only in the stub: a miss it answers), and\n"
        "acme:eu with its resource site-1. Read an entitlement through the SDK:\n"
        f"  sdk: {sdk_command(env, 'cus-demo-1', 'feature-seats')}"
    )


def supervise(stack: Stack) -> None:
    """Wait for Ctrl-C; a part that dies on its own ends the stack with its log."""
    while True:
        for child in stack.children:
            if not child.running():
                raise StackError(
                    f"{child.name} exited with code {child.process.returncode}; "
                    f"last lines of {child.log}:\n{child.log_tail()}"
                )
        time.sleep(0.5)
