"""Configuration of the reader SDK and the checks made on every call before any I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cache_pipeline.config import Settings, load_settings
from cache_pipeline.errors import ConfigError, InvalidArgument
from cache_pipeline.upstream import UpstreamOptions

_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")


@dataclass(frozen=True, slots=True)
class ReaderOptions:
    """Knobs of the SDK itself; connection details and names come from ``Settings``.

    * ``upstream_timeout_seconds`` bounds each upstream attempt; ``upstream_retries``
      more attempts follow with exponential backoff and jitter.
    * ``local_ttl_seconds`` > 0 turns on the in-process cache in front of Redis
      (at most ``local_max_entries`` scopes, least recently used evicted first).
    * ``lock_ttl_seconds`` is how long one reader may hold a scope's miss lock;
      ``lock_wait_seconds`` how long the others wait for its write before asking
      the upstream themselves; both default to the longest an upstream call may take.
    * ``poll_interval_seconds`` is how often a waiting reader looks at the cache.
    * ``redis_retry_after_seconds``: after a Redis failure, reads skip Redis
      (and go to the upstream) for that long instead of waiting on timeouts.
    """

    upstream_timeout_seconds: float = 2.0
    upstream_retries: int = 2
    backoff_base_seconds: float = 0.05
    backoff_cap_seconds: float = 1.0
    local_ttl_seconds: float = 0.0
    local_max_entries: int = 10_000
    lock_ttl_seconds: float | None = None
    lock_wait_seconds: float | None = None
    poll_interval_seconds: float = 0.01
    redis_retry_after_seconds: float = 1.0

    def __post_init__(self) -> None:
        _positive("upstream_timeout_seconds", self.upstream_timeout_seconds)
        _positive("poll_interval_seconds", self.poll_interval_seconds)
        _positive("local_max_entries", self.local_max_entries)
        for name in ("lock_ttl_seconds", "lock_wait_seconds"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        for name in (
            "upstream_retries",
            "backoff_base_seconds",
            "backoff_cap_seconds",
            "local_ttl_seconds",
            "redis_retry_after_seconds",
        ):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def upstream_budget(self) -> float:
        """The longest one upstream fetch may take, retries and backoff included."""
        attempts = self.upstream_retries + 1
        return self.upstream_timeout_seconds * attempts + self.backoff_cap_seconds * (attempts - 1)

    @property
    def lock_ttl(self) -> float:
        return self.lock_ttl_seconds or self.upstream_budget + 1.0

    @property
    def lock_ttl_ms(self) -> int:
        return int(self.lock_ttl * 1000)

    @property
    def lock_wait(self) -> float:
        return self.lock_wait_seconds or self.upstream_budget + 1.0

    def upstream(self, settings: Settings) -> UpstreamOptions:
        key = settings.server_api_key.get_secret_value() if settings.server_api_key else None
        return UpstreamOptions(
            url=settings.edge_api_url,
            api_key=key,
            timeout=self.upstream_timeout_seconds,
            retries=self.upstream_retries,
            backoff_base=self.backoff_base_seconds,
            backoff_cap=self.backoff_cap_seconds,
        )


def resolve_settings(settings: Settings | None, overrides: dict[str, Any]) -> Settings:
    """Settings from the environment or the given ones, with explicit values on top.

    Raises ``ConfigError`` naming an unknown or bad setting.
    """
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}: use the lower-case variable name")
    if settings is None:
        return load_settings(**overrides)
    if not overrides:
        return settings
    return load_settings(**(dict(settings) | overrides))


def check_id(name: str, value: object) -> str:
    """An id argument, or ``InvalidArgument`` saying what is wrong with it."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {type(value).__name__}")
    if not _ID.match(value):
        raise InvalidArgument(
            f"{name} must be 1 to 256 characters without control characters, got {value[:40]!r}"
        )
    return value


def check_optional_id(name: str, value: object) -> str | None:
    return None if value is None else check_id(name, value)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise InvalidArgument(f"{name} must be > 0, got {value!r}")
