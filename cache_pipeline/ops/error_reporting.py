"""Error reporting to Sentry.

SENTRY_DSN turns it on, with the Celery and/or FastAPI integrations the calling
process needs; DISABLE_SENTRY=1 keeps it off whatever the DSN. Every event
passes through a hook that masks the secrets of the configuration and of the
environment before it leaves the process. The integrations are imported inside
``configure_sentry`` so that the core never imports Celery or FastAPI itself.
"""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.loguru import LoggingLevels, LoguruIntegration

from cache_pipeline import __version__
from cache_pipeline.config import Settings
from cache_pipeline.ops.logs import Redactor, secret_values


def sentry_enabled(settings: Settings) -> bool:
    """True when a DSN is set and DISABLE_SENTRY is not."""
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else ""
    return bool(dsn) and not settings.disable_sentry


def configure_sentry(settings: Settings, *, celery: bool, fastapi: bool) -> bool:
    """Initialise sentry_sdk when enabled; returns whether it was.

    Call it after ``configure_logging`` (which replaces every loguru handler).
    """
    if not sentry_enabled(settings):
        return False
    assert settings.sentry_dsn is not None
    # The DSN's own key is what Sentry authenticates with: every other secret is masked.
    redactor = Redactor(secret_values(settings, include_dsn=False))
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        release=__version__,
        environment=settings.environment_prefix,
        integrations=_integrations(celery=celery, fastapi=fastapi),
        # Only the integrations asked for: no auto-enabling import of Celery or FastAPI.
        auto_enabling_integrations=False,
        before_send=lambda event, _hint: _scrub(redactor, event),
        # Errors only (no tracing), and nothing about users, cookies, bodies or local
        # variables: a frame's locals may hold a message body or a credential. `queues`
        # off: the Celery integration leaves a task's arguments (the message) out of its events.
        traces_sample_rate=None,
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_bodies": [],
            "url_query_params": {"mode": "off"},
            "stack_frame_variables": False,
            "queues": False,
        },
    )
    return True


def _scrub(redactor: Redactor, event: Any) -> Any:
    """The event with every secret masked, wherever it appears."""
    return redactor.deep(event)


def _message_only(_record: Any) -> str:
    """The log message alone (the exception travels as the event's exception)."""
    return "{message}"


def _integrations(*, celery: bool, fastapi: bool) -> list[Integration]:
    # Every log record (stdlib ones too, routed into loguru by cache_pipeline.ops.logs) reaches
    # Sentry once, through loguru: errors as events, info and up as breadcrumbs.
    # sentry-sdk 3: `level` is the threshold of Sentry *logs* (off here: the JSON lines are the
    # log), `breadcrumb_level` the one of breadcrumbs.
    integrations: list[Integration] = [
        LoggingIntegration(level=None, event_level=None, breadcrumb_level=None),
        LoguruIntegration(
            level=None,
            event_level=LoggingLevels.ERROR,
            breadcrumb_level=LoggingLevels.INFO,
            breadcrumb_format=_message_only,
            event_format=_message_only,
        ),
    ]
    if celery:
        # Reports what a task raises (its `throws` excepted) as one event scoped as that task;
        # it wraps the tracers Celery builds from now on (cache_pipeline.tasks.handlers).
        from sentry_sdk.integrations.celery import CeleryIntegration

        integrations.append(CeleryIntegration())
    if fastapi:
        from sentry_sdk.integrations.fastapi import FastApiIntegration
        from sentry_sdk.integrations.starlette import StarletteIntegration

        integrations += [StarletteIntegration(), FastApiIntegration()]
    return integrations
