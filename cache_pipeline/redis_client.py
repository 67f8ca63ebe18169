"""Redis connections built from settings: plain, ACL, TLS, or Redis Cluster."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from cache_pipeline.config import Settings
from cache_pipeline.errors import StoreError
from cache_pipeline.store import RedisClient, translate_errors


def connection_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments shared by the sync and asyncio clients."""
    options: dict[str, Any] = {
        "host": settings.redis_host,
        "port": settings.redis_port,
        "username": settings.redis_username,
        "password": settings.redis_password.get_secret_value() if settings.redis_password else None,
        "socket_timeout": settings.redis_timeout_secs,
        "socket_connect_timeout": settings.redis_timeout_secs,
        "decode_responses": True,
        "health_check_interval": 30,
    }
    if settings.redis_tls:
        options["ssl"] = True
        options["ssl_cert_reqs"] = "required"
        if settings.redis_tls_ca_file:
            options["ssl_ca_certs"] = settings.redis_tls_ca_file
    return options


def connect(settings: Settings) -> RedisClient:
    """A client for the configured Redis.

    A single-node client sends nothing until it is used. A cluster client asks a
    node for the slot map at once; when that fails this raises
    ``StoreUnavailable`` (no node reachable) or ``StoreError`` (wrong credentials,
    cluster mode not enabled), never a bare redis-py error.
    """
    options = connection_options(settings)
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1)
    if settings.redis_cluster:
        return _cluster(retry, options)
    return redis.Redis(db=settings.redis_db, retry=retry, **options)


def _cluster(retry: Retry, options: dict[str, Any]) -> RedisCluster:
    try:
        return RedisCluster(retry=retry, **options)
    except RedisClusterException as exc:
        cause = exc.__cause__
        if isinstance(cause, redis.exceptions.RedisError | OSError):
            with translate_errors():
                raise cause from None
        raise StoreError(f"Redis Cluster cannot be used: {exc}") from None
