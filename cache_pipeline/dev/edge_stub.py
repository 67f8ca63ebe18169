"""A stand-in for Stigg's Edge API, for local development and tests.

``python -m cache_pipeline.dev edge-stub`` runs it.

It answers ``GET /v1/c/{customerId}/entitlements.json[?resourceId=]`` exactly as the
Edge does for Stigg's SDK (docs/stigg-compat.md §6; docs/upstream-api.yaml): header
``X-API-KEY`` required, ``{"data": {"entitlements": [...]}}`` with every field of the
Edge's entry, from a JSON file of scope snapshots
(``{"scopes": [{"customerId", "resourceId"?, "timestamp", "accessDeniedReason"?,
"entitlements": [<Edge entries>], "credits"?: [...]}]}``).

Stub extensions, not Edge API: ``PUT``/``DELETE`` on the same path store or forget a
scope, ``POST /_stub/reload`` re-reads the edited file, and each change publishes the
contract v2 message (``entitlements.updated`` with the served entries, or
``cache.invalidated``) to QUEUE_URL when one is configured, so the local stack shows
the whole loop: stub → SQS → worker → Redis ← reader. ``GET /_stub/scopes`` lists the
scopes (what ``python -m cache_pipeline.dev stub-scopes`` prints for
``cache-pipeline resync``) and ``GET /_stub/requests`` counts the entitlement GETs per
scope (how tests see that concurrent misses made one call).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.concurrency import run_in_threadpool

from cache_pipeline.client.upstream import API_KEY_HEADER
from cache_pipeline.config import Settings, WorkerSettings
from cache_pipeline.contract.scopes import scope_problem
from cache_pipeline.dev.edge_entries import (
    parse_json,
    served_credit,
    served_entry,
    snapshot_problem,
)
from cache_pipeline.errors import ConfigError
from cache_pipeline.ops.logs import configure_logging

if TYPE_CHECKING:
    from cache_pipeline.sqs.client import SqsQueue

Scope = tuple[str, str | None]
ResourceId = Annotated[str | None, Query(alias="resourceId", min_length=1, max_length=256)]
EDGE_PATH = "/v1/c/{customer_id}/entitlements.json"
_MAX_VERSION = 2**53 - 1


class StubError(Exception):
    """An error answer: ``{"errors": [{"message": ..., "extensions": {"code": ...}}]}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        error = {"message": self.message, "extensions": {"code": self.code}}
        return JSONResponse({"errors": [error]}, status_code=self.status)


def bad_input(message: str) -> StubError:
    return StubError(422, "BAD_USER_INPUT", message)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One scope as kept: its entries as given (validated), its version and credits."""

    customer_id: str
    resource_id: str | None
    timestamp: int
    access_denied_reason: str | None
    entitlements: list[dict[str, Any]]
    credits: list[dict[str, Any]] | None = None

    @property
    def scope(self) -> Scope:
        return self.customer_id, self.resource_id

    def content(self) -> tuple[Any, ...]:
        """What a change is judged on (not the version)."""
        return self.access_denied_reason, self.entitlements, self.credits

    def entries(self, version: int) -> list[dict[str, Any]]:
        """The Edge entries served for this scope, undated ones dated ``version``."""
        return [
            served_entry(entry, self.customer_id, self.resource_id, version)
            for entry in self.entitlements
        ]

    def message_data(self) -> dict[str, Any]:
        """The ``data`` of this scope's ``entitlements.updated`` (contract v2 §1)."""
        data: dict[str, Any] = {
            "customerId": self.customer_id,
            "resourceId": self.resource_id,
            "accessDeniedReason": self.access_denied_reason,
            "entitlements": self.entries(self.timestamp),
        }
        if self.credits is not None:
            data["credits"] = [served_credit(credit) for credit in self.credits]
        return data

    def to_json(self) -> dict[str, Any]:
        """The scope as the file keeps it."""
        kept: dict[str, Any] = {
            "customerId": self.customer_id,
            "resourceId": self.resource_id,
            "timestamp": self.timestamp,
            "accessDeniedReason": self.access_denied_reason,
            "entitlements": self.entitlements,
        }
        if self.credits is not None:
            kept["credits"] = self.credits
        return kept


def build_snapshot(scope: Scope, body: Any, timestamp: int) -> Snapshot:
    """A validated snapshot of ``scope``, or ``StubError`` 422 naming the first problem."""
    problem = scope_problem(*scope) or snapshot_problem(body, *scope)
    if problem is not None:
        raise bad_input(problem)
    return Snapshot(
        customer_id=scope[0],
        resource_id=scope[1],
        timestamp=timestamp,
        access_denied_reason=body.get("accessDeniedReason"),
        entitlements=list(body["entitlements"]),
        credits=None if body.get("credits") is None else list(body["credits"]),
    )


def load_snapshots(path: Path) -> dict[Scope, Snapshot]:
    """The scopes of the file (none when it does not exist yet).

    Raises ``ConfigError`` naming the file and the first problem.
    """
    if not path.exists():
        return {}
    try:
        document = parse_json(path.read_bytes())
        return _snapshots(document)
    except (OSError, ValueError, StubError) as exc:
        detail = exc.message if isinstance(exc, StubError) else str(exc)
        raise ConfigError(f"edge stub file {path} is not usable: {detail}") from None


def _snapshots(document: Any) -> dict[Scope, Snapshot]:
    if isinstance(document, dict) and "snapshots" in document:
        raise ValueError('it holds contract v1 "snapshots"; v2 expects {"scopes": [...]}')
    if not isinstance(document, dict) or not isinstance(document.get("scopes"), list):
        raise ValueError('expected {"scopes": [...]}')
    found: dict[Scope, Snapshot] = {}
    for index, item in enumerate(document["scopes"]):
        try:
            snapshot = _file_item(item)
        except StubError as exc:
            raise ValueError(f"scopes[{index}]: {exc.message}") from None
        if snapshot.scope in found:
            raise ValueError(f"scopes[{index}]: scope {snapshot.scope!r} appears twice")
        found[snapshot.scope] = snapshot
    return found


def _file_item(item: Any) -> Snapshot:
    if not isinstance(item, dict):
        raise bad_input("a scope must be a JSON object")
    body = dict(item)
    customer, resource = body.pop("customerId", None), body.pop("resourceId", None)
    if not isinstance(customer, str) or not (resource is None or isinstance(resource, str)):
        raise bad_input("customerId must be a string, resourceId a string or null")
    timestamp = body.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 1:
        raise bad_input("timestamp must be an integer of epoch ms > 0")
    return build_snapshot((customer, resource), body, timestamp)


def save_snapshots(path: Path, snapshots: dict[Scope, Snapshot]) -> None:
    """Write the file atomically (temporary file, then rename)."""
    ordered = sorted(snapshots.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    body = {"scopes": [snapshot.to_json() for _, snapshot in ordered]}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


@dataclass
class Publisher:
    """Sends change messages to the queue, when one is configured."""

    environment: str
    queue: SqsQueue | None = None

    def publish(self, message: dict[str, Any]) -> bool:
        if self.queue is None:
            return False
        message = {"id": str(uuid.uuid4()), "environment": self.environment, **message}
        try:
            self.queue.send([json.dumps(message, ensure_ascii=False)])
        except Exception as exc:  # the stub keeps serving; the cache heals on a miss
            logger.warning("edge stub could not publish {}: {!r}", message["type"], exc)
            return False
        return True


@dataclass
class EdgeData:
    """The stub's state: snapshots by scope, request counts, the file behind them."""

    path: Path
    publisher: Publisher
    snapshots: dict[Scope, Snapshot] = field(default_factory=dict)
    requests: Counter[Scope] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, scope: Scope) -> list[dict[str, Any]] | None:
        """The scope's Edge entries; a resource scope's are never dated before its global one."""
        with self.lock:
            self.requests[scope] += 1
            found = self.snapshots.get(scope)
            parent = self.snapshots.get((scope[0], None)) if scope[1] is not None else None
        if found is None:
            return None
        return found.entries(max(found.timestamp, parent.timestamp if parent else 0))

    def put(self, scope: Scope, body: Any) -> tuple[Snapshot, bool]:
        """Store a snapshot; return it and whether the data changed (then it is published)."""
        wanted = body.get("timestamp") if isinstance(body, dict) else None
        with self.lock:
            previous = self.snapshots.get(scope)
            snapshot = build_snapshot(scope, body, _next_version(previous, wanted))
            if previous is not None and previous.content() == snapshot.content():
                return previous, False
            self.snapshots[scope] = snapshot
            save_snapshots(self.path, self.snapshots)
            self.publisher.publish(_updated_message(snapshot))
        return snapshot, True

    def delete(self, scope: Scope) -> bool:
        """Forget a scope and publish its invalidation; False when it was unknown."""
        with self.lock:
            previous = self.snapshots.pop(scope, None)
            if previous is None:
                return False
            save_snapshots(self.path, self.snapshots)
            self.publisher.publish(_invalidated_message([scope], _next_version(previous, None)))
        return True

    def reload(self) -> dict[str, int]:
        """Re-read the file; publish every snapshot that changed and every one removed."""
        fresh = load_snapshots(self.path)
        with self.lock:
            changed = [s for k, s in fresh.items() if not _same(self.snapshots.get(k), s)]
            removed = [k for k in self.snapshots if k not in fresh]
            self.snapshots = fresh
            for snapshot in changed:
                self.publisher.publish(_updated_message(snapshot))
            if removed:
                self.publisher.publish(_invalidated_message(removed, _now_ms()))
        return {"changed": len(changed), "removed": len(removed)}

    def scopes(self) -> list[Scope]:
        with self.lock:
            return sorted(self.snapshots, key=lambda s: (s[0], s[1] or ""))


def create_app(data: EdgeData, api_key: str | None, latency_ms: int = 0) -> FastAPI:
    """The stub's FastAPI application."""
    app = FastAPI(title="cache-pipeline edge stub", docs_url=None, redoc_url=None)

    def require_key(key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None) -> None:
        if api_key is not None and (key is None or not secrets.compare_digest(key, api_key)):
            raise StubError(401, "UNAUTHENTICATED", "Invalid or missing API key")

    guarded = [Depends(require_key)]

    @app.exception_handler(StubError)
    async def _stub_error(request: Request, exc: StubError) -> Response:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError) -> Response:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error.get("loc", ()))
        return bad_input(f"{where}: {error.get('msg', 'invalid')}").response()

    @app.exception_handler(ConfigError)
    async def _bad_file(request: Request, exc: ConfigError) -> Response:
        return bad_input(str(exc)).response()

    @app.get(EDGE_PATH, dependencies=guarded)
    def get_entitlements(customer_id: str, resource_id: ResourceId = None) -> Response:
        if latency_ms:
            time.sleep(latency_ms / 1000)
        entries = data.answer((customer_id, resource_id))
        if entries is None:
            raise _not_found((customer_id, resource_id))
        return JSONResponse({"data": {"entitlements": entries}})

    @app.put(EDGE_PATH, dependencies=guarded)
    async def put_entitlements(
        customer_id: str, request: Request, response: Response, resource_id: ResourceId = None
    ) -> dict[str, Any]:
        try:
            body = parse_json(await request.body())
        except ValueError as exc:
            raise bad_input(f"the body is not JSON: {exc}") from None
        snapshot, changed = await run_in_threadpool(data.put, (customer_id, resource_id), body)
        response.headers["X-Stub-Changed"] = "1" if changed else "0"
        return {"timestamp": snapshot.timestamp, **snapshot.message_data()}

    @app.delete(EDGE_PATH, dependencies=guarded, status_code=204)
    def delete_entitlements(customer_id: str, resource_id: ResourceId = None) -> None:
        if not data.delete((customer_id, resource_id)):
            raise _not_found((customer_id, resource_id))

    @app.get("/_stub/scopes", dependencies=guarded)
    def list_scopes() -> dict[str, Any]:
        return {"scopes": [{"customerId": c, "resourceId": r} for c, r in data.scopes()]}

    @app.post("/_stub/reload", dependencies=guarded)
    def reload() -> dict[str, int]:
        return data.reload()

    @app.get("/_stub/requests")
    def requests(
        customer_id: Annotated[str | None, Query(alias="customerId")] = None,
        resource_id: ResourceId = None,
    ) -> dict[str, int]:
        with data.lock:
            total = sum(data.requests.values())
            count = data.requests[(customer_id, resource_id)] if customer_id else total
        return {"count": count, "total": total}

    return app


def build(settings: Settings, path: Path, latency_ms: int = 0) -> FastAPI:
    """The stub app for these settings: key from SERVER_API_KEY, queue from QUEUE_URL."""
    publisher = Publisher(settings.environment_prefix)
    if settings.queue_url:
        from cache_pipeline.sqs.client import SqsQueue  # botocore only when there is a queue

        publisher.queue = SqsQueue.from_settings(WorkerSettings.model_validate(dict(settings)))
    data = EdgeData(path, publisher, load_snapshots(path))
    key = settings.server_api_key.get_secret_value() if settings.server_api_key else None
    if key is None:
        logger.warning("SERVER_API_KEY is not set: the edge stub accepts every request")
    return create_app(data, key, latency_ms)


def serve(settings: Settings, path: Path, *, host: str, port: int, latency_ms: int = 0) -> None:
    """Run the stub with uvicorn until interrupted, logging JSON lines like the worker."""
    import uvicorn

    configure_logging(settings)
    app = build(settings, path, latency_ms)
    logger.info("edge stub on http://{}:{} backed by {}", host, port, path)
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None, log_level="warning")


def _not_found(scope: Scope) -> StubError:
    if scope[1] is None:
        return StubError(404, "CustomerNotFound", f"Customer {scope[0]!r} not found")
    return StubError(
        404, "CustomerResourceNotFound", f"Resource {scope[1]!r} of customer {scope[0]!r} not found"
    )


def _updated_message(snapshot: Snapshot) -> dict[str, Any]:
    data = snapshot.message_data()
    return {"type": "entitlements.updated", "timestamp": snapshot.timestamp, "data": data}


def _invalidated_message(scopes: list[Scope], timestamp: int) -> dict[str, Any]:
    customers = [{"customerId": c, "resourceId": r} for c, r in scopes]
    return {"type": "cache.invalidated", "timestamp": timestamp, "data": {"customers": customers}}


def _same(left: Snapshot | None, right: Snapshot) -> bool:
    return (
        left is not None and left.timestamp == right.timestamp and left.content() == right.content()
    )


def _next_version(previous: Snapshot | None, wanted: object) -> int:
    """The given version, or now (in ms) but always after the previous one."""
    floor = previous.timestamp + 1 if previous is not None else 1
    if isinstance(wanted, int) and not isinstance(wanted, bool) and 1 <= wanted <= _MAX_VERSION:
        return max(wanted, floor)
    return max(_now_ms(), floor)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
