"""Settings: every variable keeps its name, type and default; bad values name themselves.

The CLI path (one stderr line, exit code 2) is covered by ``test_cli.py``; these
tests go through ``load_settings`` directly.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from cache_pipeline.config import CacheUpdatePolicy, Settings, load_settings, load_worker_settings
from cache_pipeline.errors import ConfigError

# (variable, default, an override as the environment gives it, the parsed override)
VARIABLES: list[tuple[str, Any, str, Any]] = [
    ("AWS_REGION", "us-east-1", "eu-west-1", "eu-west-1"),
    ("QUEUE_URL", None, "https://sqs.eu-west-1.amazonaws.com/1/q", None),
    ("SERVER_API_KEY", None, "server-key", SecretStr("server-key")),
    ("ENVIRONMENT_PREFIX", "production", "staging", "staging"),
    ("REDIS_HOST", "127.0.0.1", "redis.internal", "redis.internal"),
    ("REDIS_PORT", 6379, "6380", 6380),
    ("REDIS_DB", 0, "3", 3),
    ("REDIS_USERNAME", None, "cache", "cache"),
    ("REDIS_PASSWORD", None, "pw", SecretStr("pw")),
    ("REDIS_TLS", False, "1", True),
    ("BATCH_SIZE", 1, "10", 10),
    ("KEYS_TTL_IN_SECS", 604800, "-1", -1),
    ("EDGE_API_URL", "https://edge.api.stigg.io", "http://edge.local:8080", None),
    ("SENTRY_DSN", None, "https://k@sentry.example/1", SecretStr("https://k@sentry.example/1")),
    ("DISABLE_SENTRY", False, "1", True),
    ("PORT", 4000, "8080", 8080),
    ("CACHE_UPDATE_POLICY", CacheUpdatePolicy.UPDATE_IF_EXISTS, "UPSERT", CacheUpdatePolicy.UPSERT),
    ("LOG_LEVEL", "info", "debug", "debug"),
    ("LOG_MESSAGE_KEY", "msg", "message", "message"),
    ("LOG_ERROR_KEY", "err", "error", "error"),
    ("SQS_ENDPOINT_URL", None, "http://localhost:4566", None),
    ("DEAD_LETTER_QUEUE_URL", None, "https://sqs.eu-west-1.amazonaws.com/1/dlq", None),
    ("REDIS_CLUSTER", False, "1", True),
    ("REDIS_TLS_CA_FILE", None, "/etc/ssl/ca.pem", "/etc/ssl/ca.pem"),
    ("VISIBILITY_TIMEOUT", 30, "120", 120),
    ("WORKER_CONCURRENCY", None, "4", 4),
    ("CELERY_IMPORTS", None, "hooks.celery, otel_setup", "hooks.celery, otel_setup"),
]

BAD_VALUES = [
    ("BATCH_SIZE", "0", "an integer 1..10"),
    ("BATCH_SIZE", "11", "an integer 1..10"),
    ("BATCH_SIZE", "one", "an integer 1..10"),
    ("CACHE_UPDATE_POLICY", "SOMETIMES", "UPDATE_IF_EXISTS or UPSERT"),
    ("KEYS_TTL_IN_SECS", "0", "a positive number of seconds, or -1 for no expiry"),
    ("KEYS_TTL_IN_SECS", "-2", "a positive number of seconds, or -1 for no expiry"),
    ("KEYS_TTL_IN_SECS", "1.5", "a positive number of seconds, or -1 for no expiry"),
    ("REDIS_PORT", "abc", "an integer 1..65535"),
    ("REDIS_PORT", "70000", "an integer 1..65535"),
    ("PORT", "0", "an integer 1..65535"),
    ("REDIS_DB", "16", "an integer 0..15"),
    ("REDIS_TLS", "maybe", "0 or 1"),
    ("DISABLE_SENTRY", "2", "0 or 1"),
    ("LOG_LEVEL", "verbose", "error, warn, info or debug"),
    ("ENVIRONMENT_PREFIX", "prod:eu", "without spaces or : { } # * ? [ ] \\"),
    ("ENVIRONMENT_PREFIX", "", "1..128 characters"),
    ("EDGE_API_URL", "edge.local", "an http(s) URL"),
    ("SQS_ENDPOINT_URL", "localhost:4566", "an http(s) URL"),
    ("VISIBILITY_TIMEOUT", "0", "seconds, 1..43200"),
    ("WORKER_CONCURRENCY", "0", "an integer 1..64"),
    ("REDIS_TIMEOUT_SECS", "0", "more than 0 and at most 60"),
    ("CELERY_IMPORTS", "hooks celery", "module names separated by commas"),
    ("CELERY_IMPORTS", "hooks,", "module names separated by commas"),
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the environment the tests run in."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("name", "default", "raw", "parsed"), VARIABLES)
def test_variable_default(name: str, default: Any, raw: str, parsed: Any) -> None:
    assert getattr(Settings(), name.lower()) == default


@pytest.mark.parametrize(("name", "default", "raw", "parsed"), VARIABLES)
def test_variable_read_from_environment(
    monkeypatch: pytest.MonkeyPatch, name: str, default: Any, raw: str, parsed: Any
) -> None:
    monkeypatch.setenv(name, raw)
    value = getattr(load_settings(), name.lower())
    expected = raw if parsed is None else parsed
    if isinstance(expected, SecretStr):
        assert isinstance(value, SecretStr)
        assert value.get_secret_value() == expected.get_secret_value()
    else:
        assert value == expected
        assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("batch_size", "concurrency", "consumers"),
    [("1", None, 16), ("2", None, 12), ("10", None, 12), ("1", "", 16), ("10", "3", 3)],
)
def test_consumers_follow_worker_concurrency_or_derive_from_the_batch_size(
    monkeypatch: pytest.MonkeyPatch, batch_size: str, concurrency: str | None, consumers: int
) -> None:
    monkeypatch.setenv("BATCH_SIZE", batch_size)
    if concurrency is not None:
        monkeypatch.setenv("WORKER_CONCURRENCY", concurrency)
    assert load_settings().consumers == consumers


def test_a_stall_bound_under_the_longest_legitimate_call_is_warned_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().liveness_warning() is None  # 120 s > 2 x 2 s + 20 s
    monkeypatch.setenv("REDIS_TIMEOUT_SECS", "50")
    warning = load_settings().liveness_warning()
    assert warning is not None
    assert warning.startswith("STALLED_AFTER_SECS=120 is not above")
    assert "(120 s)" in warning


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES)
def test_bad_value_is_one_line_naming_variable_value_and_allowed(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{name}={value!r}")
    assert allowed in text


def test_two_bad_values_give_two_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SIZE", "0")
    monkeypatch.setenv("REDIS_PORT", "abc")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert sorted(line.split("=")[0] for line in lines) == ["BATCH_SIZE", "REDIS_PORT"]


def test_queue_url_required_for_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"^QUEUE_URL is not set"):
        load_worker_settings()
    monkeypatch.setenv("QUEUE_URL", "")
    with pytest.raises(ConfigError, match=r"^QUEUE_URL is not set"):
        load_worker_settings()
    monkeypatch.setenv("QUEUE_URL", "http://127.0.0.1:1/000000000000/q")
    assert load_worker_settings().queue_url == "http://127.0.0.1:1/000000000000/q"


def test_a_cluster_with_another_database_than_0_is_refused_naming_both_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis Cluster has database 0 only: REDIS_DB was silently dropped, now it is refused."""
    monkeypatch.setenv("REDIS_CLUSTER", "1")
    monkeypatch.setenv("REDIS_DB", "3")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("REDIS_DB=3 cannot be used with REDIS_CLUSTER=1")
    monkeypatch.setenv("REDIS_DB", "0")
    assert load_settings().redis_cluster
    monkeypatch.setenv("REDIS_CLUSTER", "0")
    monkeypatch.setenv("REDIS_DB", "3")
    assert load_settings().redis_db == 3


def test_lower_case_names_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("batch_size", "5")
    assert load_settings().batch_size == 5
    assert load_settings(batch_size=7).batch_size == 7


def test_celery_imports_are_module_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().celery_import_modules == ()
    monkeypatch.setenv("CELERY_IMPORTS", " hooks.celery ,otel_setup ")
    assert load_settings().celery_import_modules == ("hooks.celery", "otel_setup")
    monkeypatch.setenv("CELERY_IMPORTS", "")
    assert load_settings().celery_import_modules == ()


def test_ttl_property() -> None:
    assert Settings().ttl == 604800
    assert Settings(keys_ttl_in_secs=-1).ttl is None


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("SERVER_API_KEY", "key-123")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert "key-123" not in str(settings)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.batch_size = 3  # type: ignore[misc]
