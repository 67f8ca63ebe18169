"""Hostile input: the parser and SNS unwrapping never crash, and no input writes outside its scope.

Every body either parses into a contract model or raises ``InvalidMessage`` with
one of the reason codes; nothing else escapes. For every accepted message,
each key the planner names lies inside that message's customer scope (checked
against an independent statement of the key encoding, ``tests/fuzz/scope.py``),
and applying accepted messages to a real Redis creates no key outside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.contract.messages import MESSAGE_TYPES, Message, parse_message
from cache_pipeline.contract.plan import ScriptCall, plan
from cache_pipeline.errors import InvalidMessage, InvalidReason
from cache_pipeline.keys import KeyLayout, unsafe_id_problem
from cache_pipeline.sqs.dlq import REASON, SOURCE_MESSAGE_ID
from tests.fuzz.scope import outside_scope
from tests.support import factory
from tests.support.applying import Applier
from tests.support.servers import RedisServer, SqsServer, wait_until
from tests.support.worker import (
    Workers,
    create_queue,
    expected_state,
    queue_depth,
    send,
    wait_for_state,
    worker_env,
)

ENV = "production"
FUZZ_DB = 13  # a database of the session's redis-server that no other test uses
ROOT = Path(__file__).resolve().parents[1]

TRICKY_IDS = [
    "a:b",
    "{x}",
    "}{",
    "c_1:r_2",
    "x#timestamp",
    "#timestamp",
    ":metadata",
    "victim:f_seats",
    "%3A",
    "%",
    "%25",
    "*",
    "?[]\\",
    "a\nb",
    "a\rb",
    "\x00",
    "\x1b[31m",
    "\x7f",
    " ",
    "\u2028",
    "é",
    "😀",
    "x" * 257,
    "",
]
ids = st.one_of(
    st.sampled_from(TRICKY_IDS),
    st.text(min_size=1, max_size=40),
    st.lists(st.sampled_from([*TRICKY_IDS[:12], "a", "b"]), min_size=1, max_size=4).map("".join),
)
valid_ids = ids.filter(lambda v: 0 < len(v) <= 256 and unsafe_id_problem(v) is None)
timestamps = st.one_of(
    st.integers(min_value=1, max_value=2**53 - 1),
    st.sampled_from([0, -1, 2**53, 2**63, 2**64 + 1, 10**30, 1.5, 1e300, "123", True, None]),
    st.floats(allow_nan=True, allow_infinity=True),
)
any_text = st.one_of(  # lone surrogates too: JSON can spell them, UTF-8 cannot carry them
    st.text(st.characters(exclude_categories=()), max_size=20),
    st.sampled_from(["\ud800", "a\udc00b", "\ud83d", "\ud83d\ude00"]),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
amounts = st.one_of(st.integers(min_value=-(2**60), max_value=2**60), st.floats(), json_leaves)


def reason_of(body: bytes | str) -> Message | InvalidReason:
    """Parse; on rejection return the reason, after checking it is one of the four codes."""
    try:
        return parse_message(body, ENV)
    except InvalidMessage as exc:
        rejection = exc
    assert rejection.reason in set(InvalidReason)
    assert rejection.detail
    return rejection.reason


good_timestamps = st.integers(min_value=1, max_value=2**53 - 1)
good_amounts = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | st.floats(
    min_value=-1e15, max_value=1e15
)


@st.composite
def entitlement_items(draw: st.DrawFn, hostile: bool) -> Any:
    """A Stigg Edge API entry; ``hostile`` also breaks its shape and types."""
    types = (
        ["BOOLEAN", "NUMBER", "ENUM", "number", "OTHER", None]
        if hostile
        else [
            "BOOLEAN",
            "NUMBER",
            "ENUM",
        ]
    )
    feature: dict[str, Any] = {
        "refId": draw(ids if hostile else valid_ids),
        "featureType": draw(st.sampled_from(types)),
        "meterType": draw(st.sampled_from(["None", "Fluctuating", "Incremental"])),
    }
    item: dict[str, Any] = {
        "feature": feature,
        "usageLimit": draw(json_leaves if hostile else st.none() | good_amounts),
        "hasUnlimitedUsage": draw(json_leaves if hostile else st.booleans()),
        "currentUsage": draw(amounts if hostile else good_amounts),
        "usagePeriodStart": draw(timestamps if hostile else st.none() | good_timestamps),
        "usageUpdatedAt": draw(timestamps if hostile else st.none() | good_timestamps),
        "enumValues": draw(json_values if hostile else st.lists(st.text(max_size=5), max_size=3)),
    }
    if draw(st.booleans()):
        item["extra"] = draw(json_values if hostile else any_text)
    if hostile and draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from([{"kind": "FEATURE", "id": "x"}, {"feature": None}, [], "x"]))
    return item


@st.composite
def data_for(draw: st.DrawFn, kind: str, hostile: bool = True) -> Any:
    id_strategy = ids if hostile else valid_ids
    amount = amounts if hostile else good_amounts
    ref = {"customerId": draw(id_strategy), "resourceId": draw(st.none() | id_strategy)}
    if kind == "entitlements.updated":
        items = draw(st.lists(entitlement_items(hostile), max_size=4))
        credits = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"currencyId": id_strategy, "currentUsage": amount, "usageLimit": amount}
                ),
                max_size=2,
            )
        )
        return {
            **ref,
            "accessDeniedReason": draw(st.none() | any_text),
            "entitlements": items,
            "credits": credits,
        }
    if kind == "usage.updated":
        return {**ref, "featureId": draw(id_strategy), "currentUsage": draw(amount)}
    if kind == "credits.updated":
        return {**ref, "currencyId": draw(id_strategy), "currentUsage": draw(amount)}
    if kind == "cache.invalidated":
        refs = draw(st.lists(st.fixed_dictionaries({"customerId": id_strategy}), max_size=3))
        forms = [{"customers": refs}, {"all": True}, {}, {"all": False}]
        return draw(st.sampled_from(forms if hostile else forms[:2]))
    return draw(json_values)


@st.composite
def wire_messages(draw: st.DrawFn, hostile: bool = True) -> dict[str, Any]:
    """Contract-shaped messages; ``hostile`` also breaks types, fields and timestamps."""
    kinds = [*MESSAGE_TYPES, "usage.deleted", ""] if hostile else list(MESSAGE_TYPES)
    kind = draw(st.sampled_from(kinds))
    message: dict[str, Any] = {
        "id": draw(ids if hostile else valid_ids.filter(lambda v: len(v) <= 128)),
        "type": kind,
        "timestamp": draw(timestamps if hostile else good_timestamps),
        "environment": draw(st.sampled_from([ENV, ENV, "staging", "", None] if hostile else [ENV])),
        "data": draw(data_for(kind, hostile)),
    }
    if hostile:
        for field in draw(st.sets(st.sampled_from(sorted(message)), max_size=2)):
            del message[field]
    return message


def serialize(message: Any, *, sns: int, encoding: str) -> bytes:
    text = json.dumps(message, allow_nan=True)
    for _ in range(sns):
        text = json.dumps({"Type": "Notification", "MessageId": "m-1", "Message": text})
    return text.encode(encoding, errors="surrogatepass")


def assert_plan_in_scope(message: Message) -> None:
    """Every planned key is in the scope, and every key and argument can go on the wire."""
    for cluster in (False, True):
        layout = KeyLayout("P", cluster=cluster)
        for policy in CacheUpdatePolicy:
            steps = plan(message, layout, ttl=60, policy=policy)
            calls = [step for step in steps if isinstance(step, ScriptCall)]
            keys = [k for call in calls for k in call.keys]
            assert outside_scope(keys, "P", [message], cluster=cluster) == []
            assert not any(k.endswith("#timestamp") for k in keys)
            for text in [*keys, *(a for call in calls for a in call.args)]:
                text.encode("utf-8")  # what redis-py sends: a lone surrogate would raise here


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_parsed_or_rejected_with_a_reason(body: bytes) -> None:
    result = reason_of(body)
    if not isinstance(result, InvalidReason):
        assert_plan_in_scope(result)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans().flatmap(wire_messages),
    st.sampled_from([0, 0, 1, 2]),
    st.sampled_from(["utf-8", "utf-8", "utf-16", "utf-32", "latin-1"]),
    st.none() | st.integers(min_value=0, max_value=400),
)
def test_hostile_messages_never_escape_their_scope(
    message: dict[str, Any], sns: int, encoding: str, cut: int | None
) -> None:
    try:
        body = serialize(message, sns=sns, encoding=encoding)
    except UnicodeEncodeError:
        body = serialize(message, sns=sns, encoding="utf-8")
    if cut is not None:
        body = body[:cut]
    result = reason_of(body)
    if not isinstance(result, InvalidReason):
        assert_plan_in_scope(result)


def _valid(kind: str = "usage.updated", **data: Any) -> dict[str, Any]:
    base = {"customerId": "c", "featureId": "f", "currentUsage": 1}
    return {"id": "m", "type": kind, "timestamp": 5, "data": {**base, **data}}


def _body(**top: Any) -> str:
    return json.dumps({**_valid(), **top}, allow_nan=True, ensure_ascii=False)


PATHOLOGICAL: list[tuple[str, bytes | str, InvalidReason | None]] = [
    ("empty", b"", InvalidReason.NOT_JSON),
    ("null", b"null", InvalidReason.NOT_JSON),
    ("array", b"[1,2]", InvalidReason.NOT_JSON),
    ("invalid utf-8", b'{"id":"\xff\xfe"}', InvalidReason.NOT_JSON),
    ("utf-16 with BOM", _body().encode("utf-16"), InvalidReason.NOT_JSON),
    ("latin-1 text", _body(note="café").encode("latin-1"), InvalidReason.NOT_JSON),
    ("NaN timestamp", _body(timestamp=float("nan")), InvalidReason.NOT_JSON),
    ("Infinity usage", json.dumps(_valid(currentUsage=float("inf"))), InvalidReason.NOT_JSON),
    (
        "-Infinity",
        b'{"id":"m","type":"usage.updated","timestamp":-Infinity}',
        InvalidReason.NOT_JSON,
    ),
    ("timestamp 2**53", _body(timestamp=2**53), InvalidReason.INVALID_FIELD),
    ("timestamp 2**64", _body(timestamp=2**64 + 1), InvalidReason.INVALID_FIELD),
    (
        "timestamp 10**4000",
        _body().replace('"timestamp": 5', '"timestamp": 1' + "0" * 4000),
        InvalidReason.INVALID_FIELD,
    ),
    (
        "timestamp past int digit limit",
        _body().replace('"timestamp": 5', '"timestamp": 1' + "0" * 5000),
        InvalidReason.NOT_JSON,
    ),
    ("timestamp float", _body(timestamp=5.0), InvalidReason.INVALID_FIELD),
    ("timestamp string", _body(timestamp="5"), InvalidReason.INVALID_FIELD),
    ("timestamp bool", _body(timestamp=True), InvalidReason.INVALID_FIELD),
    ("timestamp zero", _body(timestamp=0), InvalidReason.INVALID_FIELD),
    ("usage 2**60", json.dumps(_valid(currentUsage=2**60)), InvalidReason.INVALID_FIELD),
    ("deep nesting", b"[" * 200_000 + b"]" * 200_000, InvalidReason.NOT_JSON),
    (
        "deep nesting in data",
        _body().replace('"data": {', '"data": {"x":' + "[" * 5000 + "]" * 5000 + ","),
        InvalidReason.NOT_JSON,
    ),
    ("huge id", _body(id="x" * 1_000_000), InvalidReason.INVALID_FIELD),
    ("huge body", _body(padding="p" * 2_000_000), None),
    ("newline in customer id", json.dumps(_valid(customerId="a\nb")), InvalidReason.UNSAFE_ID),
    ("escape in feature id", json.dumps(_valid(featureId="\x1b[2J")), InvalidReason.UNSAFE_ID),
    ("id reaching a resource", json.dumps(_valid(customerId="a:r_b")), InvalidReason.UNSAFE_ID),
    ("id forging a version", json.dumps(_valid(featureId="f#timestamp")), InvalidReason.UNSAFE_ID),
    (
        "contract v1 snapshot",
        b'{"id":"m","type":"entitlements.updated","timestamp":5,"data":{"customerId":"c","entitlements":[{"kind":"FEATURE","id":"f"}]}}',
        InvalidReason.INVALID_FIELD,
    ),
    (
        "entry without refId",
        b'{"id":"m","type":"entitlements.updated","timestamp":5,"data":{"customerId":"c","entitlements":[{"feature":{"featureType":"BOOLEAN"}}]}}',
        InvalidReason.INVALID_FIELD,
    ),
    (
        "lone surrogate in id",
        b'{"id":"m","type":"usage.updated","timestamp":5,"data":{"customerId":"\\ud800","featureId":"f","currentUsage":1}}',
        InvalidReason.NOT_JSON,
    ),
    (
        "lone surrogate in opaque field",
        b'{"id":"m","type":"entitlements.updated","timestamp":5,"data":{"customerId":"c","entitlements":[{"feature":{"refId":"f","featureType":"BOOLEAN"},"note":"\\udc00"}]}}',
        InvalidReason.NOT_JSON,
    ),
    (
        "lone surrogate in denied reason",
        b'{"id":"m","type":"entitlements.updated","timestamp":5,"data":{"customerId":"c","accessDeniedReason":"\\ud83d","entitlements":[]}}',
        InvalidReason.NOT_JSON,
    ),
    (
        "surrogate pair is a character",
        b'{"id":"m","type":"entitlements.updated","timestamp":5,"data":{"customerId":"c","accessDeniedReason":"\\ud83d\\ude00","entitlements":[]}}',
        None,
    ),
    (
        "escaped backslash before u",
        b'{"id":"m","type":"entitlements.updated","timestamp":5,"data":{"customerId":"c","accessDeniedReason":"\\\\ud800","entitlements":[]}}',
        None,
    ),
    (
        "str body with lone surrogate",
        '{"id":"m","type":"entitlements.updated","timestamp":5,"data":{"customerId":"c","accessDeniedReason":"\ud800","entitlements":[]}}',
        InvalidReason.NOT_JSON,
    ),
    (
        "SNS with NaN inside",
        json.dumps({"Type": "Notification", "Message": _body(timestamp=float("nan"))}),
        InvalidReason.NOT_JSON,
    ),
    (
        "SNS with non-JSON inside",
        json.dumps({"Type": "Notification", "Message": "<xml/>"}),
        InvalidReason.NOT_JSON,
    ),
    (
        "SNS with object Message",
        json.dumps({"Type": "Notification", "Message": _valid()}),
        InvalidReason.INVALID_FIELD,
    ),
    (
        "SNS twice",
        json.dumps(
            {
                "Type": "Notification",
                "Message": json.dumps({"Type": "Notification", "Message": _body()}),
            }
        ),
        InvalidReason.INVALID_FIELD,
    ),
    ("SNS once", json.dumps({"Type": "Notification", "Message": _body()}), None),
    ("wrong environment", _body(environment="staging"), InvalidReason.WRONG_ENVIRONMENT),
    ("unknown type", _body(type="usage.deleted"), InvalidReason.UNKNOWN_TYPE),
    (
        "type missing",
        json.dumps({k: v for k, v in _valid().items() if k != "type"}),
        InvalidReason.INVALID_FIELD,
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [(b, e) for _, b, e in PATHOLOGICAL], ids=[n for n, _, _ in PATHOLOGICAL]
)
def test_pathological_bodies_have_the_expected_outcome(
    body: bytes | str, expected: InvalidReason | None
) -> None:
    result = reason_of(body)
    if expected is None:
        assert not isinstance(result, InvalidReason), result
        assert_plan_in_scope(result)
    else:
        assert result == expected


@pytest.fixture(scope="module")
def fuzz_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client(db=FUZZ_DB)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@st.composite
def accepted_streams(draw: st.DrawFn) -> list[Message]:
    """A snapshot for one hostile customer scope, then usage, credits and an invalidation."""
    data = draw(data_for("entitlements.updated", hostile=False))
    data["entitlements"] = [
        {
            "feature": {
                "refId": item["feature"]["refId"],
                "featureType": "NUMBER",
                "meterType": "Fluctuating",
            },
            "currentUsage": 1,
        }
        for item in data["entitlements"]
    ]
    data["accessDeniedReason"] = None
    ref = {"customerId": data["customerId"], "resourceId": data["resourceId"]}
    bodies = [
        {"type": "entitlements.updated", "timestamp": 10, "data": data},
        {
            "type": "usage.updated",
            "timestamp": 11,
            "data": {**ref, "featureId": draw(valid_ids), "currentUsage": 2},
        },
        {
            "type": "credits.updated",
            "timestamp": 12,
            "data": {**ref, "currencyId": draw(valid_ids), "currentUsage": 3},
        },
        {"type": "cache.invalidated", "timestamp": 13, "data": {"customers": [ref]}},
        {"type": "entitlements.updated", "timestamp": 14, "data": data},
    ]
    return [parse_message(json.dumps({"id": str(i), **b}), ENV) for i, b in enumerate(bodies)]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(accepted_streams())
def test_accepted_messages_write_nothing_outside_their_scope(
    fuzz_db: redis.Redis, stream: list[Message]
) -> None:
    prefix = f"fz-{uuid.uuid4().hex[:8]}"
    bystander = f"{prefix}:c_victim"
    fuzz_db.set(bystander, "untouched")
    fuzz_db.set("unrelated", "untouched")
    store = Applier.of(fuzz_db, KeyLayout(prefix), ttl=60, policy=CacheUpdatePolicy.UPSERT)
    for message in stream:
        store.apply(message)
    keys = [k for k in fuzz_db.scan_iter(count=1000) if k not in (bystander, "unrelated")]
    assert keys, "the snapshot wrote nothing"
    assert outside_scope(keys, prefix, stream, versions=True) == []
    assert fuzz_db.get(bystander) == "untouched"
    fuzz_db.flushdb()


def test_atheris_finds_no_crash_in_a_bounded_run(tmp_path: Path) -> None:
    """libFuzzer mutates real messages: only InvalidMessage escapes, every key stays in scope."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, body, _ in PATHOLOGICAL[:-4]:
        if len(body) < 4096:
            data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
            (corpus / name.replace(" ", "_")).write_bytes(data)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.fuzz_parser",
            "-runs=200000",
            "-max_len=2048",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done 200000 runs" in result.stderr, result.stderr[-2000:]


def _sqs_text(body: bytes | str) -> str | None:
    """The body as SQS can carry it (UTF-8, XML characters, 256 KiB), or None."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        text.encode("utf-8")
    except UnicodeError:
        return None
    allowed = all(c in "\t\n\r" or "\x20" <= c <= "\ud7ff" or c >= "\ue000" for c in text)
    return text if allowed and len(text.encode()) < 256 * 1024 else None


def _parked_reasons(sqs_server: SqsServer, dlq_url: str, count: int) -> dict[str, str]:
    """The reason each of ``count`` source messages was parked with, read from the DLQ.

    Keyed by the source message's SQS id (the ``sourceMessageId`` attribute): a message
    redelivered before its delete landed (a 3 s visibility timeout on a busy machine) is
    parked again, as at-least-once delivery allows, and is still one message here.
    """
    client = sqs_server.client()
    reasons: dict[str, str] = {}

    def collect() -> bool:
        reply = client.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=60,
        )
        for message in reply.get("Messages", []):
            attributes = message["MessageAttributes"]
            source = attributes[SOURCE_MESSAGE_ID]["StringValue"]
            reasons[source] = attributes[REASON]["StringValue"]
        return len(reasons) >= count

    wait_until(collect, timeout=30, what=f"{count} source messages in the DLQ")
    return reasons


def test_pathological_bodies_through_the_real_worker_are_parked_with_their_reason(
    sqs_server: SqsServer, redis_server: RedisServer, redis_client: redis.Redis, prefix: str
) -> None:
    """Nothing crashes the worker: each hostile body reaches the DLQ with its reason."""
    cases = [
        (text, reason)
        for _, body, reason in PATHOLOGICAL
        if reason is not None and (text := _sqs_text(body)) is not None
    ]
    expected = Counter(reason.value for _, reason in cases)
    sqs = sqs_server.client()
    queue, dlq = create_queue(sqs), create_queue(sqs)
    env = worker_env(queue, sqs_server, redis_server, prefix, DEAD_LETTER_QUEUE_URL=dlq)
    workers = Workers({**env, "POISON_FLOOD_RATIO": "0"})
    try:
        worker = workers.start()
        send(sqs_server, queue, [text for text, _ in cases])
        last = factory.entitlements("cus-after", 10, features={"seats": 1})
        send(sqs_server, queue, [last])
        wait_for_state(
            redis_client, prefix, expected_state(prefix, [last], CacheUpdatePolicy.UPSERT)
        )
        wait_until(lambda: queue_depth(sqs_server, queue) == 0, timeout=30, what="queue drained")
        assert worker.readyz()["status"] == "UP"
        parked = Counter(_parked_reasons(sqs_server, dlq, len(cases)).values())
    finally:
        workers.stop_all()
        for key in redis_client.scan_iter(match=f"{prefix}:*"):
            redis_client.unlink(key)
    assert parked == expected
