"""``python -m cache_pipeline.dev``: the development tools, beside the operator's command line.

``stack`` runs the whole stack on this machine (``make run``), ``edge-stub`` serves
Stigg's Edge API from a file, ``publish`` sends a JSON-lines file of contract
messages to QUEUE_URL, and ``stub-scopes`` prints the scopes an edge stub holds (as
the JSON lines ``cache-pipeline resync`` reads). They sit above ``cache_pipeline.cli``
(the stack runs its commands); neither the worker nor the SDK imports them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import click
import httpx

from cache_pipeline import __version__
from cache_pipeline.cli.failures import naming
from cache_pipeline.cli.main import run_group
from cache_pipeline.client.upstream import EdgeOptions
from cache_pipeline.config import load_settings, load_worker_settings
from cache_pipeline.contract.scopes import ScopeRef, scope_from_json
from cache_pipeline.errors import CachePipelineError, UpstreamError

STUB_SCOPES_PATH = "/_stub/scopes"


@click.group()
@click.version_option(__version__, prog_name="cache-pipeline dev tools")
def dev() -> None:
    """Development tools of cache-pipeline (not for production)."""


@dev.command("stack", context_settings={"ignore_unknown_options": True})
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def stack(options: tuple[str, ...]) -> None:
    """Redis, SQS (moto), the edge stub, the worker and a demo feed on this machine.

    OPTIONS: --demo-dir DIR (customers.json and feed.jsonl), --keep (keep the run
    directory); `make run RUN_ARGS="--keep"` passes them.
    """
    from cache_pipeline.dev.devstack.main import main as run_stack

    run_stack(list(options))


@dev.command("edge-stub")
@click.option(
    "--file",
    "data_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default="edge-data.json",
    show_default=True,
    help='JSON file of scope snapshots, {"scopes": [...]} (created on the first write).',
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True)
@click.option(
    "--latency-ms", type=click.IntRange(0, 60000), default=0, help="Delay every entitlements GET."
)
def edge_stub(data_file: Path, host: str, port: int, latency_ms: int) -> None:
    """Serve Stigg's Edge API (GET /v1/c/{customerId}/entitlements.json) from a JSON file.

    PUT/DELETE on the same path and POST /_stub/reload change the data and publish the
    contract v2 messages to QUEUE_URL when set; see docs/upstream-api.yaml.
    """
    settings = load_settings()
    from cache_pipeline.dev.edge_stub import serve

    serve(settings, data_file, host=host, port=port, latency_ms=latency_ms)


@dev.command("publish")
@click.argument("source", type=click.File("r", encoding="utf-8"))
def publish(source: TextIO) -> None:
    """Send the JSON-lines messages of SOURCE (a file, or - for stdin) to QUEUE_URL.

    Every line is validated first; one bad line sends nothing.
    """
    settings = load_worker_settings()
    from cache_pipeline.dev.publish import read_messages
    from cache_pipeline.sqs.client import SqsQueue

    bodies = read_messages(source, settings.environment_prefix)
    with naming(settings):
        queue = SqsQueue.from_settings(settings)
        try:
            sent = queue.send(bodies)
        finally:
            queue.close()
    click.echo(f"published {sent} message(s) to {queue.queue_url}")


@dev.command("stub-scopes")
def print_stub_scopes() -> None:
    """Print every scope the edge stub at EDGE_API_URL holds, one JSON line each.

    Pipe it into `cache-pipeline resync -` to refill the cache from the stub.
    """
    settings = load_settings()
    key = settings.server_api_key.get_secret_value() if settings.server_api_key else ""
    with naming(settings):
        scopes = stub_scopes(EdgeOptions(url=settings.edge_api_url, api_key=key))
    for scope in scopes:
        click.echo(json.dumps({"customerId": scope.customer_id, "resourceId": scope.resource_id}))


def stub_scopes(options: EdgeOptions) -> list[ScopeRef]:
    """Every scope an edge stub holds (``GET /_stub/scopes``, a stub extension).

    Raises ``UpstreamError`` when the upstream does not answer it (Stigg's Edge does not).
    """
    url = options.url.rstrip("/") + STUB_SCOPES_PATH
    try:
        response = httpx.get(url, headers=options.headers(), timeout=options.budget_seconds)
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{url} could not be read: {exc!r}") from None
    if response.status_code != 200:
        raise UpstreamError(
            f"{url} answered {response.status_code} (only the edge stub lists its scopes):"
            f" {response.text[:200]}"
        )
    try:
        return [scope_from_json(item) for item in response.json()["scopes"]]
    except (ValueError, KeyError, TypeError, CachePipelineError) as exc:
        raise UpstreamError(f"{url} answered something that is not a scope list: {exc}") from None


def main() -> None:
    """Entry point of ``python -m cache_pipeline.dev``."""
    run_group(dev, "cache-pipeline dev")
