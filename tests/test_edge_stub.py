"""The edge stub as a real process: Stigg's Edge API, its file, and its change messages."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import redis
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cache_pipeline.client.upstream import AsyncEdgeClient, EdgeClient, EdgeOptions
from cache_pipeline.contract.dates import edge_version, epoch_ms, now_ms
from cache_pipeline.contract.messages import EntitlementsUpdated, parse_message
from cache_pipeline.contract.stigg_map import entry_problem
from cache_pipeline.errors import UpstreamError
from tests.support.edge import STUB_API_KEY, EdgeStub, feature, metered, snapshot_body
from tests.support.golden import GOLDEN_FILES, load_golden
from tests.support.servers import AWS_TEST_ENV, RedisServer, SqsServer, wait_until
from tests.support.stigg_sdk import run_stigg_sdk_with_events

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

ENVIRONMENT = "stub-env"
API_DOC = Path(__file__).resolve().parent.parent / "docs" / "upstream-api.yaml"
EDGE_PATH = "/v1/c/{customerId}/entitlements.json"
# Every field of an Edge entry and its feature (docs/stigg-compat.md §6), in the fragment order.
ENTRY_FIELDS = [
    "__typename", "isGranted", "accessDeniedReason", "customerId", "resourceId", "usageLimit",
    "hasUnlimitedUsage", "hasSoftLimit", "currentUsage", "requestedUsage", "requestedValues",
    "enumValues", "entitlementUpdatedAt", "usageUpdatedAt", "usagePeriodAnchor",
    "usagePeriodStart", "usagePeriodEnd", "nextResetDate", "resetPeriod", "validUntil",
    "resetPeriodConfiguration", "feature", "creditRate",
]  # fmt: skip
FEATURE_FIELDS = [
    "__typename", "featureType", "meterType", "featureUnits", "featureUnitsPlural",
    "description", "displayName", "refId", "unitTransformation",
]  # fmt: skip
INSIDE_PERIOD = 1_796_083_200_000  # 2026-12-01: inside the seats' usage period of every_kind()
CREDIT = {
    "currencyId": "ai-tokens",
    "usageLimit": 100000,
    "currentUsage": 2500,
    "usagePeriodStart": 1761955200000,
    "usagePeriodEnd": 1764547200000,
}


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
# ... one for the refusals, which drain its queue after every case ...
refusing_queue = pytest.fixture(scope="module")(_queue)


@pytest.fixture(scope="module")
def refusing_stub(
    sqs_server: SqsServer, refusing_queue: tuple[SQSClient, str]
) -> Iterator[EdgeStub]:
    yield from _stub(sqs_server, refusing_queue)


# ... and a stub of its own for the tests that rewrite the whole file or count messages.
own_queue = pytest.fixture(_queue)


@pytest.fixture
def own_stub(sqs_server: SqsServer, own_queue: tuple[SQSClient, str]) -> Iterator[EdgeStub]:
    yield from _stub(sqs_server, own_queue)


@pytest.fixture
def cus() -> str:
    return f"acme:{uuid.uuid4().hex[:10]}"  # a ':' in the id, as Stigg allows


def receive(queue: tuple[SQSClient, str], count: int) -> list[dict[str, Any]]:
    """``count`` message bodies from the queue, as JSON, in arrival order.

    Each one must be a valid contract v2 message (the worker's own parser).
    """
    client, url = queue
    bodies: list[dict[str, Any]] = []

    def more() -> bool:
        reply = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            bodies.append(json.loads(message["Body"]))
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(bodies) >= count

    wait_until(more, timeout=20, what=f"{count} message(s) on the queue")
    for body in bodies:
        parse_message(json.dumps(body), ENVIRONMENT, latest_ms=now_ms())
    return bodies


def assert_no_message(queue: tuple[SQSClient, str]) -> None:
    client, url = queue
    reply = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert reply.get("Messages", []) == []


def every_kind() -> dict[str, Any]:
    """A PUT body with a boolean, a numeric, a metered and an enum feature, and a credit."""
    return {
        "accessDeniedReason": None,
        "entitlements": [
            feature("feature-sso"),
            {
                "feature": {
                    "refId": "feature-projects",
                    "featureType": "NUMBER",
                    "meterType": "None",
                    "featureUnits": "project",
                },
                "usageLimit": 20,
            },
            metered(
                "feature-seats",
                3,
                10,
                resetPeriod="MONTH",
                usagePeriodStart="2026-11-15T00:00:00.000Z",
                usagePeriodEnd=1797292800000,
            ),
            feature("feature-region", "ENUM", None, enumValues=["us-east", "eu-west"]),
        ],
        "credits": [CREDIT],
    }


def test_the_api_key_is_required_and_errors_have_the_edges_shape(stub: EdgeStub, cus: str) -> None:
    for key in ("wrong", ""):
        refused = stub.scope_request("GET", cus, headers={"X-API-KEY": key})
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert stub.request("GET", "/_stub/scopes", headers={"X-API-KEY": "x"}).status_code == 401
    assert stub.request("POST", "/_stub/reload", headers={"X-API-KEY": "x"}).status_code == 401

    unknown = stub.get(cus)
    assert unknown.status_code == 404
    (error,) = unknown.json()["errors"]
    assert error["extensions"]["code"] == "CustomerNotFound"
    assert cus in error["message"]
    stub.put(cus, snapshot_body(features={"a": None}))
    resource = stub.get(cus, "site-1")
    assert resource.status_code == 404
    assert resource.json()["errors"][0]["extensions"]["code"] == "CustomerResourceNotFound"


def test_answers_carry_every_field_of_an_edge_entry(stub: EdgeStub, cus: str) -> None:
    stored = stub.put(cus, every_kind())

    served = stub.get(cus)

    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    entries = served.json()["data"]["entitlements"]
    assert list(served.json()) == ["data"]
    assert entries == stored["entitlements"]
    for entry in entries:
        assert list(entry) == ENTRY_FIELDS
        assert list(entry["feature"]) == FEATURE_FIELDS
        assert entry_problem(entry) is None
        assert (entry["customerId"], entry["resourceId"]) == (cus, None)
        assert entry["isGranted"] is True
    sso, projects, seats, region = entries
    version = stored["timestamp"]
    assert edge_version(entries) == version
    assert {epoch_ms(e["entitlementUpdatedAt"]) for e in entries} == {version}
    assert epoch_ms(seats["usageUpdatedAt"]) == version  # metered: Stigg writes its usage key
    assert sso["usageUpdatedAt"] is None
    assert seats["usagePeriodStart"] == "2026-11-15T00:00:00.000Z"
    assert seats["usagePeriodEnd"] == seats["nextResetDate"] == "2026-12-15T00:00:00.000Z"
    assert (seats["currentUsage"], seats["usageLimit"], seats["resetPeriod"]) == (3, 10, "MONTH")
    assert (projects["usageLimit"], projects["feature"]["featureUnits"]) == (20, "project")
    assert (region["enumValues"], region["feature"]["meterType"]) == (["us-east", "eu-west"], None)
    assert sso["feature"]["displayName"] == "feature-sso"


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=lambda path: path.stem)
def test_the_golden_edge_answers_are_served_unchanged(
    stub: EdgeStub, golden: Path, cus: str
) -> None:
    """Full Edge entries go in and come out as the Edge served them to Stigg's SDK."""
    for request, response in load_golden(golden)["edgeResponses"].items():
        entries = response["data"]["entitlements"]
        resource = request.partition("?resourceId=")[2] or None
        renamed = [entry | {"customerId": cus} for entry in entries]
        if resource is None:  # a resource scope's answer would be dated by its global one
            stub.put(cus, {"entitlements": renamed})
            assert stub.get(cus).json() == {"data": {"entitlements": renamed}}
        else:
            stub.put(cus, {"entitlements": renamed}, resource)
            assert stub.get(cus, resource).json()["data"]["entitlements"] == renamed


def test_changes_are_served_saved_and_published(
    own_stub: EdgeStub, own_queue: tuple[SQSClient, str], cus: str
) -> None:
    first = own_stub.put(cus, every_kind())
    unchanged = own_stub.scope_request("PUT", cus, json=every_kind())

    assert unchanged.headers["X-Stub-Changed"] == "0"
    assert unchanged.json() == first
    (message,) = receive(own_queue, 1)
    assert set(message) == {"id", "type", "timestamp", "environment", "data"}
    assert (message["type"], message["environment"]) == ("entitlements.updated", ENVIRONMENT)
    assert message["timestamp"] == first["timestamp"]
    assert message["data"] == {k: v for k, v in first.items() if k != "timestamp"}
    assert message["data"]["entitlements"] == own_stub.get(cus).json()["data"]["entitlements"]
    assert message["data"]["credits"] == [CREDIT]
    parsed = parse_message(json.dumps(message), ENVIRONMENT)
    assert isinstance(parsed, EntitlementsUpdated)
    assert parsed.data.entitlements == message["data"]["entitlements"]
    assert [c.as_stored() for c in parsed.data.credits] == [
        {k: v for k, v in CREDIT.items() if k != "currencyId"}
    ]
    assert message["data"]["accessDeniedReason"] is None
    saved = json.loads(own_stub.file.read_text())["scopes"]
    assert saved == [{"customerId": cus, "resourceId": None, "timestamp": first["timestamp"]}
                     | every_kind()]  # fmt: skip

    second = own_stub.put(cus, snapshot_body(features={"seats": 4}, denied="NoActiveSubscription"))
    (update,) = receive(own_queue, 1)
    assert update["timestamp"] == second["timestamp"] > first["timestamp"]
    assert update["data"]["accessDeniedReason"] == "NoActiveSubscription"
    assert "credits" not in update["data"]

    assert own_stub.delete(cus).status_code == 204
    (invalidation,) = receive(own_queue, 1)
    assert invalidation["type"] == "cache.invalidated"
    assert invalidation["timestamp"] > second["timestamp"]
    assert invalidation["data"] == {"customers": [{"customerId": cus, "resourceId": None}]}
    assert own_stub.get(cus).status_code == 404
    assert own_stub.delete(cus).status_code == 404
    assert_no_message(own_queue)


def test_reload_publishes_what_the_file_changed(
    own_stub: EdgeStub, own_queue: tuple[SQSClient, str]
) -> None:
    own_stub.put("cus-1", snapshot_body(features={"a": 1}, timestamp=100))
    own_stub.put("cus-2", snapshot_body(features={"a": 1}, timestamp=100))
    receive(own_queue, 2)
    kept = json.loads(own_stub.file.read_text())["scopes"][0]
    edited = kept | {"timestamp": 200, "accessDeniedReason": "NoActiveSubscription"}
    added = kept | {"timestamp": 300, "customerId": "cus:3", "resourceId": "site-1"}
    own_stub.file.write_text(json.dumps({"scopes": [edited, added]}))

    reply = own_stub.request("POST", "/_stub/reload").json()

    assert reply == {"changed": 2, "removed": 1}
    messages = receive(own_queue, 3)
    updated = sorted(
        (m["data"]["customerId"], m["data"]["resourceId"], m["timestamp"])
        for m in messages
        if m["type"] == "entitlements.updated"
    )
    assert updated == [("cus-1", None, 200), ("cus:3", "site-1", 300)]
    (gone,) = [m for m in messages if m["type"] == "cache.invalidated"]
    assert gone["data"]["customers"] == [{"customerId": "cus-2", "resourceId": None}]
    listed = own_stub.request("GET", "/_stub/scopes").json()["scopes"]
    assert listed == [
        {"customerId": "cus-1", "resourceId": None},
        {"customerId": "cus:3", "resourceId": "site-1"},
    ]

    own_stub.file.write_text('{"scopes": [{"customerId": "cus-1"}]}')
    broken = own_stub.request("POST", "/_stub/reload")
    assert broken.status_code == 422
    assert "scopes[0]" in broken.json()["errors"][0]["message"]
    assert own_stub.get("cus-1").status_code == 200  # still serving what it had
    assert_no_message(own_queue)


SEATS = metered("seats", 1)
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("not an object", [], "JSON object"),
    ("no entitlements", {"credits": []}, "entitlements: Field required"),
    ("unknown top-level field", {"entitlements": [], "x": 1}, "x: Extra inputs"),
    ("entry without feature", {"entitlements": [{"usageLimit": 1}]}, "has no feature"),
    (
        "entry without refId",
        {"entitlements": [{"feature": {"featureType": "BOOLEAN"}}]},
        "has no feature.refId",
    ),
    ("lower-case type", {"entitlements": [feature("a", "boolean")]}, "featureType 'boolean'"),
    ("unknown meter", {"entitlements": [feature("a", "NUMBER", "Sometimes")]}, "meterType"),
    ("unsafe feature id", {"entitlements": [feature("a:f_b")]}, "':f_'"),
    ("unknown entry field", {"entitlements": [SEATS | {"limit": 3}]}, "limit: Extra inputs"),
    ("string limit", {"entitlements": [SEATS | {"usageLimit": "10"}]}, "usageLimit"),
    ("bad date", {"entitlements": [SEATS | {"usagePeriodEnd": "soon"}]}, "usagePeriodEnd"),
    ("bad reason", {"entitlements": [SEATS | {"accessDeniedReason": "Nope"}]}, "accessDenied"),
    ("other customer", {"entitlements": [SEATS | {"customerId": "x"}]}, "customerId 'x'"),
    ("duplicate feature", {"entitlements": [SEATS, SEATS]}, "'seats' appears twice"),
    ("bad credit", {"entitlements": [], "credits": [{"currencyId": "a"}]}, "credits[0]"),
    ("unsafe credit", {"entitlements": [], "credits": [CREDIT | {"currencyId": "a#b"}]}, "'#'"),
    ("bad timestamp", {"entitlements": [], "timestamp": "soon"}, "timestamp"),
]


@pytest.mark.parametrize(
    ("body", "says"), [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES]
)
def test_bad_put_bodies_are_refused_and_change_nothing(
    refusing_stub: EdgeStub, refusing_queue: tuple[SQSClient, str], cus: str, body: Any, says: str
) -> None:
    stored = refusing_stub.put(cus, snapshot_body(features={"seats": 2}))
    receive(refusing_queue, 1)
    before = refusing_stub.file.read_text()

    refused = refusing_stub.scope_request("PUT", cus, json=body)

    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert says in error["message"]
    assert refusing_stub.get(cus).json()["data"]["entitlements"] == stored["entitlements"]
    assert refusing_stub.file.read_text() == before
    assert_no_message(refusing_queue)


@pytest.mark.parametrize(
    ("customer", "resource", "raw", "says"),
    [
        ("a:r_b", None, None, "':r_'"),
        ("cus-1", "x:metadata", None, "':metadata'"),
        ("cus-1", "", None, "resourceId"),
        ("cus-1", None, b"{not json", "not JSON"),
        ("cus-1", None, b'{"entitlements": [], "timestamp": NaN}', "not JSON"),
    ],
)
def test_bad_ids_and_bodies_that_are_not_json_are_refused(
    stub: EdgeStub, customer: str, resource: str | None, raw: bytes | None, says: str
) -> None:
    path = f"/v1/c/{customer}/entitlements.json"
    params = {"resourceId": resource} if resource is not None else {}
    body = raw if raw is not None else b'{"entitlements": []}'
    refused = stub.request("PUT", path, params=params, content=body)
    assert refused.status_code == 422, refused.text
    assert says in refused.json()["errors"][0]["message"]
    assert stub.request("GET", path, params=params).status_code in (404, 422)


def test_resource_answers_are_never_dated_before_their_global_scope(
    stub: EdgeStub, cus: str
) -> None:
    stub.put(cus, snapshot_body(features={"a": 1}, timestamp=100), resource="site-1")
    stub.put(cus, snapshot_body(features={"a": 1}, timestamp=300))
    entries = stub.get(cus, "site-1").json()["data"]["entitlements"]
    assert edge_version(entries) == 300
    assert entries[0]["resourceId"] == "site-1"
    stub.put(cus, snapshot_body(features={"b": 2}, timestamp=400), resource="site-1")
    assert edge_version(stub.get(cus, "site-1").json()["data"]["entitlements"]) == 400


def test_the_edge_client_fetches_from_the_stub(stub: EdgeStub, cus: str) -> None:
    """cache_pipeline.client.upstream's clients, as Stigg's SDK calls the Edge, read the stub."""
    stub.put(cus, every_kind())
    stub.put(cus, snapshot_body(features={"seats": 1}), resource="user@example.com")
    options = EdgeOptions(stub.url, STUB_API_KEY, budget_seconds=5)
    client = EdgeClient(options)
    try:
        answer = client.fetch(cus)
        assert answer.entitlements == stub.get(cus).json()["data"]["entitlements"]
        scoped = client.fetch(cus, "user@example.com")
        assert [e["resourceId"] for e in scoped.entitlements] == ["user@example.com"]
        with pytest.raises(UpstreamError, match="404"):
            client.fetch(cus + "-unknown")
    finally:
        client.close()
    assert stub.requests(cus) == 2  # the test's own GET and the client's
    assert stub.requests(cus, "user@example.com") == 1

    async def fetch_async() -> list[dict[str, Any]]:
        async_client = AsyncEdgeClient(options)
        try:
            return (await async_client.fetch(cus)).entitlements
        finally:
            await async_client.aclose()

    assert asyncio.run(fetch_async()) == answer.entitlements
    refused = EdgeClient(EdgeOptions(stub.url, "wrong-key", budget_seconds=5))
    try:
        with pytest.raises(UpstreamError, match="401"):
            refused.fetch(cus)
    finally:
        refused.close()


def test_stiggs_sdk_uses_the_stub_as_its_edge_api(
    stub: EdgeStub, redis_server: RedisServer, prefixed_redis: redis.Redis, prefix: str, cus: str
) -> None:
    """Stigg's own Node SDK (3.95.0) misses, fetches from the stub, caches, then hits."""
    stub.put(cus, every_kind())
    calls: list[dict[str, Any]] = [
        {"getter": "getBooleanEntitlement", "customerId": cus, "featureId": "feature-sso"},
        {"getter": "getMeteredEntitlement", "customerId": cus, "featureId": "feature-seats",
         "options": {"requestedUsage": 7}},
        {"getter": "getMeteredEntitlement", "customerId": cus, "featureId": "feature-seats",
         "options": {"requestedUsage": 8}},
        {"getter": "getNumericEntitlement", "customerId": cus, "featureId": "feature-projects"},
        {"getter": "getEnumEntitlement", "customerId": cus, "featureId": "feature-region",
         "options": {"requestedValues": ["eu-west"]}},
    ]  # fmt: skip

    results, events = run_stigg_sdk_with_events(
        redis_server.port, prefix, stub.url, calls, api_key=STUB_API_KEY, clock_ms=INSIDE_PERIOD
    )

    assert [r.get("hasAccess") for r in results] == [True, True, False, True, True]
    assert results[3]["value"] == 20
    assert events[0] == ["cacheMiss"]
    assert all(e == ["cacheHit"] for e in events[1:])  # the usage key was written too
    assert stub.requests(cus) == 1
    assert prefixed_redis.exists(f"{prefix}:c_{cus}", f"{prefix}:c_{cus}:f_feature-seats") == 2


def test_a_bad_file_stops_startup_with_one_line(tmp_path: Path) -> None:
    cases = {
        '{"scopes": [{"customerId": "c", "timestamp": "soon", "entitlements": []}]}': "scopes[0]",
        '{"snapshots": []}': "contract v1",
        '{"scopes": [{"customerId": "c", "timestamp": 1, "entitlements": [{"x": 1}]}]}': (
            "scopes[0]: entitlements[0]: has no feature"
        ),
    }
    for text, says in cases.items():
        data = tmp_path / "edge.json"
        data.write_text(text)
        done = subprocess.run(
            [sys.executable, "-m", "cache_pipeline.dev", "edge-stub", "--file", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env=AWS_TEST_ENV | {"PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert done.returncode == 2
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"cache-pipeline dev: edge stub file {data}")
        assert says in last


def test_logs_are_json_lines(stub: EdgeStub) -> None:
    lines = [json.loads(line) for line in stub.log.read_text().splitlines() if line.strip()]
    started = [line for line in lines if line["msg"].startswith("edge stub on http://")]
    assert [line["level"] for line in started] == ["info"]
    assert all({"time", "level", "msg"} <= set(line) for line in lines)


def _validator(document: dict[str, Any], schema: str) -> jsonschema.Draft202012Validator:
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:upstream-api", resource)
    reference = {"$ref": f"urn:upstream-api#/components/schemas/{schema}"}
    return jsonschema.Draft202012Validator(reference, registry=registry)


def test_answers_match_the_documented_api(stub: EdgeStub, cus: str) -> None:
    document = yaml.safe_load(API_DOC.read_text())
    get = document["paths"][EDGE_PATH]["get"]
    example = get["responses"]["200"]["content"]["application/json"]["example"]
    answers = _validator(document, "EntitlementsResponse")
    answers.validate(example)
    for entry in example["data"]["entitlements"]:
        assert list(entry) == ENTRY_FIELDS

    stored = stub.put(cus, every_kind() | {"accessDeniedReason": "NoActiveSubscription"})
    answers.validate(stub.get(cus).json())
    with pytest.raises(jsonschema.ValidationError):
        answers.validate({"data": {"entitlements": [{"usageLimit": 1}]}})
    _validator(document, "StoredScope").validate(stored)
    _validator(document, "Errors").validate(stub.get(cus + "x").json())
    _validator(document, "ScopeList").validate(stub.request("GET", "/_stub/scopes").json())
    put = document["paths"][EDGE_PATH]["put"]
    _validator(document, "ScopeSnapshot").validate(
        put["requestBody"]["content"]["application/json"]["example"]
    )
    stub_paths = {"/_stub/scopes", "/_stub/reload", "/_stub/requests"}
    assert set(document["paths"]) == {EDGE_PATH} | stub_paths
    for path in stub_paths:
        assert all(op["tags"] == ["stub"] for op in document["paths"][path].values())
