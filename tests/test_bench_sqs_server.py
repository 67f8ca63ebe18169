"""bench.sqs_server behaves as SQS does for what the bench and the worker use.

It runs as its own process and is spoken to by boto3 (which checks the MD5 of
bodies and attributes) and by the worker's own ``SqsQueue``. It refuses what
SQS refuses in a message, as SQS does (the suite parks poison against it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from bench.services import bench_sqs_server, sqs_endpoint
from cache_pipeline.errors import QueueFault, QueueUnavailable
from cache_pipeline.sqs.client import SqsQueue
from cache_pipeline.sqs.wire import SignedCalls
from tests.support.servers import AWS_TEST_CLIENT_ARGS, AWS_TEST_ENV


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with bench_sqs_server() as url:
        yield url


def sqs_at(endpoint: str) -> Any:
    """A boto3 SQS client of the suite's test credentials on ``endpoint``."""
    return boto3.client("sqs", endpoint_url=endpoint, **AWS_TEST_CLIENT_ARGS)  # type: ignore[call-overload]


@pytest.fixture
def sqs(endpoint: str) -> Any:
    return sqs_at(endpoint)


def depth(sqs: Any, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(attributes[names[0]]), int(attributes[names[1]])


def test_visibility_delete_and_release(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="vis", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    entries = [
        {
            "Id": str(i),
            "MessageBody": f"body {i} ✓",
            "MessageAttributes": {"reason": {"DataType": "String", "StringValue": "x"}},
        }
        for i in range(3)
    ]
    assert len(sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]) == 3
    first = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
    )["Messages"]
    assert sorted(m["Body"] for m in first) == ["body 0 ✓", "body 1 ✓", "body 2 ✓"]
    assert first[0]["MessageAttributes"]["reason"]["StringValue"] == "x"
    assert first[0]["Attributes"]["ApproximateReceiveCount"] == "1"
    assert depth(sqs, url) == (0, 3)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": first[0]["ReceiptHandle"]}]
    )
    sqs.change_message_visibility_batch(
        QueueUrl=url,
        Entries=[{"Id": "0", "ReceiptHandle": first[1]["ReceiptHandle"], "VisibilityTimeout": 0}],
    )
    assert depth(sqs, url) == (1, 1)
    again = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5, AttributeNames=["All"]
    )["Messages"]
    assert [m["Body"] for m in again] == [first[1]["Body"]]
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    started = time.monotonic()
    late = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
    assert time.monotonic() - started < 4  # the third came back after its 1 s timeout
    assert [m["Body"] for m in late["Messages"]] == [first[2]["Body"]]


def test_a_long_poll_wakes_when_a_message_arrives(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="poll")["QueueUrl"]
    waiting = sqs_at(sqs.meta.endpoint_url)
    sender = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import boto3, sys, time; time.sleep(0.5);"
            " boto3.client('sqs', endpoint_url=sys.argv[1], region_name='us-east-1')"
            ".send_message(QueueUrl=sys.argv[2], MessageBody='late')",
            sqs.meta.endpoint_url,
            url,
        ],
        env={**AWS_TEST_ENV, "PATH": "/usr/bin:/bin"},
    )
    started = time.monotonic()
    reply = waiting.receive_message(QueueUrl=url, WaitTimeSeconds=10)
    assert [m["Body"] for m in reply["Messages"]] == ["late"]
    assert time.monotonic() - started < 5
    sender.wait(10)


def test_errors_are_sqs_errors(sqs: Any, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName="nowhere")
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    queue = SqsQueue(SignedCalls(endpoint, "us-east-1"), f"{endpoint}/000000000000/nowhere")
    with pytest.raises(Exception, match="QueueDoesNotExist"):
        queue.receive(1, 0)
    queue.close()


def test_the_worker_s_queue_client_drains_it(
    sqs: Any, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    url = sqs.create_queue(QueueName="drain")["QueueUrl"]
    for start in range(0, 50, 10):
        entries = [{"Id": str(i), "MessageBody": f"m{start + i}"} for i in range(10)]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    queue = SqsQueue(SignedCalls(endpoint, "us-east-1"), url)
    seen: list[str] = []
    while len(seen) < 50:
        batch = queue.receive(10, 1)
        assert batch
        assert queue.delete([m.receipt for m in batch]) == []
        seen += [m.body for m in batch]
    queue.close()
    assert sorted(seen) == sorted(f"m{i}" for i in range(50))
    assert depth(sqs, url) == (0, 0)


def test_sqs_endpoint_url_bench_runs_it_for_the_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQS_ENDPOINT_URL", "bench")
    with sqs_endpoint() as url:
        client = sqs_at(url)
        client.create_queue(QueueName="b")
        assert client.list_queues()["QueueUrls"] == [f"{url}/000000000000/b"]
    with pytest.raises(Exception, match="Could not connect"):
        client.list_queues()


def _refused(call: Any) -> tuple[str, str]:
    """The error code and message of a call the server must refuse as a whole."""
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    error = caught.value.response["Error"]
    return error["Code"], error["Message"]


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def test_it_refuses_what_sqs_refuses_in_a_message(sqs: Any) -> None:
    """Characters outside SQS's set, eleven attributes, a message too long with its attributes."""
    url = sqs.create_queue(QueueName="strict", Attributes={"MaximumMessageSize": "1024"})[
        "QueueUrl"
    ]

    def send(body: str, **attributes: dict[str, str]) -> Any:
        return lambda: sqs.send_message(
            QueueUrl=url, MessageBody=body, MessageAttributes=attributes
        )

    assert _refused(send("a\x01b"))[0] == "InvalidMessageContents"
    assert _refused(send("a\ufffe"))[0] == "InvalidMessageContents"
    code, message = _refused(send("ok", detail=_string("a\x01b")))
    assert (code, "invalid binary character '#x1'" in message) == ("InvalidParameterValue", True)
    eleven = {f"a{i}": _string("x") for i in range(11)}
    code, message = _refused(send("ok", **eleven))
    assert (code, "[11] exceeds the allowed maximum [10]" in message) == (
        "InvalidParameterValue",
        True,
    )
    assert _refused(send("ok", **{"AWS.x": _string("x")}))[0] == "InvalidParameterValue"
    assert _refused(send("ok", k={"DataType": "Text", "StringValue": "x"}))[0] == (
        "InvalidParameterValue"
    )
    # SQS counts name, data type and value: 1024 - len("k") - len("String") - len("v") = 1016.
    code, message = _refused(send("m" * 1017, k=_string("v")))
    assert (code, message.endswith("Message must be shorter than 1024 bytes.")) == (
        "InvalidParameterValue",
        True,
    )
    # What it accepts: the limits themselves, and every character SQS allows.
    sqs.send_message(QueueUrl=url, MessageBody="m" * 1016, MessageAttributes={"k": _string("v")})
    sqs.send_message(QueueUrl=url, MessageBody="m" * 1024)
    sqs.send_message(
        QueueUrl=url,
        MessageBody="\t\n\r ~\ud7ff\ue000\ufffd\U00010000\U0010ffff",
        MessageAttributes={f"a{i}": _string("\ufffd \U0001d11e") for i in range(10)},
    )
    assert depth(sqs, url) == (3, 0)


def test_a_batch_reports_each_entry_it_refuses_and_refuses_too_long_a_batch(
    sqs: Any, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqs.create_queue(QueueName="strict-batch", Attributes={"MaximumMessageSize": "1024"})[
        "QueueUrl"
    ]
    reply = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "fits", "MessageBody": "m" * 1000, "MessageAttributes": {"k": _string("v")}},
            {
                "Id": "long",
                "MessageBody": "m" * 1000,
                "MessageAttributes": {"k": _string("v" * 30)},
            },
            {"Id": "chars", "MessageBody": "ok", "MessageAttributes": {"k": _string("\x00")}},
            {"Id": "body", "MessageBody": "\x1f"},
        ],
    )
    assert [entry["Id"] for entry in reply["Successful"]] == ["fits"]
    assert {entry["Id"]: entry["Code"] for entry in reply["Failed"]} == {
        "long": "InvalidParameterValue",
        "chars": "InvalidParameterValue",
        "body": "InvalidMessageContents",
    }
    assert all(entry["SenderFault"] for entry in reply["Failed"])
    assert depth(sqs, url) == (1, 0)

    # Together above 1 MiB, each below it: refused as a whole, nothing sent.
    big = sqs.create_queue(QueueName="strict-big")["QueueUrl"]
    entries = [{"Id": str(i), "MessageBody": "b" * 250_000} for i in range(5)]
    code, _ = _refused(lambda: sqs.send_message_batch(QueueUrl=big, Entries=entries))
    assert code == "BatchRequestTooLong"
    assert (
        _refused(
            lambda: sqs.send_message_batch(
                QueueUrl=big,
                Entries=[{"Id": "x", "MessageBody": "1"}, {"Id": "x", "MessageBody": "2"}],
            )
        )[0]
        == "BatchEntryIdsNotDistinct"
    )
    assert depth(sqs, big) == (0, 0)
    # The worker's own client sees the same refusal (a QueueUnavailable it can tell apart).
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    calls = SignedCalls(endpoint, "us-east-1")
    with pytest.raises(QueueUnavailable) as caught:
        calls.call("SendMessageBatch", {"QueueUrl": big, "Entries": entries})
    calls.close()
    assert caught.value.fault is QueueFault.REFUSED
    assert "BatchRequestTooLong" in caught.value.detail
