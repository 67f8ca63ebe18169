"""The edge stub as a real process: the upstream contract, its file, and its change messages."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cache_pipeline.messages import CacheInvalidated, EntitlementsUpdated, parse_message
from cache_pipeline.upstream import UpstreamAnswer
from tests.support.edge import EdgeStub, snapshot_body
from tests.support.servers import AWS_TEST_ENV, SqsServer, wait_until

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

ENVIRONMENT = "stub-env"
API_DOC = Path(__file__).resolve().parent.parent / "docs" / "upstream-api.yaml"


def _queue(sqs_server: SqsServer) -> Iterator[tuple[SQSClient, str]]:
    client = sqs_server.client()
    url = client.create_queue(QueueName=f"edge-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    yield client, url
    client.delete_queue(QueueUrl=url)
    client.close()


def _stub(sqs_server: SqsServer, queue: tuple[SQSClient, str]) -> Iterator[EdgeStub]:
    env = {
        "QUEUE_URL": queue[1],
        "SQS_ENDPOINT_URL": sqs_server.endpoint,
        "ENVIRONMENT_PREFIX": ENVIRONMENT,
    }
    server = EdgeStub(env=env).start()
    yield server
    server.stop()


# One stub and queue for the module (each test uses its own customers) ...
queue = pytest.fixture(scope="module")(_queue)
stub = pytest.fixture(scope="module")(_stub)
# ... and a stub of its own for the test that rewrites the whole file.
own_queue = pytest.fixture(_queue)


@pytest.fixture
def own_stub(sqs_server: SqsServer, own_queue: tuple[SQSClient, str]) -> Iterator[EdgeStub]:
    yield from _stub(sqs_server, own_queue)


@pytest.fixture
def cus() -> str:
    return f"cus-{uuid.uuid4().hex[:10]}"


def receive(queue: tuple[SQSClient, str], count: int) -> list[Any]:
    """``count`` messages from the queue, parsed as contract messages."""
    client, url = queue
    bodies: list[str] = []

    def more() -> bool:
        reply = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            bodies.append(message["Body"])
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(bodies) >= count

    wait_until(more, timeout=20, what=f"{count} message(s) on the queue")
    return [parse_message(body, ENVIRONMENT) for body in bodies]


def test_api_key_is_required(stub: EdgeStub, cus: str) -> None:
    path = f"/v1/customers/{cus}/entitlements"
    assert stub.request("GET", path, headers={"X-API-KEY": "wrong"}).status_code == 401
    assert stub.request("GET", "/v1/customers", headers={"X-API-KEY": ""}).status_code == 401
    assert stub.request("GET", path).status_code == 404


def test_changes_are_served_saved_and_published(
    stub: EdgeStub, queue: tuple[SQSClient, str], cus: str
) -> None:
    body = snapshot_body(features={"seats": 2}, credits={"ai": 5}, denied=None)
    first = stub.put(cus, body)
    unchanged = stub.request("PUT", f"/v1/customers/{cus}/entitlements", json=body)
    served = stub.request("GET", f"/v1/customers/{cus}/entitlements").json()

    assert served == first
    assert unchanged.headers["X-Stub-Changed"] == "0"
    assert unchanged.json()["timestamp"] == first["timestamp"]
    (message,) = receive(queue, 1)
    assert isinstance(message, EntitlementsUpdated)
    assert (message.timestamp, message.environment) == (first["timestamp"], ENVIRONMENT)
    assert message.data.model_dump(mode="json", by_alias=True) == _data(first)
    saved = json.loads(stub.file.read_text())["snapshots"]
    assert [a for a in saved if a["data"]["customerId"] == cus] == [first]

    second = stub.put(cus, snapshot_body(features={"seats": 3}))
    assert second["timestamp"] > first["timestamp"]
    (update,) = receive(queue, 1)
    assert update.timestamp == second["timestamp"]

    assert stub.request("DELETE", f"/v1/customers/{cus}/entitlements").status_code == 204
    (invalidation,) = receive(queue, 1)
    assert isinstance(invalidation, CacheInvalidated)
    assert invalidation.timestamp > second["timestamp"]
    assert [c.customer_id for c in invalidation.data.customers] == [cus]
    assert stub.request("GET", f"/v1/customers/{cus}/entitlements").status_code == 404
    assert stub.request("DELETE", f"/v1/customers/{cus}/entitlements").status_code == 404


def test_reload_publishes_what_the_file_changed(
    own_stub: EdgeStub, own_queue: tuple[SQSClient, str]
) -> None:
    kept = own_stub.put("cus-1", snapshot_body(features={"a": 1}, timestamp=100))
    own_stub.put("cus-2", snapshot_body(features={"a": 1}, timestamp=100))
    receive(own_queue, 2)
    edited = {"timestamp": 200, "data": _data(kept) | {"accessDeniedReason": "Revoked"}}
    added = {"timestamp": 300, "data": _data(kept) | {"customerId": "cus-3"}}
    own_stub.file.write_text(json.dumps({"snapshots": [edited, added]}))

    reply = own_stub.request("POST", "/v1/reload").json()

    assert reply == {"changed": 2, "removed": 1}
    messages = receive(own_queue, 3)
    updated = sorted(
        (m.data.customer_id, m.timestamp) for m in messages if isinstance(m, EntitlementsUpdated)
    )
    assert updated == [("cus-1", 200), ("cus-3", 300)]
    (gone,) = [m for m in messages if isinstance(m, CacheInvalidated)]
    assert [c.customer_id for c in gone.data.customers] == ["cus-2"]
    listed = own_stub.request("GET", "/v1/customers").json()["customers"]
    assert [c["customerId"] for c in listed] == ["cus-1", "cus-3"]


def test_bad_put_bodies_are_refused(stub: EdgeStub, cus: str) -> None:
    path = f"/v1/customers/{cus}/entitlements"
    bad = {"entitlements": [{"kind": "OTHER", "id": "x"}]}
    assert stub.request("PUT", path, json=bad).status_code == 422
    assert stub.request("PUT", path, json={"entitlements": [], "x": 1}).status_code == 422
    assert stub.request("GET", path).status_code == 404


def test_resource_answers_never_predate_their_global_snapshot(
    stub: EdgeStub, queue: tuple[SQSClient, str], cus: str
) -> None:
    stub.put(cus, snapshot_body(features={"a": 1}, timestamp=100), resource="r1")
    stub.put(cus, snapshot_body(features={"a": 1}, timestamp=300))
    receive(queue, 2)
    path = f"/v1/customers/{cus}/entitlements"
    assert stub.request("GET", path, params={"resourceId": "r1"}).json()["timestamp"] == 300


def test_a_bad_file_stops_startup_with_one_line(tmp_path: Any) -> None:
    data = tmp_path / "edge.json"
    data.write_text('{"snapshots": [{"timestamp": "soon"}]}')
    done = subprocess.run(
        [sys.executable, "-m", "cli", "edge-stub", "--file", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        env=AWS_TEST_ENV | {"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"cache-pipeline: edge stub file {data}")


def test_logs_are_json_lines(stub: EdgeStub) -> None:
    lines = [json.loads(line) for line in stub.log.read_text().splitlines() if line.strip()]
    started = [line for line in lines if line["msg"].startswith("edge stub on http://")]
    assert [line["level"] for line in started] == ["info"]
    assert all({"time", "level", "msg"} <= set(line) for line in lines)


def _validator(schema: str) -> jsonschema.Draft202012Validator:
    document = yaml.safe_load(API_DOC.read_text())
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:upstream-api", resource)
    reference = {"$ref": f"urn:upstream-api#/components/schemas/{schema}"}
    return jsonschema.Draft202012Validator(reference, registry=registry)


def test_answers_match_the_documented_contract(stub: EdgeStub, cus: str) -> None:
    document = yaml.safe_load(API_DOC.read_text())
    get = document["paths"]["/v1/customers/{customerId}/entitlements"]["get"]
    example = get["responses"]["200"]["content"]["application/json"]["example"]
    answers = _validator("EntitlementsAnswer")
    answers.validate(example)
    assert UpstreamAnswer.model_validate(example).data.customer_id == "cus-42"

    stub.put(cus, snapshot_body(features={"a": 1, "b": None}, credits={"c": 2}, denied="X"))
    served = stub.request("GET", f"/v1/customers/{cus}/entitlements").json()
    answers.validate(served)
    with pytest.raises(jsonschema.ValidationError):
        answers.validate({"timestamp": 0, "data": served["data"]})
    listed = stub.request("GET", "/v1/customers").json()
    for ref in listed["customers"]:
        _validator("CustomerRef").validate(ref)
    stub_paths = {"/v1/customers/{customerId}/entitlements", "/v1/customers", "/v1/reload"}
    assert stub_paths | {"/_stub/requests"} == set(document["paths"])


def _data(answer: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = answer["data"]
    return data
