"""The ``cache-pipeline`` command line.

The operator's commands, above ``api`` (the HTTP surface), ``tasks`` (the Celery
worker) and the rest of ``cache_pipeline``; only the development tools
(``cache_pipeline.dev``, ``python -m cache_pipeline.dev``) sit above it. Each command builds the
settings itself (no module-level globals) and imports the part it runs lazily,
so a command that needs neither Celery nor FastAPI never loads them. A bad
setting prints one line and exits with code 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

import click

from cache_pipeline import __version__
from cache_pipeline.config import Settings, load_settings, load_worker_settings
from cache_pipeline.errors import ConfigError, QueueUnavailable

if TYPE_CHECKING:
    from cache_pipeline.store.writer import Store

EXIT_CONFIG = 2


@click.group()
@click.version_option(__version__, prog_name="cache-pipeline")
def cli() -> None:
    """Persistent cache pipeline: SQS state changes applied to Redis."""


@cli.command("check-config")
def check_config() -> None:
    """Validate the settings and print them (secrets masked) as JSON."""
    settings = load_settings()
    click.echo(json.dumps(_masked(settings), indent=2, sort_keys=True))


@cli.command("api")
def api() -> None:
    """Serve /livez, /readyz and /metrics alone, without consuming (readiness reports DOWN)."""
    settings = load_settings()
    from cache_pipeline.api.server import run_standalone

    run_standalone(settings)


@cli.command("worker")
def worker() -> None:
    """Consume QUEUE_URL and apply every message to Redis (a Celery worker)."""
    settings = load_worker_settings()
    from cache_pipeline.tasks.worker import run_worker

    sys.exit(run_worker(settings))


@cli.command("redrive")
@click.option(
    "--max",
    "limit",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Move at most this many messages.",
)
def redrive(limit: int) -> None:
    """Move messages from DEAD_LETTER_QUEUE_URL back to QUEUE_URL."""
    settings = load_worker_settings()
    if not settings.dead_letter_queue_url:
        raise ConfigError("DEAD_LETTER_QUEUE_URL is not set: there is no queue to redrive from")
    from cache_pipeline.sqs.client import SqsQueue

    queue = SqsQueue.from_settings(settings)
    try:
        counts = queue.redrive(limit)
    except QueueUnavailable as exc:
        raise click.ClickException(f"redrive stopped: {exc}") from None
    finally:
        queue.close()
    click.echo(f"moved {counts.moved} message(s), {counts.failed} failed")
    if counts.failed:
        sys.exit(1)


@cli.command("resync")
@click.argument("scopes_file", metavar="SCOPES", type=click.File("r", encoding="utf-8"))
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
    help="Edge API requests in flight.",
)  # fmt: skip
def resync(scopes_file: TextIO, concurrency: int) -> None:
    """Rebuild the cache from Stigg's Edge API (EDGE_API_URL) after Redis lost its data.

    SCOPES is a file (or - for stdin) of JSON lines, one scope per line:

    \b
        {"customerId": "cus-42"}
        {"customerId": "acme:eu", "resourceId": "site-1"}

    Stigg's Edge cannot list customers, so the scopes are named here (the edge stub lists
    its own: `python -m cache_pipeline.dev stub-scopes`). Every line is checked first: a bad one
    fetches and writes nothing. Each scope is fetched and written as Stigg's SDK writes
    a miss; newer data in Redis is kept. Prints the counts as one JSON line
    ({"scopes", "written", "stale", "missing", "failed"}); exits 1 when a scope failed.
    """
    settings = load_settings()
    from cache_pipeline.cli.resync import run_resync
    from cache_pipeline.contract.scopes import read_scopes, unique
    from cache_pipeline.errors import CachePipelineError

    try:
        scopes = unique(read_scopes(scopes_file, scopes_file.name))
        report = run_resync(settings, scopes, concurrency=concurrency)
    except CachePipelineError as exc:
        raise click.ClickException(str(exc)) from None
    for kind, scopes_or_reasons in (("missing", report.missing), ("failed", report.failures)):
        for line in scopes_or_reasons[:20]:
            click.echo(f"{kind}: {line}", err=True)
        if len(scopes_or_reasons) > 20:
            click.echo(f"{kind}: ... and {len(scopes_or_reasons) - 20} more", err=True)
    click.echo(json.dumps(report.as_dict()))
    if not report.complete:
        sys.exit(1)


@cli.command("invalidate")
@click.option("--customer", "customer_id", required=True, help="Customer id, raw.")
@click.option("--resource", "resource_id", default=None, help="Resource id, raw (optional).")
def invalidate(customer_id: str, resource_id: str | None) -> None:
    """Drop one customer scope now, whatever the versions its keys hold.

    The repair for a scope a producer froze with timestamps from the future: its
    values go, messages older than now are refused for it, newer ones land again.
    Prints the count as one JSON line.
    """
    settings = load_settings()
    import time

    _check_ids(customer_id, resource_id, "--customer")
    with _store(settings) as store:
        deleted = store.purge(customer_id, resource_id, int(time.time() * 1000))
    click.echo(json.dumps({"customer": customer_id, "resource": resource_id, "deleted": deleted}))


@cli.command("inspect")
@click.argument("customer_id", metavar="CUSTOMER")
@click.option("--resource", "resource_id", default=None, help="Resource id, raw (optional).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def inspect(customer_id: str, resource_id: str | None, as_json: bool) -> None:
    """Show what the cache holds for CUSTOMER (every key, version, TTL, decoded value) and
    whether Stigg's SDK 3.95.0 and a 4.x reader would take it as a hit. Read-only."""
    settings = load_settings()
    from cache_pipeline.cli.inspect import inspect_scope, render
    from cache_pipeline.errors import CachePipelineError
    from cache_pipeline.keys import KeyLayout
    from cache_pipeline.store.connection import connect

    _check_ids(customer_id, resource_id)
    client = connect(settings)
    layout = KeyLayout(settings.environment_prefix, settings.redis_cluster)
    try:
        found = inspect_scope(client, layout, customer_id, resource_id)
    except CachePipelineError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()
    click.echo(json.dumps(found.as_dict(), sort_keys=True) if as_json else render(found))


def _check_ids(customer_id: str, resource_id: str | None, customer_hint: str = "CUSTOMER") -> None:
    from cache_pipeline.keys import unsafe_id_problem

    for name, value in ((customer_hint, customer_id), ("--resource", resource_id)):
        problem = unsafe_id_problem(value) if value is not None else None
        if problem is not None or value == "":
            raise click.BadParameter(problem or "an id is not empty", param_hint=name)


@cli.command("migrate")
def migrate() -> None:
    """Move ENVIRONMENT_PREFIX from key schema 1 (contract 1.x) to 2 (docs/contract.md).

    Schema 1 values cannot be read by Stigg's SDK nor converted: every key of the
    environment is removed and the version 2 marker written; the cache refills from the
    stream and readers' misses (or run `cache-pipeline resync`). Prints one JSON line;
    does nothing on an environment already at version 2.
    """
    settings = load_settings()
    from cache_pipeline.store.migrate import migrate as run_migration

    with _store(settings) as store:
        done = run_migration(store)
    click.echo(json.dumps(done.as_dict()))


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    """The configured environment's store, for one command; a failure of the package
    (Redis unreachable, an error answered) ends the command with its message."""
    from cache_pipeline.errors import CachePipelineError
    from cache_pipeline.keys import KeyLayout
    from cache_pipeline.store.connection import connect
    from cache_pipeline.store.writer import Store

    client = connect(settings)
    layout = KeyLayout(settings.environment_prefix, settings.redis_cluster)
    try:
        yield Store(client, layout, ttl=settings.keys_ttl_in_secs)
    except CachePipelineError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        client.close()


def _masked(settings: Settings) -> dict[str, object]:
    return {
        name.upper(): ("**********" if "SecretStr" in type(value).__name__ else value)
        for name, value in settings.model_dump(mode="json").items()
    } | {
        name.upper(): ("**********" if getattr(settings, name) is not None else None)
        for name in ("server_api_key", "redis_password", "sentry_dsn")
    }


def run_group(group: click.Group, program: str) -> None:
    """Run a command group as a program: a bad setting prints one line (``program: ...``)
    and exits with ``EXIT_CONFIG``, a command's error its message and its exit code."""
    try:
        group.main(standalone_mode=False)
    except ConfigError as exc:
        click.echo(f"{program}: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(1)


def main() -> None:
    """Entry point of the console script."""
    run_group(cli, "cache-pipeline")


if __name__ == "__main__":
    main()
