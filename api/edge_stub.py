"""A small upstream entitlements API for local development and tests.

It serves the contract of docs/upstream-api.yaml from a JSON file
(``{"snapshots": [{"timestamp": ms, "data": <entitlements.updated data>}, ...]}``)
and, when its data changes (PUT, DELETE, or ``POST /v1/reload`` after editing
the file), publishes the matching ``entitlements.updated`` or
``cache.invalidated`` message to QUEUE_URL when one is configured, so the local
stack shows the whole loop: stub → SQS → worker → Redis ← reader SDK.

``GET /_stub/requests`` counts the entitlement requests it answered (per scope),
which is how tests see that concurrent cache misses made one upstream call.
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

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cache_pipeline.config import Settings
from cache_pipeline.errors import ConfigError
from cache_pipeline.logs import configure_logging
from cache_pipeline.messages import Entitlement, EntitlementsData, EpochMs
from cache_pipeline.upstream import API_KEY_HEADER, UpstreamAnswer

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

Scope = tuple[str, str | None]
ResourceId = Annotated[str | None, Query(alias="resourceId", min_length=1, max_length=256)]


class SnapshotFile(BaseModel):
    """The stub's JSON file."""

    model_config = ConfigDict(extra="forbid")

    snapshots: list[UpstreamAnswer] = Field(default_factory=list)


class SnapshotUpdate(BaseModel):
    """Body of ``PUT /v1/customers/{customerId}/entitlements``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    timestamp: EpochMs | None = None
    access_denied_reason: str | None = Field(default=None, alias="accessDeniedReason")
    entitlements: list[Entitlement]


def load_snapshots(path: Path) -> dict[Scope, UpstreamAnswer]:
    """The snapshots of the file (none when it does not exist yet).

    Raises ``ConfigError`` naming the file and the first problem.
    """
    if not path.exists():
        return {}
    try:
        parsed = SnapshotFile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise ConfigError(f"edge stub file {path} is not usable: {_short(exc)}") from None
    return {(a.data.customer_id, a.data.resource_id): a for a in parsed.snapshots}


def save_snapshots(path: Path, snapshots: dict[Scope, UpstreamAnswer]) -> None:
    """Write the file atomically (temporary file, then rename)."""
    ordered = sorted(snapshots.items(), key=lambda item: (item[0][0], item[0][1] or ""))
    body = {"snapshots": [_answer_json(answer) for _, answer in ordered]}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


@dataclass
class Publisher:
    """Sends change messages to the queue, when one is configured."""

    environment: str
    queue_url: str | None = None
    client: SQSClient | None = None

    def publish(self, message: dict[str, Any]) -> bool:
        if self.client is None or self.queue_url is None:
            return False
        message = {"id": str(uuid.uuid4()), "environment": self.environment, **message}
        from cache_pipeline.sqs import send_bodies

        try:
            send_bodies(self.client, self.queue_url, [json.dumps(message)])
        except Exception as exc:  # the stub keeps serving; the cache heals on a miss
            logger.warning("edge stub could not publish {}: {!r}", message["type"], exc)
            return False
        return True


@dataclass
class EdgeData:
    """The stub's state: snapshots by scope, request counts, the file behind them."""

    path: Path
    publisher: Publisher
    snapshots: dict[Scope, UpstreamAnswer] = field(default_factory=dict)
    requests: Counter[Scope] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, scope: Scope) -> UpstreamAnswer | None:
        """The snapshot of a scope; a resource scope's version covers its global entry."""
        with self.lock:
            self.requests[scope] += 1
            found = self.snapshots.get(scope)
            parent = self.snapshots.get((scope[0], None)) if scope[1] is not None else None
        if found is None or parent is None or parent.timestamp <= found.timestamp:
            return found
        return found.model_copy(update={"timestamp": parent.timestamp})

    def put(self, scope: Scope, update: SnapshotUpdate) -> tuple[UpstreamAnswer, bool]:
        """Store a snapshot; return it and whether the data changed (then it is published)."""
        data = EntitlementsData(
            customer_id=scope[0],
            resource_id=scope[1],
            access_denied_reason=update.access_denied_reason,
            entitlements=update.entitlements,
        )
        with self.lock:
            previous = self.snapshots.get(scope)
            if previous is not None and _same(previous.data, data):
                return previous, False
            version = _next_version(previous, update.timestamp)
            answer = UpstreamAnswer(timestamp=version, data=data)
            self.snapshots[scope] = answer
            save_snapshots(self.path, self.snapshots)
            self.publisher.publish(_updated_message(answer))
        return answer, True

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
            changed = [a for s, a in fresh.items() if not _same_answer(self.snapshots.get(s), a)]
            removed = [s for s in self.snapshots if s not in fresh]
            self.snapshots = fresh
            for answer in changed:
                self.publisher.publish(_updated_message(answer))
            if removed:
                self.publisher.publish(_invalidated_message(removed, _now_ms()))
        return {"changed": len(changed), "removed": len(removed)}


def create_app(data: EdgeData, api_key: str | None, latency_ms: int = 0) -> FastAPI:
    """The stub's FastAPI application."""
    app = FastAPI(title="cache-pipeline edge stub", docs_url=None, redoc_url=None)

    def require_key(key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None) -> None:
        if api_key is not None and (key is None or not secrets.compare_digest(key, api_key)):
            raise HTTPException(401, "missing or wrong API key")

    guarded = [Depends(require_key)]

    @app.exception_handler(ConfigError)
    async def _bad_file(request: Request, exc: ConfigError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/v1/customers/{customer_id}/entitlements", dependencies=guarded)
    def get_entitlements(customer_id: str, resource_id: ResourceId = None) -> Response:
        if latency_ms:
            time.sleep(latency_ms / 1000)
        answer = data.answer((customer_id, resource_id))
        if answer is None:
            raise HTTPException(404, "unknown customer or resource")
        return JSONResponse(_answer_json(answer))

    @app.put("/v1/customers/{customer_id}/entitlements", dependencies=guarded)
    def put_entitlements(
        customer_id: str, update: SnapshotUpdate, response: Response, resource_id: ResourceId = None
    ) -> dict[str, Any]:
        answer, changed = data.put((customer_id, resource_id), update)
        response.headers["X-Stub-Changed"] = "1" if changed else "0"
        return _answer_json(answer)

    @app.delete("/v1/customers/{customer_id}/entitlements", dependencies=guarded, status_code=204)
    def delete_entitlements(customer_id: str, resource_id: ResourceId = None) -> None:
        if not data.delete((customer_id, resource_id)):
            raise HTTPException(404, "unknown customer or resource")

    @app.get("/v1/customers", dependencies=guarded)
    def list_customers() -> dict[str, Any]:
        with data.lock:
            scopes = sorted(data.snapshots, key=lambda s: (s[0], s[1] or ""))
        return {"customers": [{"customerId": c, "resourceId": r} for c, r in scopes]}

    @app.post("/v1/reload", dependencies=guarded)
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
    publisher = Publisher(settings.environment_prefix, settings.queue_url)
    if settings.queue_url:
        from cache_pipeline.sqs import sqs_client  # boto3 only when there is a queue

        publisher.client = sqs_client(settings)
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


def _answer_json(answer: UpstreamAnswer) -> dict[str, Any]:
    return answer.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _updated_message(answer: UpstreamAnswer) -> dict[str, Any]:
    return {"type": "entitlements.updated", **_answer_json(answer)}


def _invalidated_message(scopes: list[Scope], timestamp: int) -> dict[str, Any]:
    customers = [{"customerId": c, "resourceId": r} for c, r in scopes]
    return {"type": "cache.invalidated", "timestamp": timestamp, "data": {"customers": customers}}


def _same(left: EntitlementsData, right: EntitlementsData) -> bool:
    return left.model_dump(mode="json", exclude_none=True) == right.model_dump(
        mode="json", exclude_none=True
    )


def _same_answer(left: UpstreamAnswer | None, right: UpstreamAnswer) -> bool:
    return left is not None and left.timestamp == right.timestamp and _same(left.data, right.data)


def _next_version(previous: UpstreamAnswer | None, wanted: int | None) -> int:
    """The given version, or now (in ms) but always after the previous one."""
    floor = previous.timestamp + 1 if previous is not None else 1
    return max(wanted, floor) if wanted is not None else max(_now_ms(), floor)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors(include_url=False, include_input=False)[0]
        return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
    return str(exc)
