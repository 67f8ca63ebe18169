"""Client of Stigg's Edge API, called as Stigg's Node SDK 3.95.0 calls it .

``GET {EDGE_API_URL}/v1/c/{customerId}/entitlements.json[?resourceId={resourceId}]``
with the ids raw in the URL (only what URL parsing changes, e.g. a space → ``%20``;
ids with ``/ ? & #`` are refused with ``InvalidArgument`` instead of corrupting the
URL), headers ``X-API-KEY``, ``X-API-VERSION: 1``, ``Accept: application/json``.
The answer ``{"data": {"entitlements": [...]}}``; a 200 with non-empty ``errors``
is an error. Timeouts, network errors, 429 and 5xx are retried at most
``retries`` times after ``2^n * base_delay`` plus 0-20 % jitter, all under one
time budget: a retry happens only while the remaining budget exceeds its delay,
and each attempt may use what remains. 4xx are not retried. httpx errors become
``UpstreamUnavailable`` (retries exhausted, may heal) or ``UpstreamError``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from cache_pipeline import __version__
from cache_pipeline.contract.dates import now_ms
from cache_pipeline.contract.scopes import check_edge_id
from cache_pipeline.errors import (
    InvalidArgument,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRefused,
    UpstreamUnavailable,
)

API_KEY_HEADER = "X-API-KEY"
API_VERSION_HEADER = "X-API-VERSION"


@dataclass(frozen=True, slots=True)
class EdgeOptions:
    """Where the Edge API lives and how patiently it is asked (defaults: Stigg's)."""

    url: str
    api_key: str | None = None
    budget_seconds: float = 10.0
    retries: int = 3
    base_delay_seconds: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise InvalidArgument(f"Edge API URL {self.url!r} is not an http(s) URL")
        if self.budget_seconds <= 0 or self.retries < 0 or self.base_delay_seconds < 0:
            raise InvalidArgument("Edge API budget must be > 0, retries and base delay >= 0")

    def headers(self) -> dict[str, str]:
        """The headers of every Edge API request."""
        headers = {
            "Accept": "application/json",
            API_VERSION_HEADER: "1",
            "User-Agent": f"cache-pipeline/{__version__}",
        }
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        return headers

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based): ``2^retry * base`` + 0-20 %."""
        delay: float = (1 << retry) * self.base_delay_seconds
        return delay + delay * self.jitter * random.random()


@dataclass(frozen=True, slots=True)
class EdgeAnswer:
    """The Edge API's entitlement entries as received, and when the request started (epoch ms)."""

    entitlements: list[dict[str, Any]]
    requested_at_ms: int


def entitlements_url(base_url: str, customer_id: str, resource_id: str | None = None) -> str:
    """The URL Stigg's SDK requests: ids interpolated raw, ``?resourceId=`` when set."""
    customer = check_edge_id("customer_id", customer_id)
    url = f"{base_url.rstrip('/')}/v1/c/{customer}/entitlements.json"
    if resource_id:
        url += f"?resourceId={check_edge_id('resource_id', resource_id)}"
    return url


class _Retry(Exception):
    """An attempt failed in a way another attempt may not (``retriable``: worth one)."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


def interpret(response: httpx.Response) -> list[dict[str, Any]]:
    """A response → its entitlement entries, ``_Retry`` (429/5xx) or ``UpstreamError``.

    401 and 403 raise ``UpstreamRefused``, 404 ``UpstreamNotFound`` (both ``UpstreamError``).
    """
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retry(f"the Edge API answered {status}")
    if status in (401, 403):
        raise UpstreamRefused(f"the Edge API refused the API key ({status}): {response.text[:200]}")
    if status == 404:
        raise UpstreamNotFound(f"the Edge API answered 404: {response.text[:200]}")
    if not 200 <= status < 300:
        raise UpstreamError(f"the Edge API answered {status}: {response.text[:200]}")
    try:
        body = json.loads(response.content)
    except ValueError:
        raise UpstreamError("the Edge API answered a body that is not JSON") from None
    if not isinstance(body, dict):
        raise UpstreamError("the Edge API answered a body that is not a JSON object")
    if body.get("errors"):
        raise UpstreamError(f"the Edge API answered errors: {str(body['errors'])[:200]}")
    return entries(body)


def entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    """``data.entitlements`` checked just enough: a list of objects, string ``feature.refId``."""
    data = body.get("data")
    found = data.get("entitlements") if isinstance(data, dict) else None
    if not isinstance(found, list):
        raise UpstreamError("the Edge API answer has no data.entitlements list")
    for index, entry in enumerate(found):
        if not isinstance(entry, dict):
            raise UpstreamError(f"data.entitlements[{index}] is not an object")
        feature = entry.get("feature")
        if feature is not None and (
            not isinstance(feature, dict) or not isinstance(feature.get("refId", ""), str)
        ):
            raise UpstreamError(f"data.entitlements[{index}].feature.refId is not a string")
    return found


class _Budget:
    """One call's time budget and retry count, shared by the sync and asyncio clients."""

    def __init__(self, options: EdgeOptions) -> None:
        self.options = options
        self.deadline = time.monotonic() + options.budget_seconds
        self.retries = 0

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def next_delay(self, error: _Retry) -> float:
        """Seconds to wait before the next attempt, or ``UpstreamUnavailable``."""
        if not error.retriable:
            raise UpstreamUnavailable(f"Edge API unavailable: {error}") from None
        self.retries += 1
        delay = self.options.delay(self.retries)
        if self.retries > self.options.retries or self.deadline - time.monotonic() <= delay:
            raise UpstreamUnavailable(f"Edge API unavailable: {error}") from None
        return delay


def _transport_error(exc: httpx.TransportError) -> _Retry:
    """A connection that could not be made (refused, no route, no such host) is not
    retried: the caller's request waits for nothing (Stigg's SDK retries a refusal after
    4 s); the reader then rests the Edge API for a while. Timeouts and broken answers are
    retried as Stigg's SDK retries them."""
    return _Retry(f"{type(exc).__name__}: {exc}", retriable=not isinstance(exc, httpx.ConnectError))


class EdgeClient:
    """Synchronous Edge API client (one connection pool, thread-safe)."""

    def __init__(self, options: EdgeOptions, http: httpx.Client | None = None) -> None:
        self.options = options
        self._owns_http = http is None
        self._http = http or httpx.Client(headers=options.headers(), follow_redirects=False)

    def fetch(self, customer_id: str, resource_id: str | None = None) -> EdgeAnswer:
        """The scope's entitlement entries (an empty list for an unknown customer).

        Raises ``InvalidArgument`` for an id that cannot go raw into the URL,
        ``UpstreamUnavailable`` when the retries or the budget ran out,
        ``UpstreamError`` at once for answers that retrying will not change.
        """
        url = entitlements_url(self.options.url, customer_id, resource_id)
        headers = self.options.headers()  # also on a client handed in
        requested_at, budget = now_ms(), _Budget(self.options)
        while True:
            try:
                try:
                    response = self._http.get(url, headers=headers, timeout=budget.remaining())
                except httpx.TransportError as exc:
                    raise _transport_error(exc) from None
                return EdgeAnswer(interpret(response), requested_at)
            except _Retry as exc:
                time.sleep(budget.next_delay(exc))
            except httpx.HTTPError as exc:
                raise UpstreamError(f"the Edge API call failed: {exc!r}") from None

    def close(self) -> None:
        """Close the connection pool, unless it was handed in."""
        if self._owns_http:
            self._http.close()


class AsyncEdgeClient:
    """asyncio Edge API client, same behaviour as ``EdgeClient``."""

    def __init__(self, options: EdgeOptions, http: httpx.AsyncClient | None = None) -> None:
        self.options = options
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(headers=options.headers(), follow_redirects=False)

    async def fetch(self, customer_id: str, resource_id: str | None = None) -> EdgeAnswer:
        """See ``EdgeClient.fetch``."""
        url = entitlements_url(self.options.url, customer_id, resource_id)
        headers = self.options.headers()  # also on a client handed in
        requested_at, budget = now_ms(), _Budget(self.options)
        while True:
            try:
                try:
                    response = await self._http.get(
                        url, headers=headers, timeout=budget.remaining()
                    )
                except httpx.TransportError as exc:
                    raise _transport_error(exc) from None
                return EdgeAnswer(interpret(response), requested_at)
            except _Retry as exc:
                await asyncio.sleep(budget.next_delay(exc))
            except httpx.HTTPError as exc:
                raise UpstreamError(f"the Edge API call failed: {exc!r}") from None

    async def aclose(self) -> None:
        """Close the connection pool, unless it was handed in."""
        if self._owns_http:
            await self._http.aclose()


__all__ = [
    "API_KEY_HEADER",
    "AsyncEdgeClient",
    "EdgeAnswer",
    "EdgeClient",
    "EdgeOptions",
    "entitlements_url",
    "entries",
    "interpret",
]
