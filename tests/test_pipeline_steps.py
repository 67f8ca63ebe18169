"""The pipeline's pure steps: routing, per-message isolation, store answers, verdicts.

No process, no Redis, no queue: ``decode`` and ``run_tasks`` get a parser and a task
runner as plain functions, ``verdicts`` gets deliveries with their store answers.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

import pytest

from cache_pipeline.config import CacheUpdatePolicy
from cache_pipeline.contract.messages import Message, TaskCall
from cache_pipeline.contract.plan import Outcome, Planned, Planner
from cache_pipeline.errors import InvalidMessage, InvalidReason, StoreError
from cache_pipeline.keys import KeyLayout
from cache_pipeline.sqs.queue import Received
from cache_pipeline.tasks.delivery import Batch, Call, Delivery
from cache_pipeline.tasks.pipeline import (
    TASK_NAMES,
    Action,
    Decode,
    Run,
    decode,
    run_tasks,
    verdicts,
    with_answers,
)
from tests.support import factory

ENV = "production"
PLANNER = Planner(KeyLayout(ENV), ttl=60, policy=CacheUpdatePolicy.UPSERT)


def plan_call(call: Call) -> Planned:
    """What the per-type tasks do, without Celery: the message's planned writes."""
    if call.message is not None:
        return PLANNER.plan(call.message)
    (payload,) = call.args
    return PLANNER.plan(PLANNER.parse(json.dumps(payload)))


def received(body: dict[str, Any] | str, n: int = 0) -> Received:
    text = body if isinstance(body, str) else json.dumps(body)
    return Received(receipt=f"r-{n}", body=text, message_id=f"sqs-{n}", sent_at=1.0)


def run_batch(
    bodies: list[dict[str, Any] | str], parse: Decode = PLANNER.decoder, run: Run = plan_call
) -> Batch:
    batch = tuple(Delivery(received(b, i), 0.0) for i, b in enumerate(bodies))
    return run_tasks(run)(decode(parse)(batch))


def celery_envelope(task: str, args: Any, kwargs: Any = None, *, b64: bool = True) -> str:
    """kombu's SQS envelope of a Celery protocol 2 message, as ``send_task`` writes it."""
    call = json.dumps([args, kwargs or {}, {"callbacks": None, "chain": None}])
    envelope = {
        "body": base64.b64encode(call.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": task, "id": "celery-id-1", "argsrepr": "..."},
        "properties": {"body_encoding": "base64", "delivery_info": {"routing_key": "q"}},
    }
    text = json.dumps(envelope)
    return base64.b64encode(text.encode()).decode() if b64 else text


def test_a_contract_message_goes_to_the_task_of_its_type() -> None:
    body = factory.usage("cus-1", 100, "seats", 3)
    (delivery,) = run_batch([body])
    assert delivery.call is not None
    assert delivery.call.task == TASK_NAMES["usage.updated"]
    assert delivery.call.task_id == "sqs-0"
    assert delivery.planned is not None
    assert delivery.planned.message.id == body["id"]
    assert delivery.invalid is None


@pytest.mark.parametrize("b64", [True, False], ids=["base64", "plain"])
def test_a_celery_message_goes_to_the_task_it_names_with_its_arguments(b64: bool) -> None:
    body = factory.entitlements("cus-1", 100, features={"seats": 2})
    text = celery_envelope(TASK_NAMES["entitlements.updated"], [body], b64=b64)
    (delivery,) = run_batch([text])
    assert delivery.call == Call(TASK_NAMES["entitlements.updated"], "celery-id-1", [body], {})
    assert delivery.planned is not None
    assert delivery.planned.message.id == body["id"]


@pytest.mark.parametrize(
    "extra",
    [
        {"properties": {"delivery_info": "x"}, "body": "y", "headers": {}},
        {"properties": {}, "body": "y", "headers": {"task": ""}},
        {"properties": "text", "headers": {"task": "cache_pipeline.usage_updated"}},
    ],
)
def test_any_other_json_object_is_a_contract_message_whatever_its_fields(
    extra: dict[str, Any],
) -> None:
    body = factory.usage("cus-1", 100, "seats", 3) | extra
    (delivery,) = run_batch([body])
    assert delivery.invalid is None
    assert delivery.call is not None
    assert delivery.call.message is not None


def test_an_unreadable_celery_message_is_poison_with_a_reason() -> None:
    envelope = json.loads(celery_envelope("cache_pipeline.usage_updated", [], b64=False))
    envelope["content-type"] = "application/x-python-serialize"
    not_json, no_task = run_batch(
        [json.dumps(envelope), celery_envelope("cache_pipeline.nothing", [{}])]
    )
    assert not_json.invalid is not None
    assert not_json.invalid.reason is InvalidReason.NOT_JSON
    assert no_task.invalid is not None  # the runner knows no such task: plan_call parses {}


def boom(exc: BaseException) -> Any:
    def raise_it(*_: Any) -> Any:
        raise exc

    return raise_it


@pytest.mark.parametrize(
    ("stage", "exc"),
    [
        ("parse", ValueError("Out of range float values are not JSON compliant")),
        ("parse", RecursionError("maximum recursion depth exceeded")),
        ("run", TypeError("argument after * must be an iterable, not int")),
        ("run", UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")),
        ("run", KeyError("data")),
    ],
)
def test_whatever_one_message_raises_makes_it_alone_unprocessable(
    stage: str, exc: Exception
) -> None:
    good = factory.usage("cus-1", 100, "seats", 1)
    bad = factory.usage("cus-2", 100, "seats", 1)

    def parse(body: str) -> Message | TaskCall:
        if '"cus-2"' in body and stage == "parse":
            boom(exc)()
        return PLANNER.decoder(body)

    def run(call: Call) -> Planned:
        if call.message is not None and call.message.data.customer_id == "cus-2":  # type: ignore[union-attr]
            boom(exc)()
        return plan_call(call)

    first, broken, last = run_batch([good, bad, good], parse=parse, run=run)
    assert first.planned is not None
    assert last.planned is not None
    assert broken.planned is None
    assert broken.invalid is not None
    assert broken.invalid.reason is InvalidReason.UNPROCESSABLE
    assert broken.invalid.detail.startswith(type(exc).__name__ + ":")
    if stage == "run":
        assert broken.invalid.message_id == bad["id"]
    assert [d.writable for d in (first, broken, last)] == [True, False, True]


def test_a_task_that_returns_something_else_than_its_writes_is_unprocessable() -> None:
    (delivery,) = run_batch([factory.usage("cus-1", 1, "seats", 1)], run=lambda call: "ok")  # type: ignore[arg-type,return-value]
    assert delivery.invalid is not None
    assert delivery.invalid.reason is InvalidReason.UNPROCESSABLE
    assert "TypeError" in delivery.invalid.detail


def test_invalid_input_keeps_its_own_reason() -> None:
    bodies: list[dict[str, Any] | str] = [
        '{"a": 1e400}',
        "[" * 1000 + "]" * 1000,
        factory.usage("cus-1", 253402300799000, "seats", 1),
        factory.usage("cus\u0085x", 100, "seats", 1),
    ]
    reasons = [d.invalid.reason if d.invalid else None for d in run_batch(bodies)]
    assert reasons == [
        InvalidReason.NOT_JSON,
        InvalidReason.NOT_JSON,
        InvalidReason.TIMESTAMP_IN_FUTURE,
        InvalidReason.UNSAFE_ID,
    ]


def deliveries_for(*results: Outcome | StoreError | InvalidMessage | None) -> list[Delivery]:
    made = []
    for n, result in enumerate(results):
        delivery = Delivery(received(f"body-{n}", n), 0.0)
        if isinstance(result, InvalidMessage):
            delivery = replace(delivery, invalid=result)
        else:
            message = PLANNER.parse(json.dumps(factory.usage("c", 1, "f", n)))
            delivery = replace(delivery, planned=PLANNER.plan(message), result=result)
        made.append(delivery)
    return made


POISON = InvalidMessage(InvalidReason.NOT_JSON, "x")
REFUSED = StoreError("WRONGTYPE")


@pytest.mark.parametrize(
    ("result", "has_dlq", "action"),
    [
        (Outcome.WRITTEN, True, Action.DELETE),
        (Outcome.STALE, False, Action.DELETE),
        (Outcome.POLICY, True, Action.DELETE),
        (Outcome.INVALIDATED, False, Action.DELETE),
        (POISON, True, Action.PARK),
        (POISON, False, Action.LEAVE),
        (REFUSED, True, Action.LEAVE),
        (None, True, Action.RELEASE),  # planned, not written: Redis could not take the batch
    ],
)
def test_each_verdict(
    result: Outcome | StoreError | InvalidMessage | None, has_dlq: bool, action: Action
) -> None:
    (delivery,) = deliveries_for(result)
    lists = verdicts((delivery,), has_dlq=has_dlq)
    assert lists.pop(action) == [delivery]
    assert all(other == [] for other in lists.values())


def test_held_poison_is_released_not_parked() -> None:
    (delivery,) = deliveries_for(POISON)
    delivery = replace(delivery, held=True)
    assert verdicts((delivery,), has_dlq=True)[Action.RELEASE] == [delivery]


def test_store_answers_go_to_the_written_messages_in_order() -> None:
    made = deliveries_for(None, POISON, None, None)
    made[3] = replace(made[3], held=True)  # never written
    answered = with_answers(tuple(made), [Outcome.WRITTEN, REFUSED])
    assert [d.result for d in answered] == [Outcome.WRITTEN, None, REFUSED, None]
    split = verdicts(answered, has_dlq=False)
    assert split[Action.DELETE] == [answered[0]]
    assert split[Action.LEAVE] == [answered[1], answered[2]]
    assert split[Action.RELEASE] == [answered[3]]


def test_a_poison_message_keeps_its_body_and_names_its_ids() -> None:
    (delivery,) = run_batch(['{"id": "m-1", "type": "nope"}'])
    poison = delivery.poison()
    assert (poison.body, poison.reason, poison.message_id, poison.sqs_message_id) == (
        '{"id": "m-1", "type": "nope"}',
        "unknown_type",
        "m-1",
        "sqs-0",
    )
    assert delivery.log_fields() == {"id": "m-1", "type": "unknown", "customer": None}
