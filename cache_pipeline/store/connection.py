"""Redis connections built from settings: plain, ACL, TLS, or Redis Cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from cache_pipeline.config import ReaderSettings
from cache_pipeline.errors import StoreError
from cache_pipeline.store.writer import RedisClient, translate_errors

T = TypeVar("T")


class StopAwareRetry(Retry):
    """redis-py's ``Retry``, except that a failure is not retried once ``stopped()`` is true.

    redis-py retries a connect, a health check and a command each on its own, and
    nests them (a command opens a connection, which runs its health check): against
    a Redis that accepts connections but never answers (SIGSTOPped, a frozen host)
    one call lasts several REDIS_TIMEOUT_SECS. Once the worker is stopping, the
    first timeout (or error) ends the call: every call in flight ends within about
    REDIS_TIMEOUT_SECS (twice that while it connects) of SIGTERM.
    """

    def __init__(self, backoff: Any, retries: int, stopped: Callable[[], bool]) -> None:
        super().__init__(backoff, retries)
        # A plain function: redis-py deep-copies its Retry into every connection, and a
        # function (unlike an Event or a bound method) is shared, not copied.
        self._stopped = stopped

    def call_with_retry(
        self, do: Callable[[], T], fail: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> T:
        stopped = self._stopped

        def failed(error: Exception, *more: Any) -> None:
            fail(error, *more)
            if stopped():
                raise error

        result: T = super().call_with_retry(do, failed, *args, **kwargs)
        return result


def ca_file_problem(settings: ReaderSettings) -> str | None:
    """Why REDIS_TLS_CA_FILE cannot be used, naming the file; None when it can, or when it
    is not used (unset, or REDIS_TLS=0).

    redis-py reports a missing CA file only when it connects, as ``Error 2 connecting
    to host:port. No such file or directory``, without the file's name.
    """
    path = settings.redis_tls_ca_file
    if path is None or not settings.redis_tls:
        return None
    try:
        with open(path, "rb") as opened:
            opened.read(1)
    except OSError as exc:
        return f"REDIS_TLS_CA_FILE={path!r} cannot be read: {exc.strerror or exc}"
    return None


def retry_backoff() -> ExponentialBackoff:
    """The wait before the one retry of a failed command on a new connection: 10 ms.

    Enough for a connection Redis closed (a restart, an idle timeout); short, because a
    refused connection is then what a reader's request path waits for before its fallback.
    """
    return ExponentialBackoff(cap=0.2, base=0.005)


def connection_options(settings: ReaderSettings) -> dict[str, Any]:
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


def connect(settings: ReaderSettings, stopped: Callable[[], bool] | None = None) -> RedisClient:
    """A client for the configured Redis.

    A single-node client sends nothing until it is used. A cluster client asks a
    node for the slot map at once; when that fails this raises
    ``StoreUnavailable`` (no node reachable) or ``StoreError`` (wrong credentials,
    cluster mode not enabled), never a bare redis-py error. With ``stopped``, a
    failed call is no longer retried once it returns True (``StopAwareRetry``).
    """
    options = connection_options(settings)
    backoff = retry_backoff()
    retry = (
        Retry(backoff, retries=1)
        if stopped is None
        else StopAwareRetry(backoff, retries=1, stopped=stopped)
    )
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
