"""The two SQS calls of every batch, sent without botocore's per-call machinery.

A consumer makes one ReceiveMessage and one DeleteMessageBatch per batch of up
to ten messages. Through a boto3 client each call costs about 1.5 ms of CPU on
a 2.5 GHz core (event hooks, endpoint rules, request and response models,
retry bookkeeping): with the Redis work, more than the worker's whole CPU
budget per message. ``DirectSqs`` sends these two calls itself, in the JSON
protocol botocore speaks to SQS, on the boto3 client's own HTTP session (same
endpoint, proxies, TLS settings and timeouts), signed by botocore's SigV4
signer with the client's own credentials (the default chain, refreshed as
boto3 refreshes them). When that session would connect straight to the
endpoint, the requests go over ``tasks.keepalive`` connections instead of
urllib3's pool, which costs as much CPU as the rest of the request.

Only a 200 answer is used. Any other answer, a transport error or a botocore
version without the client internals used here sends the same call through
the boto3 client itself, so errors, retries and exceptions (``ClientError``,
``BotoCoreError``) are exactly boto3's. Every other SQS call goes through the
client.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError

from tasks.keepalive import KeepAlive, for_session

CONTENT_TYPE = "application/x-amz-json-1.0"
TARGET_PREFIX = "AmazonSQS."


class DirectSqs:
    """ReceiveMessage and DeleteMessageBatch of a boto3 SQS client: same arguments and replies."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._url: str = client.meta.endpoint_url.rstrip("/") + "/"
        self._path = urlsplit(self._url).path
        self._region: str = client.meta.region_name
        self._signing_name: str = client.meta.service_model.signing_name
        endpoint = getattr(client, "_endpoint", None)
        self._http: Any = getattr(endpoint, "http_session", None)
        self._credentials: Callable[[], Any] | None = getattr(client, "_get_credentials", None)
        self._keepalive: KeepAlive | None = None
        if self._http is not None:
            self._keepalive = for_session(self._url, self._http, client.meta.config)
        self._headers = {"Content-Type": CONTENT_TYPE}
        if getattr(client.meta.service_model, "is_query_compatible", False):
            self._headers["x-amzn-query-mode"] = "true"

    def receive_message(self, **params: Any) -> dict[str, Any]:
        """What ``client.receive_message(**params)`` returns (without ResponseMetadata)."""
        reply = self._call("ReceiveMessage", params)
        return self.client.receive_message(**params) if reply is None else reply

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        """What ``client.delete_message_batch(**params)`` returns (without ResponseMetadata)."""
        reply = self._call("DeleteMessageBatch", params)
        return self.client.delete_message_batch(**params) if reply is None else reply

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The parsed 200 answer of a direct call, or None: the caller then asks boto3."""
        if self._http is None or self._credentials is None:
            return None
        credentials = self._credentials()
        if credentials is None:  # boto3 raises NoCredentialsError
            return None
        body = json.dumps(params).encode()
        request = AWSRequest(
            "POST",
            self._url,
            data=body,
            headers={**self._headers, "X-Amz-Target": TARGET_PREFIX + operation},
        )
        SigV4Auth(credentials.get_frozen_credentials(), self._signing_name, self._region).add_auth(
            request
        )
        try:
            status, content = self._send(request, body)
            if status != 200:
                return None
            reply = json.loads(content)
        except (BotoCoreError, OSError, http.client.HTTPException, ValueError):
            return None
        return reply if isinstance(reply, dict) else None

    def _send(self, request: AWSRequest, body: bytes) -> tuple[int, bytes]:
        if self._keepalive is not None:
            return self._keepalive.post(self._path, body, dict(request.headers.items()))
        response = self._http.send(request.prepare())
        content = response.content  # read in full: the connection goes back to the pool
        return int(response.status_code), bytes(content)

    def close(self) -> None:
        """Close the keep-alive connections (the boto3 client keeps its own pool)."""
        if self._keepalive is not None:
            self._keepalive.close()
