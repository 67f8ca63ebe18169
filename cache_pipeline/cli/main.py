"""The ``cache-pipeline`` command line.

The operator's commands, above ``api`` (the HTTP surface), ``tasks`` (the Celery
worker) and the rest of ``cache_pipeline``; only the development tools
(``cache_pipeline.dev``, ``python -m cache_pipeline.dev``) sit above it. Each command builds the
settings itself (no module-level globals) and imports the part it runs lazily,
so a command that needs neither Celery nor FastAPI never loads them. Whatever
fails, a command ends with one line and an exit code by class
(``cache_pipeline.cli.failures``: 2 settings, 3 Redis, 4 SQS, 5 the Edge API).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO, TypeVar

import click

from cache_pipeline import __version__
from cache_pipeline.cli.dlq import dlq, redrive_alias
from cache_pipeline.cli.failures import ExitCode, Failed, ending, naming
from cache_pipeline.config import Settings, load_settings, load_worker_settings
from cache_pipeline.errors import CachePipelineError, ConfigError

if TYPE_CHECKING:
    from cache_pipeline.store.writer import Store

S = TypeVar("S", bound=Settings)


@click.group()
@click.version_option(__version__, prog_name="cache-pipeline")
def cli() -> None:
    """Persistent cache pipeline: SQS state changes applied to Redis."""


@cli.command("check-config")
@click.option(
    "--connect", is_flag=True, help="Also reach Redis, SQS and the Edge API (same as doctor)."
)
def check_config(connect: bool) -> None:
    """Validate the worker's settings (QUEUE_URL included) and print them, secrets masked,
    as JSON; with --connect, run every check of `doctor` instead."""
    if connect:
        _doctor(acl_user=None)
        return
    settings = _readable_ca_file(load_worker_settings())
    click.echo(json.dumps(_masked(settings), indent=2, sort_keys=True))


@cli.command("doctor")
@click.option(
    "--acl-user",
    default=None,
    help="Check this Redis user's rights (default: REDIS_USERNAME, or default).",
)
def doctor(acl_user: str | None) -> None:
    """Check the settings, Redis, SQS and the Edge API, one line per check (ok, FAIL or
    skip, with the reason); exits with the code of the first failed check's class
    (2 settings, 3 Redis, 4 SQS, 5 Edge API). Changes nothing (docs/operations.md)."""
    _doctor(acl_user)


def _doctor(acl_user: str | None) -> None:
    from cache_pipeline.cli.doctor import diagnose, render_check, summary

    checks = diagnose(acl_user=acl_user)
    for check in checks:
        click.echo(render_check(check))
    line, code = summary(checks)
    click.echo(line)
    sys.exit(code)


@cli.command("status")
@click.option(
    "--max-keys", type=click.IntRange(min=1), default=1_000_000, show_default=True,
    help="Stop counting keys after this many (the counts are then a lower bound).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def status(max_keys: int, as_json: bool) -> None:
    """The environment at a glance: its schema marker, its keys by kind (a SCAN of
    ENVIRONMENT_PREFIX: approximate while keys change, bounded by --max-keys) and the
    depths of the queue and the dead-letter queue. Read-only."""
    settings = _readable_ca_file(load_settings())
    from cache_pipeline.cli.status import read_status, render

    with naming(settings):
        found = read_status(settings, max_keys=max_keys)
    click.echo(json.dumps(found.as_dict(), sort_keys=True) if as_json else render(found))


@cli.command("api")
def api() -> None:
    """Serve /livez, /readyz and /metrics alone, without consuming (readiness reports DOWN)."""
    settings = _readable_ca_file(load_settings())
    from cache_pipeline.api.server import run_standalone

    run_standalone(settings)


@cli.command("worker")
def worker() -> None:
    """Consume QUEUE_URL and apply every message to Redis (a Celery worker)."""
    settings = _readable_ca_file(load_worker_settings())
    from cache_pipeline.tasks.worker import run_worker

    sys.exit(run_worker(settings))


cli.add_command(dlq)
cli.add_command(redrive_alias)


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
    settings = _readable_ca_file(load_settings())
    from cache_pipeline.cli.resync import run_resync
    from cache_pipeline.contract.scopes import read_scopes, unique

    scopes = unique(read_scopes(scopes_file, scopes_file.name))
    with naming(settings):
        report = run_resync(settings, scopes, concurrency=concurrency)
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
    settings = _readable_ca_file(load_settings())
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
    settings = _readable_ca_file(load_settings())
    from cache_pipeline.cli.inspect import inspect_scope, render
    from cache_pipeline.keys import KeyLayout
    from cache_pipeline.store.connection import connect

    _check_ids(customer_id, resource_id)
    with naming(settings):
        client = connect(settings)
        layout = KeyLayout(settings.environment_prefix, settings.redis_cluster)
        try:
            found = inspect_scope(client, layout, customer_id, resource_id)
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
    settings = _readable_ca_file(load_settings())
    from cache_pipeline.store.migrate import migrate as run_migration

    with _store(settings) as store:
        done = run_migration(store)
    click.echo(json.dumps(done.as_dict()))


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    """The configured environment's store, for one command; a failure of Redis ends the
    command naming it."""
    from cache_pipeline.keys import KeyLayout
    from cache_pipeline.store.connection import connect
    from cache_pipeline.store.writer import Store

    with naming(settings):
        client = connect(settings)
        layout = KeyLayout(settings.environment_prefix, settings.redis_cluster)
        try:
            yield Store(client, layout, ttl=settings.keys_ttl_in_secs)
        finally:
            client.close()


def _readable_ca_file(settings: S) -> S:
    """``settings``, once REDIS_TLS_CA_FILE (when set) is known readable; else ConfigError."""
    from cache_pipeline.store.connection import ca_file_problem

    problem = ca_file_problem(settings)
    if problem is not None:
        raise ConfigError(problem)
    return settings


def _masked(settings: Settings) -> dict[str, object]:
    return {
        name.upper(): ("**********" if "SecretStr" in type(value).__name__ else value)
        for name, value in settings.model_dump(mode="json").items()
    } | {
        name.upper(): ("**********" if getattr(settings, name) is not None else None)
        for name in ("server_api_key", "redis_password", "sentry_dsn")
    }


def run_group(group: click.Group, program: str) -> None:
    """Run a command group as a program. Whatever stops a command ends it with one line
    on stderr, ``program: <what failed>: <why>``, and the exit code of its class
    (``cache_pipeline.cli.failures``); a wrong option prints click's usage message."""
    try:
        group.main(standalone_mode=False)
    except (Failed, CachePipelineError) as exc:
        line, code = ending(program, exc)
        click.echo(line, err=True)
        sys.exit(code)
    except click.UsageError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"{program}: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(ExitCode.FAILED)


def main() -> None:
    """Entry point of the console script."""
    run_group(cli, "cache-pipeline")


if __name__ == "__main__":
    main()
