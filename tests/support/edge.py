"""The edge stub (``cache-pipeline edge-stub``) as a real process on a free port."""

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

from cache_pipeline.upstream import API_KEY_HEADER
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
            "cli",
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

    def put(
        self, customer: str, body: dict[str, Any], resource: str | None = None
    ) -> dict[str, Any]:
        """Store a snapshot (``{"timestamp"?, "accessDeniedReason"?, "entitlements"}``)."""
        params = {"resourceId": resource} if resource is not None else {}
        response = self.request(
            "PUT", f"/v1/customers/{customer}/entitlements", json=body, params=params
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

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


def snapshot_body(
    *,
    features: Mapping[str, int | None] | None = None,
    credits: Mapping[str, int | None] | None = None,
    limit: int = 10,
    credit_limit: int = 1000,
    denied: str | None = None,
    timestamp: int | None = None,
) -> dict[str, Any]:
    """A PUT body for the stub: ``features``/``credits`` map id -> current usage (None: none)."""
    items: list[dict[str, Any]] = []
    for kind, entries, cap in (("FEATURE", features, limit), ("CREDIT", credits, credit_limit)):
        for item_id, used in (entries or {}).items():
            item: dict[str, Any] = {"kind": kind, "id": item_id, "hasAccess": True}
            item["usageLimit"] = cap
            if used is not None:
                item["usage"] = {"currentUsage": used, "usagePeriodStart": 1, "usagePeriodEnd": 2}
            items.append(item)
    body: dict[str, Any] = {"accessDeniedReason": denied, "entitlements": items}
    if timestamp is not None:
        body["timestamp"] = timestamp
    return body
