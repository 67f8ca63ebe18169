"""The edge stub (``python -m cache_pipeline.dev edge-stub``) as a real process on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from cache_pipeline.client.upstream import API_KEY_HEADER, entitlements_url
from tests.support.servers import AWS_TEST_ENV, end_process, free_port, wait_until

STUB_API_KEY = "stub-test-key"


class EdgeStub:
    """An edge stub process with its own JSON file; ``stop()`` ends it by pid."""

    def __init__(
        self,
        *,
        latency_ms: int = 0,
        env: dict[str, str] | None = None,
        data_file: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="edge-stub-"))
        self.file = data_file or self.dir / "edge-data.json"
        self.latency_ms = latency_ms
        self.env = {"SERVER_API_KEY": STUB_API_KEY, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> EdgeStub:
        args = [
            sys.executable,
            "-m",
            "cache_pipeline.dev",
            "edge-stub",
            "--file",
            str(self.file),
            "--port",
            str(self.port),
            "--latency-ms",
            str(self.latency_ms),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **AWS_TEST_ENV, **self.env},
            )
        # Stopped at interpreter exit too, should a test forget stop().
        weakref.finalize(self, end_process, self.process)
        wait_until(self._ready, timeout=30, what=f"edge stub on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"edge stub exited: {self.log.read_text()[-2000:]}")
        with httpx.Client(base_url=self.url, timeout=1) as http:
            return http.get("/_stub/requests").status_code == 200

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {API_KEY_HEADER: STUB_API_KEY, **kwargs.pop("headers", {})}
        with httpx.Client(base_url=self.url, timeout=10) as http:
            return http.request(method, path, headers=headers, **kwargs)

    def scope_request(
        self, method: str, customer: str, resource: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """``method`` on ``/v1/c/{customer}/entitlements.json[?resourceId=]``, ids raw."""
        return self.request(method, entitlements_url("", customer, resource), **kwargs)

    def get(self, customer: str, resource: str | None = None) -> httpx.Response:
        """The Edge API call Stigg's SDK makes for a scope."""
        return self.scope_request("GET", customer, resource)

    def put(
        self, customer: str, body: dict[str, Any], resource: str | None = None
    ) -> dict[str, Any]:
        """Store a scope (``{"timestamp"?, "accessDeniedReason"?, "entitlements", "credits"?}``).

        Returns the stored scope: its ``timestamp`` and its ``entitlements.updated`` data.
        """
        response = self.scope_request("PUT", customer, resource, json=body)
        if response.status_code != 200:
            raise AssertionError(
                f"the stub refused the PUT: {response.status_code} {response.text}"
            )
        answer: dict[str, Any] = response.json()
        return answer

    def delete(self, customer: str, resource: str | None = None) -> httpx.Response:
        return self.scope_request("DELETE", customer, resource)

    def requests(self, customer: str, resource: str | None = None) -> int:
        """How many entitlement GETs the stub answered for one scope."""
        params = {"customerId": customer}
        if resource is not None:
            params["resourceId"] = resource
        count: int = self.request("GET", "/_stub/requests", params=params).json()["count"]
        return count

    def stop(self) -> None:
        end_process(self.process)
        self.process = None

    def restart(self) -> EdgeStub:
        self.stop()
        return self.start()


def feature(
    ref_id: str,
    feature_type: str = "BOOLEAN",
    meter_type: str | None = "None",
    **fields: Any,
) -> dict[str, Any]:
    """An Edge API entry (partial, as the stub accepts it): the feature, then ``fields``."""
    entry: dict[str, Any] = {
        "feature": {"refId": ref_id, "featureType": feature_type, "meterType": meter_type}
    }
    return entry | fields


def metered(ref_id: str, used: float, limit: float | None = 10, **fields: Any) -> dict[str, Any]:
    """A metered (NUMBER, Fluctuating) Edge entry with its usage."""
    return feature(ref_id, "NUMBER", "Fluctuating", usageLimit=limit, currentUsage=used, **fields)


def snapshot_body(
    *,
    features: Mapping[str, int | None] | None = None,
    credits: Mapping[str, int | None] | None = None,
    limit: int = 10,
    credit_limit: int = 1000,
    denied: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A PUT body for the stub.

    ``features`` maps a feature id to its current usage (a metered entry with ``limit``)
    or None (a BOOLEAN entry); ``credits`` maps a currency id to its current usage
    (None: 0) with ``credit_limit``; ``denied`` is the scope's ``accessDeniedReason``.
    """
    entries = [
        feature(ref_id) if used is None else metered(ref_id, used, limit)
        for ref_id, used in (features or {}).items()
    ]
    body: dict[str, Any] = {"accessDeniedReason": denied, "entitlements": entries}
    if credits is not None:
        body["credits"] = [
            {"currencyId": currency, "currentUsage": used or 0, "usageLimit": credit_limit}
            for currency, used in credits.items()
        ]
    if timestamp is not None:
        body["timestamp"] = timestamp
    return body
