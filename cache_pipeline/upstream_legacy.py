"""LEFTOVER of contract v1, to delete at integration: the old upstream API client.

Still used by client/sync.py, client/aio.py, client/base.py, client/options.py,
resync.py and api/edge_stub.py (re-exported by ``cache_pipeline.upstream``); the
Edge API client of contract v2 is ``cache_pipeline.upstream.EdgeClient``.

HTTP client of the upstream entitlements API (docs/upstream-api.yaml).

``GET {EDGE_API_URL}/v1/customers/{customerId}/entitlements?resourceId=`` with
the API key in the ``X-API-KEY`` header answers ``{"timestamp": ms, "data":
<entitlements.updated data>}``; 404 means the customer (or resource) is unknown.

The GET is idempotent, so connection errors, timeouts, 429 and 5xx are retried
with exponential backoff and jitter; every attempt has its own timeout, so one
call takes at most about ``timeout * (retries + 1) + backoff``. httpx errors
are translated here into ``UpstreamUnavailable`` (may heal) or ``UpstreamError``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel
from redis.backoff import EqualJitterBackoff

from cache_pipeline import __version__
from cache_pipeline.errors import UpstreamError, UpstreamUnavailable
from cache_pipeline.messages import (
    CustomerRef,
    EntitlementsData,
    EntitlementsUpdated,
    EpochMs,
)

API_KEY_HEADER = "X-API-KEY"
RETRIED_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class _Json(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, strict=True, frozen=True
    )


class UpstreamAnswer(_Json):
    """The upstream's answer: an entitlements snapshot and the version it carries."""

    timestamp: EpochMs
    data: EntitlementsData

    def to_message(self) -> EntitlementsUpdated:
        """The ``entitlements.updated`` message that writes this answer to the cache."""
        return EntitlementsUpdated(
            id=f"sdk-{uuid.uuid4()}",
            type="entitlements.updated",
            timestamp=self.timestamp,
            data=self.data,
        )


class CustomerList(_Json):
    """Answer of ``GET /v1/customers``: every customer scope the upstream knows."""

    customers: list[CustomerRef]


@dataclass(frozen=True, slots=True)
class UpstreamOptions:
    """Where the upstream lives and how patiently it is asked."""

    url: str
    api_key: str | None = None
    timeout: float = 2.0
    retries: int = 2
    backoff_base: float = 0.05
    backoff_cap: float = 1.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"upstream URL {self.url!r} is not an http(s) URL")
        if self.timeout <= 0 or self.retries < 0 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("upstream timeout must be > 0, retries and backoff >= 0")

    def client_arguments(self) -> dict[str, Any]:
        """Keyword arguments shared by httpx.Client and httpx.AsyncClient."""
        headers = {"User-Agent": f"cache-pipeline/{__version__}", "Accept": "application/json"}
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        return {
            "base_url": self.url,
            "headers": headers,
            "timeout": httpx.Timeout(self.timeout),
            "follow_redirects": False,
        }

    def delays(self) -> list[float]:
        """Backoff before each retry: exponential, capped, with jitter."""
        backoff = EqualJitterBackoff(cap=self.backoff_cap, base=self.backoff_base)
        return [backoff.compute(attempt) for attempt in range(1, self.retries + 1)]


def entitlements_path(customer_id: str) -> str:
    return f"v1/customers/{quote(customer_id, safe='')}/entitlements"


def scope_params(resource_id: str | None) -> dict[str, str]:
    return {} if resource_id is None else {"resourceId": resource_id}


class _Retry(Exception):
    """An attempt failed in a way another attempt may not."""


def interpret(
    response: httpx.Response, customer_id: str, resource_id: str | None
) -> UpstreamAnswer | None:
    """A response → the answer, None for an unknown customer, or an error."""
    status = response.status_code
    if status == 404:
        return None
    if status in RETRIED_STATUS:
        raise _Retry(f"the upstream API answered {status}")
    if status in (401, 403):
        raise UpstreamError(f"the upstream API refused the API key ({status})")
    if status != 200:
        raise UpstreamError(f"the upstream API answered {status}: {response.text[:200]}")
    try:
        answer = UpstreamAnswer.model_validate_json(response.content)
    except ValidationError as exc:
        raise UpstreamError(f"the upstream API answered an invalid body: {_first(exc)}") from None
    if answer.data.customer_id != customer_id or answer.data.resource_id != resource_id:
        raise UpstreamError(
            f"the upstream API answered for {answer.data.customer_id!r}/"
            f"{answer.data.resource_id!r}, not {customer_id!r}/{resource_id!r}"
        )
    return answer


def _first(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


class UpstreamClient:
    """Synchronous upstream client (one connection pool, thread-safe)."""

    def __init__(self, options: UpstreamOptions, http: httpx.Client | None = None) -> None:
        self.options = options
        self._owns_http = http is None
        self._http = http or httpx.Client(**options.client_arguments())

    def fetch(self, customer_id: str, resource_id: str | None = None) -> UpstreamAnswer | None:
        """The scope's snapshot, or None when the upstream does not know it.

        Raises ``UpstreamUnavailable`` after the retries, ``UpstreamError`` at once
        for answers that retrying will not change.
        """
        path, params = entitlements_path(customer_id), scope_params(resource_id)
        delays = self.options.delays()
        while True:
            try:
                return interpret(self._http.get(path, params=params), customer_id, resource_id)
            except (httpx.TransportError, _Retry) as exc:
                if not delays:
                    raise UpstreamUnavailable(f"upstream API unavailable: {exc!r}") from None
                time.sleep(delays.pop(0))
            except httpx.HTTPError as exc:
                raise UpstreamError(f"the upstream API call failed: {exc!r}") from None

    def customers(self) -> list[CustomerRef]:
        """Every customer scope the upstream knows (``GET /v1/customers``)."""
        try:
            response = self._http.get("v1/customers")
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(f"upstream API unavailable: {exc!r}") from None
        if response.status_code != 200:
            raise UpstreamError(f"the upstream API answered {response.status_code}")
        try:
            return CustomerList.model_validate_json(response.content).customers
        except ValidationError as exc:
            raise UpstreamError(
                f"the upstream API answered an invalid body: {_first(exc)}"
            ) from None

    def close(self) -> None:
        """Close the connection pool, unless it was handed in."""
        if self._owns_http:
            self._http.close()


class AsyncUpstreamClient:
    """asyncio upstream client, same behaviour as ``UpstreamClient``."""

    def __init__(self, options: UpstreamOptions, http: httpx.AsyncClient | None = None) -> None:
        self.options = options
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(**options.client_arguments())

    async def fetch(
        self, customer_id: str, resource_id: str | None = None
    ) -> UpstreamAnswer | None:
        """See ``UpstreamClient.fetch``."""
        path, params = entitlements_path(customer_id), scope_params(resource_id)
        delays = self.options.delays()
        while True:
            try:
                response = await self._http.get(path, params=params)
                return interpret(response, customer_id, resource_id)
            except (httpx.TransportError, _Retry) as exc:
                if not delays:
                    raise UpstreamUnavailable(f"upstream API unavailable: {exc!r}") from None
                await asyncio.sleep(delays.pop(0))
            except httpx.HTTPError as exc:
                raise UpstreamError(f"the upstream API call failed: {exc!r}") from None

    async def aclose(self) -> None:
        """Close the connection pool, unless it was handed in."""
        if self._owns_http:
            await self._http.aclose()
