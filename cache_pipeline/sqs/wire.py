"""SQS calls in its JSON protocol, signed with botocore's public SigV4 signer.

A consumer makes one ReceiveMessage and one DeleteMessageBatch per batch of up
to ten messages. Through a boto3 client each call costs about 1.5 ms of CPU on
a 2.5 GHz core (event hooks, endpoint rules, request and response models,
retry bookkeeping): more than the rest of the worker's work per message.
``SignedCalls`` sends the same requests itself: the JSON protocol botocore
speaks to SQS (``X-Amz-Target: AmazonSQS.<Operation>``), signed by
``botocore.auth.SigV4Auth`` with credentials from botocore's default chain
(``botocore.session.Session.get_credentials``: environment, shared files, web
identity, container and instance roles, refreshed as they expire), over the
keep-alive connections of ``cache_pipeline.sqs.keepalive``. Only public
interfaces of botocore are used.

When the endpoint would be reached through a proxy (``HTTPS_PROXY`` and
friends), the calls go through a boto3 client instead (``Boto3Calls``); that
fallback is logged when it is chosen and counted per call in
``persistent_cache_sqs_fallback_total``.

Either way an error answer, a transport failure or missing credentials raise
``QueueUnavailable`` with its ``QueueFault``; credentials the endpoint refused
are looked up again on the next call, so a rotated secret is picked up without
a restart.

A stopping worker calls ``stop_by(deadline)``: from then on a call ends by that
``time.monotonic()`` deadline (its timeouts are cut to the time left; through
boto3, which keeps its own timeouts, only a call started after the deadline is
refused), and a call after it is refused at once (``unreachable``).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.request
from typing import Any, Protocol
from urllib.parse import urlsplit

import boto3
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from loguru import logger

from cache_pipeline.config import SQS_READ_TIMEOUT_SECS, Settings
from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.sqs.faults import fault_of, from_boto3, short_code
from cache_pipeline.sqs.keepalive import KeepAlive

CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "AmazonSQS."
SIGNING_NAME = "sqs"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = float(SQS_READ_TIMEOUT_SECS)  # above the longest long poll (20 s, SQS's maximum)


class SqsCalls(Protocol):
    """One SQS operation in, its JSON reply out."""

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """The reply of ``operation`` (ReceiveMessage, DeleteMessageBatch, ...).

        Raises ``QueueUnavailable``.
        """
        ...

    def stop_by(self, deadline: float) -> None:
        """End every call by ``deadline`` (``time.monotonic()``), refuse any after it."""
        ...

    def close(self) -> None: ...


def time_left(operation: str, deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (None: no deadline); raises once it has passed."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise QueueUnavailable(
            QueueFault.UNREACHABLE, f"{operation}: not sent, the worker's time to stop is up"
        )
    return left


class DefaultChain:
    """AWS credentials from botocore's default chain, looked up again after a refusal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: Any = None

    def frozen(self) -> Any:
        """The current access key, secret and token (``ReadOnlyCredentials``).

        Raises ``QueueUnavailable`` (credentials) when the chain finds none.
        """
        credentials = self._credentials
        if credentials is None:
            with self._lock:
                if self._credentials is None:
                    self._credentials = botocore.session.get_session().get_credentials()
                credentials = self._credentials
            if credentials is None:
                raise QueueUnavailable(
                    QueueFault.CREDENTIALS,
                    "no AWS credentials found (environment, shared files, web identity,"
                    " container or instance role)",
                )
        return credentials.get_frozen_credentials()

    def forget(self) -> None:
        """Look the credentials up again on the next call (the endpoint refused these)."""
        with self._lock:
            self._credentials = None


class SignedCalls:
    """SQS's JSON protocol over keep-alive HTTP(S), SigV4-signed."""

    def __init__(
        self,
        endpoint: str,
        region: str,
        *,
        verify: bool | str = True,
        chain: DefaultChain | None = None,
    ) -> None:
        self._url = endpoint.rstrip("/") + "/"
        self._path = urlsplit(self._url).path
        self._region = region
        self._chain = chain or DefaultChain()
        self._http = KeepAlive(
            self._url, verify=verify, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
        )
        self._deadline: float | None = None

    def stop_by(self, deadline: float) -> None:
        self._deadline = deadline

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        timeout = time_left(operation, self._deadline)
        body = json.dumps(params).encode()
        request = AWSRequest(
            "POST",
            self._url,
            data=body,
            headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET_PREFIX + operation},
        )
        SigV4Auth(self._chain.frozen(), SIGNING_NAME, self._region).add_auth(request)
        try:
            status, content = self._http.post(
                self._path, body, dict(request.headers.items()), timeout
            )
        except (OSError, http.client.HTTPException) as exc:
            raise QueueUnavailable(QueueFault.UNREACHABLE, f"{operation}: {exc!r}") from None
        if status != 200:
            raise self._error(operation, status, content)
        try:
            reply = json.loads(content) if content else {}
        except ValueError:
            raise QueueUnavailable(
                QueueFault.UNREACHABLE, f"{operation}: the answer is not JSON"
            ) from None
        if not isinstance(reply, dict):
            raise QueueUnavailable(QueueFault.UNREACHABLE, f"{operation}: unexpected answer")
        return reply

    def _error(self, operation: str, status: int, content: bytes) -> QueueUnavailable:
        code, message = _error_of(content)
        fault = fault_of(status, code)
        if fault is QueueFault.CREDENTIALS:
            self._chain.forget()
        return QueueUnavailable(fault, f"{operation}: {code or status}: {message}")

    def close(self) -> None:
        self._http.close()


_XML_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{0,500})</Message>")


def _error_of(content: bytes) -> tuple[str, str]:
    """The code and message of an error answer (JSON, or the XML some servers send)."""
    try:
        error = json.loads(content)
    except ValueError:
        return _xml_error_of(content)
    if not isinstance(error, dict):
        return "", ""
    code = short_code(str(error.get("__type") or error.get("code") or ""))
    return code, str(error.get("message") or error.get("Message") or "")[:500]


def _xml_error_of(content: bytes) -> tuple[str, str]:
    found_code, found_message = _XML_CODE.search(content), _XML_MESSAGE.search(content)
    code = short_code(found_code.group(1).decode("utf-8", "replace")) if found_code else ""
    message = found_message.group(1) if found_message else content[:200]
    return code, message.decode("utf-8", "replace")


class Boto3Calls:
    """The same calls through a boto3 client (the fallback)."""

    def __init__(self, client: Any, reason: str) -> None:
        self._client = client
        self._fallback = metrics.SQS_FALLBACK.labels(reason)
        self._deadline: float | None = None

    def stop_by(self, deadline: float) -> None:
        self._deadline = deadline

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        time_left(operation, self._deadline)
        self._fallback.inc()
        method = getattr(self._client, _snake(operation))
        try:
            reply: dict[str, Any] = method(**params)
        except (BotoCoreError, ClientError) as exc:
            raise from_boto3(exc, operation) from None
        reply.pop("ResponseMetadata", None)
        return reply

    def close(self) -> None:
        self._client.close()


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def boto3_client(settings: Settings) -> Any:
    """A boto3 SQS client for the configured region and endpoint."""
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
    )
    return boto3.client(
        "sqs",
        region_name=settings.aws_region,
        endpoint_url=settings.sqs_endpoint_url,
        config=config,
    )


def sqs_calls(settings: Settings) -> SqsCalls:
    """Signed keep-alive calls to the configured endpoint, or boto3 when they cannot be used."""
    client = boto3_client(settings)
    endpoint: str = settings.sqs_endpoint_url or client.meta.endpoint_url
    reason = _why_not_direct(endpoint)
    if reason is not None:
        logger.warning(
            "SQS calls go through the boto3 client ({}): more CPU per message; counted in"
            " persistent_cache_sqs_fallback_total",
            reason,
        )
        return Boto3Calls(client, reason)
    client.close()
    session = botocore.session.get_session()
    ca_bundle = session.get_config_variable("ca_bundle")
    return SignedCalls(endpoint, settings.aws_region, verify=ca_bundle or True)


def _why_not_direct(endpoint: str) -> str | None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "endpoint"
    proxies = urllib.request.getproxies()
    if proxies.get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname):
        return "proxy"
    return None
