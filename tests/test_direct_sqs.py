"""DirectSqs: the worker's receive and delete calls sent without botocore's per-call machinery.

Against the suite's moto server: the replies are what boto3 answers, errors are
boto3's own exceptions, and what goes over the wire carries a valid SigV4
signature of exactly the bytes sent, over one keep-alive connection (verified
TLS for https).
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
from botocore.exceptions import BotoCoreError, ClientError

from tasks.direct_sqs import DirectSqs
from tasks.keepalive import KeepAlive
from tests.support.servers import AWS_TEST_CLIENT_ARGS, SqsServer, free_port

BODIES = ['{"id":"a","n":1}', "héllo wörld ✓ 𝄞", "<xml>&amp;</xml>", "x" * 5000]


def _client(endpoint: str, **config: Any) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        "sqs",
        endpoint_url=endpoint,
        config=Config(parameter_validation=False, **config),
        **AWS_TEST_CLIENT_ARGS,
    )


@pytest.fixture
def queue(sqs_server: SqsServer) -> Iterator[tuple[Any, str]]:
    client = _client(sqs_server.endpoint)
    url = client.create_queue(QueueName=f"direct-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    yield client, url
    client.delete_queue(QueueUrl=url)
    client.close()


@pytest.fixture
def direct(queue: tuple[Any, str]) -> Iterator[DirectSqs]:
    direct = DirectSqs(queue[0])
    yield direct
    direct.close()


def test_receive_and_delete_answer_as_boto3_does(queue: tuple[Any, str], direct: DirectSqs) -> None:
    client, url = queue
    for body in BODIES:
        client.send_message(QueueUrl=url, MessageBody=body)
    received: list[dict[str, Any]] = []
    while len(received) < len(BODIES):
        reply = direct.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        received += reply.get("Messages", [])
    assert sorted(m["Body"] for m in received) == sorted(BODIES)
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in received)
    assert all(m["MessageId"] and m["ReceiptHandle"] for m in received)
    entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
    deleted = direct.delete_message_batch(QueueUrl=url, Entries=entries)
    assert sorted(e["Id"] for e in deleted["Successful"]) == sorted(e["Id"] for e in entries)
    assert not deleted.get("Failed")
    empty = direct.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert not empty.get("Messages")
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_a_refused_entry_is_reported_not_raised(queue: tuple[Any, str], direct: DirectSqs) -> None:
    _, url = queue
    reply = direct.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": "not-a-receipt"}]
    )
    assert [entry["Id"] for entry in reply["Failed"]] == ["0"]


def test_an_error_answer_raises_what_boto3_raises(
    queue: tuple[Any, str], direct: DirectSqs
) -> None:
    client, url = queue
    missing = url.rsplit("/", 1)[0] + "/no-such-queue-" + uuid.uuid4().hex[:8]
    with pytest.raises(ClientError) as from_boto3:
        client.receive_message(QueueUrl=missing, WaitTimeSeconds=0)
    with pytest.raises(ClientError) as from_direct:
        direct.receive_message(QueueUrl=missing, WaitTimeSeconds=0)
    assert from_direct.value.response["Error"] == from_boto3.value.response["Error"]


def test_an_unreachable_endpoint_raises_a_botocore_error() -> None:
    client = _client(
        f"http://127.0.0.1:{free_port()}", connect_timeout=1, retries={"max_attempts": 1}
    )
    direct = DirectSqs(client)
    try:
        with pytest.raises(BotoCoreError):
            direct.delete_message_batch(
                QueueUrl="http://127.0.0.1/1/q", Entries=[{"Id": "0", "ReceiptHandle": "r"}]
            )
    finally:
        direct.close()
        client.close()


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
    client = _client(endpoint)
    direct = DirectSqs(client)
    try:
        return [
            direct.receive_message(QueueUrl=f"{endpoint}/1/q", WaitTimeSeconds=0)
            for _ in range(calls)
        ]
    finally:
        direct.close()
        client.close()


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


def test_sent_timestamp_comes_back_directly_and_through_the_fallback(
    queue: tuple[Any, str], direct: DirectSqs
) -> None:
    """The consumer's receive asks for SentTimestamp (the apply lag is measured from it)."""
    client, url = queue
    before = int(time.time() * 1000)
    client.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(2)]
    )
    params = {
        "QueueUrl": url,
        "MaxNumberOfMessages": 1,
        "WaitTimeSeconds": 1,
        "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
    }
    fallback = DirectSqs(client)
    fallback._http = None  # what happens on a botocore without the internals DirectSqs uses
    for receiver in (direct, fallback):
        (message,) = receiver.receive_message(**params)["Messages"]
        sent = int(message["Attributes"]["SentTimestamp"])
        assert before - 5000 <= sent <= int(time.time() * 1000) + 5000
