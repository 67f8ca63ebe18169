"""Configuration of the reader SDK and the checks made on every call before any I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cache_pipeline.client.decide import list_fallback
from cache_pipeline.client.upstream import EdgeOptions
from cache_pipeline.config import ReaderSettings, load_reader_settings
from cache_pipeline.contract.dates import now_ms
from cache_pipeline.contract.scopes import check_edge_id
from cache_pipeline.errors import ConfigError, InvalidArgument
from cache_pipeline.keys import unsafe_id_problem

_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
Number = int | float


@dataclass(frozen=True, slots=True)
class ReaderOptions:
    """Knobs of the SDK itself; connection details and names come from ``Settings``.

    * ``upstream_timeout_seconds`` bounds one Edge API call, retries included (Stigg's
      ``entitlementsTimeout``); a timeout, network error, 429 or 5xx is retried at most
      ``upstream_retries`` times after ``2^n * backoff_base_seconds`` (plus 0-20 %),
      and only while the remaining time exceeds that delay. Defaults: Stigg's SDK's.
    * ``local_ttl_seconds`` > 0 turns on the in-process cache in front of Redis
      (at most ``local_max_entries`` reads, least recently used evicted first).
    * ``lock_ttl_seconds`` is how long one reader may hold a scope's miss lock;
      ``lock_wait_seconds`` how long the others wait for its write before asking
      the Edge API themselves; both default to the Edge call's budget plus 1 s.
    * ``poll_interval_seconds`` is how often a waiting reader looks at the cache.
    * ``redis_retry_after_seconds``: after a Redis failure, reads skip Redis
      (and go to the Edge API) for that long instead of waiting on timeouts.
    * ``edge_retry_after_seconds``: after the Edge API was unavailable (refused, timed
      out, failing), getters that would ask it answer their fallback at once for that
      long, so an application's request path never waits on a dead upstream twice.
      A refused connection is not retried within a call.
    * ``outcomes``: called with ``"hit"``, ``"miss"`` (answered from the Edge API),
      ``"fallback"`` or ``"edge_error"`` once per getter call (``edge_error`` beside
      the ``fallback`` it leads to); off by default. ``cache_pipeline.client.metrics``
      makes one that counts into Prometheus.
    * ``entitlements_fallback``: ``{feature_id: {field: value}}``, the fallback of a
      getter called without its own ``fallback=`` (Stigg's ``entitlementsFallback``);
      fields are the answers' snake_case names (``{"has_access": True}``).
    * ``clock``: the time (epoch ms) decisions are made at (usage-period roll-over,
      ``validUntil``); the wall clock unless replaying recorded data.
    """

    upstream_timeout_seconds: float = 10.0
    upstream_retries: int = 3
    backoff_base_seconds: float = 2.0
    local_ttl_seconds: float = 0.0
    local_max_entries: int = 10_000
    lock_ttl_seconds: float | None = None
    lock_wait_seconds: float | None = None
    poll_interval_seconds: float = 0.01
    redis_retry_after_seconds: float = 1.0
    edge_retry_after_seconds: float = 5.0
    outcomes: Callable[[str], None] | None = None
    entitlements_fallback: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    clock: Callable[[], int] = now_ms

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
            "local_ttl_seconds",
            "redis_retry_after_seconds",
            "edge_retry_after_seconds",
        ):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not isinstance(self.entitlements_fallback, Mapping):
            raise InvalidArgument("entitlements_fallback must map feature ids to fallbacks")
        for feature_id, fallback in self.entitlements_fallback.items():
            fields = check_fallback(f"entitlements_fallback[{feature_id!r}]", fallback)
            list_fallback(feature_id, fields or {})

    @property
    def upstream_budget(self) -> float:
        """The longest one Edge API call may take, retries and their delays included."""
        return self.upstream_timeout_seconds

    @property
    def lock_ttl(self) -> float:
        return self.lock_ttl_seconds or self.upstream_budget + 1.0

    @property
    def lock_ttl_ms(self) -> int:
        return int(self.lock_ttl * 1000)

    @property
    def lock_wait(self) -> float:
        return self.lock_wait_seconds or self.upstream_budget + 1.0

    def edge(self, settings: ReaderSettings) -> EdgeOptions:
        """How the Edge API is asked: EDGE_API_URL, SERVER_API_KEY and these knobs."""
        key = settings.server_api_key.get_secret_value() if settings.server_api_key else None
        return EdgeOptions(
            url=settings.edge_api_url,
            api_key=key,
            budget_seconds=self.upstream_timeout_seconds,
            retries=self.upstream_retries,
            base_delay_seconds=self.backoff_base_seconds,
        )


def resolve_settings(settings: ReaderSettings | None, overrides: dict[str, Any]) -> ReaderSettings:
    """Settings from the environment or the given ones, with explicit values on top.

    Raises ``ConfigError`` naming an unknown or bad setting.
    """
    unknown = sorted(set(overrides) - set(ReaderSettings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}: use the lower-case variable name")
    if settings is None:
        return load_reader_settings(**overrides)
    if not overrides:
        return settings
    return load_reader_settings(**(dict(settings) | overrides))


def check_id(name: str, value: object) -> str:
    """An id argument that names only its own keys, or ``InvalidArgument`` saying why not.

    1 to 256 characters, no control character, nothing that could reach another scope's
    keys or a ``#timestamp`` key (``#``, ``{``, ``}``, ``:r_``, ``:f_``, ``:credit_``,
    ``:metadata``); ``acme:eu`` and ``user@example.com`` are fine.
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {type(value).__name__}")
    if not _ID.match(value):
        raise InvalidArgument(
            f"{name} must be 1 to 256 characters without control characters, got {value[:40]!r}"
        )
    problem = unsafe_id_problem(value)
    if problem is not None:
        raise InvalidArgument(f"{name}: {problem}")
    return value


def check_scope_id(name: str, value: object) -> str:
    """A customer or resource id: ``check_id``, and it must go raw into the Edge API URL."""
    return check_edge_id(name, check_id(name, value))


def check_optional_scope_id(name: str, value: object) -> str | None:
    return None if value is None else check_scope_id(name, value)


def check_number(name: str, value: object) -> Number:
    """A finite number (not a bool), or ``InvalidArgument``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be finite, got {value!r}")
    return value


def check_optional_number(name: str, value: object) -> Number | None:
    return None if value is None else check_number(name, value)


def check_values(name: str, value: object) -> tuple[str, ...] | None:
    """None, or a sequence of strings (a lone string is refused: it is not a list)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidArgument(f"{name} must be a list of strings, got {type(value).__name__}")
    if not all(isinstance(item, str) for item in value):
        raise InvalidArgument(f"{name} must hold only strings")
    return tuple(value)


def check_fallback(name: str, value: object) -> Mapping[str, Any] | None:
    """None, or a mapping of answer field names (checked against the getter later)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise InvalidArgument(f"{name} must map answer field names to values")
    return value


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise InvalidArgument(f"{name} must be > 0, got {value!r}")
