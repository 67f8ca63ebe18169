"""What the sync and asyncio readers share away from I/O: settings, checks, keys, answers."""

from __future__ import annotations

import logging
import time
from typing import Any

from cache_pipeline.client.local import LocalCache, ScopeKey
from cache_pipeline.client.models import CustomerEntitlements, Kind
from cache_pipeline.client.options import (
    ReaderOptions,
    check_id,
    check_optional_id,
    resolve_settings,
)
from cache_pipeline.client.reading import Scope
from cache_pipeline.client.results import customer_not_found, from_upstream
from cache_pipeline.config import Settings
from cache_pipeline.errors import UpstreamError, UpstreamUnavailable
from cache_pipeline.keys import KeyLayout
from cache_pipeline.upstream import UpstreamAnswer

logger = logging.getLogger(__name__)

# What an upstream fetch may raise that the readers answer from the cache instead.
UPSTREAM_TROUBLE: tuple[type[Exception], ...] = (UpstreamUnavailable, UpstreamError)


class ReaderBase:
    """Settings, options, key layout, the in-process cache and the Redis back-off.

    ``EntitlementsCache`` and ``AsyncEntitlementsCache`` add the clients and the I/O.
    """

    def __init__(
        self, settings: Settings | None, options: ReaderOptions | None, overrides: dict[str, Any]
    ) -> None:
        self.settings = resolve_settings(settings, overrides)
        self.options = options or ReaderOptions()
        self.layout = KeyLayout(self.settings.environment_prefix, self.settings.redis_cluster)
        self.local = LocalCache(self.options.local_ttl_seconds, self.options.local_max_entries)
        self._redis_down_until = 0.0

    def _scope(
        self, customer_id: str, resource_id: str | None, only: tuple[Kind, str] | None
    ) -> Scope:
        """The checked ids and key names of one read, before any I/O.

        With the in-process cache on, a single check reads the whole scope (it is kept).
        """
        return Scope.build(
            self.layout,
            check_id("customer_id", customer_id),
            check_optional_id("resource_id", resource_id),
            None if self.local.enabled else only,
        )

    def _from_local(self, scope: Scope) -> CustomerEntitlements | None:
        return self.local.get(_local_key(scope))

    def _keep_local(self, scope: Scope, result: CustomerEntitlements) -> None:
        """Keep an answer in the in-process cache, unless it is stale."""
        if not result.stale:
            self.local.put(_local_key(scope), result)

    def _redis_resting(self) -> bool:
        """True while Redis is skipped after a failure (``redis_retry_after_seconds``)."""
        return time.monotonic() < self._redis_down_until

    def _cache_trouble(self, what: str, exc: BaseException) -> None:
        logger.warning("cache %s failed, using the upstream API: %r", what, exc)
        self._redis_down_until = time.monotonic() + self.options.redis_retry_after_seconds


def only_feature(feature_id: str) -> tuple[Kind, str]:
    """The entry a ``get_entitlement`` call needs, its id checked."""
    return "FEATURE", check_id("feature_id", feature_id)


def only_credit(currency_id: str) -> tuple[Kind, str]:
    """The entry a ``get_credit_entitlement`` call needs, its id checked."""
    return "CREDIT", check_id("currency_id", currency_id)


def upstream_result(scope: Scope, answer: UpstreamAnswer | None) -> CustomerEntitlements:
    """The upstream's answer for a scope; None (404) means the customer is unknown."""
    if answer is None:
        return customer_not_found(scope.customer_id, scope.resource_id)
    return from_upstream(answer.data, answer.timestamp)


def _local_key(scope: Scope) -> ScopeKey:
    return scope.customer_id, scope.resource_id
