"""parse_message: contract models, reason codes and SNS unwrapping (CONTRACT.md section 1)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cache_pipeline.contract.messages import (
    CacheInvalidated,
    CreditsUpdated,
    EntitlementsUpdated,
    UsageUpdated,
    parse_message,
)
from cache_pipeline.errors import InvalidMessage, InvalidReason
from tests.support import factory

ENV = "production"


def parse(body: Any) -> Any:
    return parse_message(body if isinstance(body, str | bytes) else json.dumps(body), ENV)


def reason_of(body: Any) -> InvalidReason:
    with pytest.raises(InvalidMessage) as caught:
        parse(body)
    return caught.value.reason


def test_each_type_parses_to_its_model() -> None:
    assert isinstance(parse(factory.entitlements("c", 1, features={"f": 1})), EntitlementsUpdated)
    assert isinstance(parse(factory.usage("c", 1, "f", 2)), UsageUpdated)
    assert isinstance(parse(factory.credits("c", 1, "ai", 2)), CreditsUpdated)
    assert isinstance(parse(factory.invalidation(1, "c")), CacheInvalidated)
    assert isinstance(parse(factory.invalidation(1, everything=True)), CacheInvalidated)


def test_contract_example_parses() -> None:
    body = {
        "id": "7b0c9a1e-0d5c-4c55-9d2f-8f3f0d1c2b7a",
        "type": "usage.updated",
        "timestamp": 1764300000123,
        "environment": "production",
        "data": {
            "customerId": "cus-42",
            "resourceId": None,
            "featureId": "feature-seats",
            "currentUsage": 4,
            "usagePeriodStart": 1761955200000,
            "usagePeriodEnd": 1764547200000,
        },
    }
    message = parse(body)
    assert isinstance(message, UsageUpdated)
    assert message.id == body["id"]
    assert message.data.customer_id == "cus-42"
    assert message.data.current_usage == 4


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"\xff\xfe",
        "[1, 2]",
        '"text"',
        "NaN",
        '{"a": NaN}',
        "[" * 100000,
        '{"a": 1e400}',
        '{"a": -1e400}',
        '{"a": ' + "[" * 40 + "]" * 40 + "}",
        '{"a": ' + "[" * 2000 + "]" * 2000 + "}",
    ],
)
def test_not_json(body: str | bytes) -> None:
    assert reason_of(body) is InvalidReason.NOT_JSON


@pytest.mark.parametrize("kind", ["user.created", "", "USAGE.UPDATED", 7, None])
def test_unknown_type(kind: Any) -> None:
    body = factory.usage("c", 1, "f", 1)
    body["type"] = kind
    assert reason_of(body) is InvalidReason.UNKNOWN_TYPE


def test_missing_type_is_invalid_field() -> None:
    body = factory.usage("c", 1, "f", 1)
    del body["type"]
    assert reason_of(body) is InvalidReason.INVALID_FIELD


def test_wrong_environment() -> None:
    body = factory.usage("c", 1, "f", 1, environment="staging")
    with pytest.raises(InvalidMessage) as caught:
        parse(body)
    assert caught.value.reason is InvalidReason.WRONG_ENVIRONMENT
    assert caught.value.message_id == body["id"]
    assert isinstance(parse(factory.usage("c", 1, "f", 1, environment=ENV)), UsageUpdated)


def _set(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    index: Any = int(last) if last.isdigit() else last
    if value is _DELETE:
        del target[index]
    else:
        target[index] = value
    return body


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("timestamp", "1764300000123"),  # string for a number
        ("timestamp", 1764300000123.5),  # float timestamp
        ("timestamp", 1.0),
        ("timestamp", True),  # boolean for a number
        ("timestamp", 0),
        ("timestamp", -5),
        ("timestamp", 2**53),
        ("timestamp", _DELETE),
        ("id", _DELETE),
        ("id", ""),
        ("id", 42),
        ("id", "x" * 129),
        ("data", _DELETE),
        ("data", []),
        ("data.currentUsage", "4"),
        ("data.currentUsage", True),
        ("data.currentUsage", None),
        ("data.usagePeriodStart", 1.5),
        ("data.usagePeriodStart", "1"),
        ("data.customerId", ""),
        ("data.customerId", 42),
        ("data.customerId", "x" * 257),
        ("data.featureId", _DELETE),
        ("environment", 5),
    ],
)
def test_invalid_usage_fields(path: str, value: Any) -> None:
    body = _set(factory.usage("cus-42", 1764300000123, "seats", 4), path, value)
    assert reason_of(body) is InvalidReason.INVALID_FIELD


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.entitlements", _DELETE),
        ("data.entitlements", {}),
        ("data.entitlements.0", "seats"),
        ("data.entitlements.0.feature", _DELETE),
        ("data.entitlements.0.feature", "seats"),
        ("data.entitlements.0.feature.refId", _DELETE),
        ("data.entitlements.0.feature.refId", ""),
        ("data.entitlements.0.feature.refId", 7),
        ("data.entitlements.0.feature.featureType", "PLAN"),
        ("data.entitlements.0.feature.featureType", _DELETE),
        ("data.credits", {}),
        ("data.credits.0.currencyId", _DELETE),
        ("data.credits.0.currentUsage", "3"),
        ("data.credits.0.usagePeriodEnd", 2.5),
        ("data.accessDeniedReason", 3),
    ],
)
def test_invalid_entitlement_fields(path: str, value: Any) -> None:
    body = _set(
        factory.entitlements("cus-42", 10, features={"seats": 3}, credits={"ai": 1}), path, value
    )
    with pytest.raises(InvalidMessage) as caught:
        parse(body)
    assert caught.value.reason is InvalidReason.INVALID_FIELD
    if ".0.feature" in path:
        assert "entry 0" in caught.value.detail


def test_a_contract_v1_snapshot_is_poison_that_says_so() -> None:
    body = factory.entitlements("cus-42", 10)
    body["data"]["entitlements"] = [
        {"kind": "FEATURE", "id": "seats", "hasAccess": True, "usage": {"currentUsage": 1}}
    ]
    with pytest.raises(InvalidMessage) as caught:
        parse(body)
    assert caught.value.reason is InvalidReason.INVALID_FIELD
    assert "contract v1" in caught.value.detail
    assert "entry 0" in caught.value.detail


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"customers": []},
        {"all": False},
        {"all": True, "customers": [{"customerId": "c"}]},
        {"all": "true"},
        {"customers": [{"customerId": ""}]},
    ],
)
def test_invalid_invalidation(data: dict[str, Any]) -> None:
    body = factory.invalidation(5, "c")
    body["data"] = data
    assert reason_of(body) is InvalidReason.INVALID_FIELD


def test_unknown_fields_are_ignored_or_kept() -> None:
    body = factory.entitlements("c", 1, features={"f": None}, traceId="abc", version=2)
    body["data"]["entitlements"][0]["futureField"] = {"x": 1}
    message = parse(body)
    assert isinstance(message, EntitlementsUpdated)
    assert message.data.entitlements[0]["futureField"] == {"x": 1}
    usage = factory.usage("c", 1, "f", 1, somethingNew=[1, 2])
    assert isinstance(parse(usage), UsageUpdated)


def test_floats_allowed_for_amounts() -> None:
    message = parse(factory.credits("c", 1, "ai", 2.5, limit=10.25))
    assert isinstance(message, CreditsUpdated)
    assert message.data.current_usage == 2.5


def test_ids_are_kept_raw() -> None:
    message = parse(factory.usage("acme:eu", 1, "f.x/y", 1, resource="user@example.com"))
    assert isinstance(message, UsageUpdated)
    assert message.data.customer_id == "acme:eu"
    assert message.data.resource_id == "user@example.com"
    assert message.data.feature_id == "f.x/y"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.customerId", "a:r_b"),
        ("data.customerId", "a#timestamp"),
        ("data.customerId", "{a}"),
        ("data.customerId", "cus\n42"),
        ("data.customerId", "cus\x00"),
        ("data.customerId", "cus\x7f"),
        ("data.customerId", "cus\u0085"),
        ("data.customerId", "cus\u009f"),
        ("data.resourceId", "r:f_x"),
        ("data.resourceId", "r\x1b"),
        ("data.featureId", "f\tx"),
        ("data.featureId", "f:metadata"),
    ],
)
def test_unsafe_ids_in_usage_are_poison(path: str, value: Any) -> None:
    body = _set(factory.usage("cus-42", 1764300000123, "seats", 4), path, value)
    with pytest.raises(InvalidMessage) as caught:
        parse(body)
    assert caught.value.reason is InvalidReason.UNSAFE_ID
    assert path.removeprefix("data.") in caught.value.detail


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.entitlements.0.feature.refId", "seats#timestamp"),
        ("data.entitlements.0.feature.refId", "a:credit_b"),
        ("data.credits.0.currencyId", "ai}"),
    ],
)
def test_unsafe_ids_in_snapshots_are_poison(path: str, value: Any) -> None:
    body = factory.entitlements("cus-42", 10, features={"seats": 3}, credits={"ai": 1})
    assert reason_of(_set(body, path, value)) is InvalidReason.UNSAFE_ID


def test_unsafe_ids_in_invalidations_are_poison() -> None:
    assert reason_of(factory.invalidation(5, "ok", ("a", "b:r_c"))) is InvalidReason.UNSAFE_ID
    assert reason_of(factory.credits("c", 1, "ai#x", 2)) is InvalidReason.UNSAFE_ID


def test_dates_may_be_iso_strings() -> None:
    body = factory.usage("c", 1, "f", 1)
    body["data"]["usagePeriodStart"] = "2025-11-01T00:00:00.000Z"
    message = parse(body)
    assert isinstance(message, UsageUpdated)
    assert message.data.usage_period_start == 1761955200000


def sns(inner: Any) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "e3f1",
        "TopicArn": "arn:aws:sns:us-east-1:000000000000:entitlements",
        "Message": inner if isinstance(inner, str) else json.dumps(inner),
        "Timestamp": "2025-11-28T00:00:00.000Z",
    }


def test_sns_envelope_is_unwrapped() -> None:
    inner = factory.usage("cus-42", 5, "seats", 4)
    message = parse(sns(inner))
    assert isinstance(message, UsageUpdated)
    assert message.id == inner["id"]


def test_sns_envelope_with_bad_inner_body() -> None:
    assert reason_of(sns("{not json")) is InvalidReason.NOT_JSON
    assert reason_of(sns({"type": "nope"})) is InvalidReason.UNKNOWN_TYPE
    inner = factory.usage("c", 1, "f", 1, environment="staging")
    assert reason_of(sns(inner)) is InvalidReason.WRONG_ENVIRONMENT


def test_invalid_message_carries_the_id() -> None:
    body = _set(factory.usage("c", 1, "f", 1, id="msg-1"), "data.currentUsage", "x")
    with pytest.raises(InvalidMessage) as caught:
        parse(body)
    assert caught.value.message_id == "msg-1"
    assert str(caught.value).startswith("invalid_field: ")


def test_a_timestamp_beyond_the_accepted_skew_is_poison() -> None:
    body = json.dumps(factory.usage("cus-1", 10_000, "seats", 1))
    assert parse_message(body, "production", latest_ms=10_000).timestamp == 10_000
    with pytest.raises(InvalidMessage) as raised:
        parse_message(body, "production", latest_ms=9_999)
    assert raised.value.reason is InvalidReason.TIMESTAMP_IN_FUTURE
    assert raised.value.message_id is not None
