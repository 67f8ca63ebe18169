"""The ``cache-pipeline`` command line.

Each command builds the settings itself (no module-level globals) and imports
the part it runs lazily, so ``cache_pipeline`` stays free of Celery and FastAPI
at import time. A bad setting prints one line and exits with code 2.
"""

from __future__ import annotations

import json
import sys

import click

from cache_pipeline import __version__
from cache_pipeline.config import Settings, load_settings
from cache_pipeline.errors import ConfigError

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
    from api.server import run_standalone

    run_standalone(settings)


def _masked(settings: Settings) -> dict[str, object]:
    return {
        name.upper(): ("**********" if "SecretStr" in type(value).__name__ else value)
        for name, value in settings.model_dump(mode="json").items()
    } | {
        name.upper(): ("**********" if getattr(settings, name) is not None else None)
        for name in ("server_api_key", "redis_password", "sentry_dsn")
    }


def main() -> None:
    """Entry point of the console script."""
    try:
        cli.main(standalone_mode=False)
    except ConfigError as exc:
        click.echo(f"cache-pipeline: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(1)


if __name__ == "__main__":
    main()
