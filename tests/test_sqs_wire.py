"""The signed SQS calls: what goes over the wire, what comes back, and what errors become.

Against the suite's moto server the replies are what boto3 answers and every
error answer becomes ``QueueUnavailable`` with the same fault through either
path; against a recording server, what goes over the wire carries a valid SigV4
signature of exactly the bytes sent, over one keep-alive connection (verified
TLS for https). The boto3 fallback is chosen only when a proxy applies, and
counted.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import trustme
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from cache_pipeline.config import load_settings
from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.ops import metrics
from cache_pipeline.sqs.keepalive import KeepAlive
from cache_pipeline.sqs.wire import Boto3Calls, SignedCalls, SqsCalls, sqs_calls
from tests.support.servers import AWS_TEST_CLIENT_ARGS, AWS_TEST_ENV, SqsServer, free_port

BODIES = ['{"id":"a","n":1}', "héllo wörld ✓ 𝄞", "<xml>&amp;</xml>", "x" * 5000]
NO_CREDENTIALS = {
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default chain finds the test credentials in the environment."""
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)


def _client(endpoint: str, **config: Any) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        "sqs", endpoint_url=endpoint, config=Config(**config), **AWS_TEST_CLIENT_ARGS
    )


@pytest.fixture
def queue(sqs_server: SqsServer) -> Iterator[tuple[Any, str]]:
    client = _client(sqs_server.endpoint)
    url = client.create_queue(QueueName=f"wire-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    yield client, url
    client.delete_queue(QueueUrl=url)
    client.close()


@pytest.fixture(params=["signed", "boto3"])
def calls(request: pytest.FixtureRequest, sqs_server: SqsServer) -> Iterator[SqsCalls]:
    made: SqsCalls
    if request.param == "signed":
        made = SignedCalls(sqs_server.endpoint, "us-east-1")
    else:
        made = Boto3Calls(_client(sqs_server.endpoint), "test")
    yield made
    made.close()


def test_receive_and_delete_answer_as_boto3_does(queue: tuple[Any, str], calls: SqsCalls) -> None:
    client, url = queue
    for body in BODIES:
        client.send_message(QueueUrl=url, MessageBody=body)
    received: list[dict[str, Any]] = []
    while len(received) < len(BODIES):
        reply = calls.call(
            "ReceiveMessage",
            {
                "QueueUrl": url,
                "MaxNumberOfMessages": 10,
                "WaitTimeSeconds": 1,
                "VisibilityTimeout": 30,
                "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
            },
        )
        received += reply.get("Messages", [])
    assert sorted(m["Body"] for m in received) == sorted(BODIES)
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in received)
    now = int(time.time() * 1000)
    assert all(now - 60_000 < int(m["Attributes"]["SentTimestamp"]) <= now for m in received)
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
    deleted = calls.call("DeleteMessageBatch", {"QueueUrl": url, "Entries": entries})
    assert sorted(e["Id"] for e in deleted["Successful"]) == sorted(e["Id"] for e in entries)
    assert not deleted.get("Failed")
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_missing_queue_is_the_same_fault_through_either_path(
    queue: tuple[Any, str], calls: SqsCalls
) -> None:
    _, url = queue
    missing = url.rsplit("/", 1)[0] + "/no-such-queue-" + uuid.uuid4().hex[:8]
    with pytest.raises(QueueUnavailable) as caught:
        calls.call("ReceiveMessage", {"QueueUrl": missing, "WaitTimeSeconds": 0})
    assert caught.value.fault is QueueFault.MISSING_QUEUE
    assert "QueueDoesNotExist" in caught.value.detail or "NonExistentQueue" in caught.value.detail


def test_an_unreachable_endpoint_is_a_fault_not_a_crash() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    for calls in (
        SignedCalls(endpoint, "us-east-1"),
        Boto3Calls(_client(endpoint, connect_timeout=1, retries={"max_attempts": 1}), "test"),
    ):
        with pytest.raises(QueueUnavailable) as caught:
            calls.call("DeleteMessageBatch", {"QueueUrl": endpoint + "/1/q", "Entries": []})
        assert caught.value.fault is QueueFault.UNREACHABLE
        calls.close()


def test_no_credentials_anywhere_is_a_credentials_fault(
    sqs_server: SqsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in NO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    calls = SignedCalls(sqs_server.endpoint, "us-east-1")
    with pytest.raises(QueueUnavailable) as caught:
        calls.call("ReceiveMessage", {"QueueUrl": sqs_server.endpoint + "/1/q"})
    assert caught.value.fault is QueueFault.CREDENTIALS
    for name, value in AWS_TEST_ENV.items():  # the credentials appear: the next call has them
        monkeypatch.setenv(name, value)
    with pytest.raises(QueueUnavailable) as missing:
        calls.call("ReceiveMessage", {"QueueUrl": sqs_server.endpoint + "/1/no-such-queue"})
    assert missing.value.fault is QueueFault.MISSING_QUEUE
    calls.close()


def test_a_proxy_sends_the_calls_through_boto3_and_counts_them(
    sqs_server: SqsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(queue_url="http://x/1/q", sqs_endpoint_url=sqs_server.endpoint)
    direct = sqs_calls(settings)
    assert isinstance(direct, SignedCalls)
    direct.close()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", "")
    fallback = sqs_calls(settings)
    assert isinstance(fallback, Boto3Calls)
    counter = metrics.SQS_FALLBACK.labels("proxy")
    before = counter._value.get()
    with pytest.raises(QueueUnavailable):
        fallback.call("ReceiveMessage", {"QueueUrl": settings.queue_url, "WaitTimeSeconds": 0})
    assert counter._value.get() == before + 1
    fallback.close()


class _Recorder(BaseHTTPRequestHandler):
    """Answers every POST with an empty JSON object and keeps what it received."""

    protocol_version = "HTTP/1.1"  # keep-alive
    seen: list[tuple[int, str, dict[str, str], bytes]] = []
    close_after = False  # answer with "Connection: close"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.client_address[1], self.path, dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", "2")
        if self.close_after:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[_Recorder]]]:
    """A keep-alive HTTP server on a free port that records every request."""
    handler = type("Recorder", (_Recorder,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _receive_from(endpoint: str, calls: int) -> list[dict[str, Any]]:
    signed = SignedCalls(endpoint, "us-east-1")
    try:
        return [
            signed.call("ReceiveMessage", {"QueueUrl": f"{endpoint}/1/q", "WaitTimeSeconds": 0})
            for _ in range(calls)
        ]
    finally:
        signed.close()


def test_the_request_on_the_wire_carries_a_valid_signature_of_its_bytes(
    recorder: tuple[str, type[_Recorder]],
) -> None:
    endpoint, handler = recorder
    assert _receive_from(endpoint, 1) == [{}]
    [(_, path, headers, body)] = handler.seen  # one request: an empty answer is not retried
    assert path == "/"
    assert headers["X-Amz-Target"] == "AmazonSQS.ReceiveMessage"
    assert body == b'{"QueueUrl": "' + endpoint.encode() + b'/1/q", "WaitTimeSeconds": 0}'
    assert _expected_signature(endpoint, headers, body) == headers["Authorization"]


def test_calls_share_one_keep_alive_connection(recorder: tuple[str, type[_Recorder]]) -> None:
    endpoint, handler = recorder
    assert _receive_from(endpoint, 5) == [{}] * 5
    assert len({port for port, *_ in handler.seen}) == 1


def test_a_connection_the_server_closes_is_opened_again(
    recorder: tuple[str, type[_Recorder]],
) -> None:
    endpoint, handler = recorder
    handler.close_after = True
    assert _receive_from(endpoint, 3) == [{}] * 3
    assert len(handler.seen) == 3
    assert len({port for port, *_ in handler.seen}) == 3


def test_tls_is_verified_against_the_configured_bundle(tmp_path: Path) -> None:
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (_Recorder,), {"seen": []}))
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/"
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    trusted = KeepAlive(url, verify=str(bundle), connect_timeout=5, read_timeout=5)
    untrusted = KeepAlive(url, verify=True, connect_timeout=5, read_timeout=5)
    try:
        assert trusted.post("/", b"{}", {"X-Amz-Target": "AmazonSQS.ReceiveMessage"}) == (
            200,
            b"{}",
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusted.post("/", b"{}", {"X-Amz-Target": "AmazonSQS.ReceiveMessage"})
    finally:
        trusted.close()
        untrusted.close()
        server.shutdown()
        server.server_close()


def _expected_signature(endpoint: str, headers: dict[str, str], body: bytes) -> str:
    """Sign the received request again (its signed headers, its bytes, its date)."""
    signed = headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    by_name = {name.lower(): value for name, value in headers.items()}
    request = AWSRequest(
        "POST", endpoint + "/", data=body, headers={name: by_name[name] for name in signed}
    )
    request.context["timestamp"] = by_name["x-amz-date"]
    auth = SigV4Auth(Credentials("testing", "testing"), "sqs", "us-east-1")
    canonical = auth.canonical_request(request)
    signature = auth.signature(auth.string_to_sign(request, canonical), request)
    scope = f"testing/{by_name['x-amz-date'][:8]}/us-east-1/sqs/aws4_request"
    return (
        f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={';'.join(signed)}, "
        f"Signature={signature}"
    )
