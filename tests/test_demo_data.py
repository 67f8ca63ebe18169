"""deploy/demo: the edge stub's demo scopes and the demo feed (``make run``, compose) follow v2.

The stub file must load as the stub loads it and match the documented file schema; the
feed's ``entitlements.updated`` messages must carry exactly what the stub serves for the
same scope at the same version (a producer forwarding the Edge's answer); together they
show every kind of feature, a credit, a resource scope and an id with ``:``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cache_pipeline.contract.stigg_map import entry_problem, is_metered
from cache_pipeline.dev.edge_stub import Snapshot, load_snapshots
from cache_pipeline.dev.publish import read_messages

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "deploy" / "demo"
API_DOC = ROOT / "docs" / "upstream-api.yaml"


@pytest.fixture(scope="module")
def scopes() -> dict[tuple[str, str | None], Snapshot]:
    return load_snapshots(DEMO / "customers.json")


@pytest.fixture(scope="module")
def feed() -> list[dict[str, Any]]:
    lines = (DEMO / "feed.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_the_stub_file_follows_the_documented_schema() -> None:
    document = yaml.safe_load(API_DOC.read_text())
    resource = Resource.from_contents(document, default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:upstream-api", resource)
    validator = jsonschema.Draft202012Validator(
        {"$ref": "urn:upstream-api#/components/schemas/StubFile"}, registry=registry
    )
    validator.validate(json.loads((DEMO / "customers.json").read_text()))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"scopes": [{"customerId": "c", "timestamp": 1, "entitlements": [{}]}]})


def test_the_demo_shows_every_kind(scopes: dict[tuple[str, str | None], Snapshot]) -> None:
    features = [entry["feature"] for s in scopes.values() for entry in s.entitlements]
    kinds = {
        (f["featureType"], "metered" if is_metered(f) else f.get("meterType")) for f in features
    }
    assert {("BOOLEAN", "None"), ("NUMBER", "None"), ("NUMBER", "metered"), ("ENUM", None)} <= kinds
    assert any(s.credits for s in scopes.values())
    assert ("acme:eu", "site-1") in scopes
    assert ("acme:eu", None) in scopes  # a resource scope is read with its global scope


def test_the_feed_is_contract_v2() -> None:
    lines = (DEMO / "feed.jsonl").read_text().splitlines()
    assert len(read_messages(lines, "development")) == len([ln for ln in lines if ln.strip()])


def test_the_feed_forwards_what_the_stub_serves(
    scopes: dict[tuple[str, str | None], Snapshot], feed: list[dict[str, Any]]
) -> None:
    assert len({message["id"] for message in feed}) == len(feed)
    updated = [m for m in feed if m["type"] == "entitlements.updated"]
    assert {(m["data"]["customerId"], m["data"]["resourceId"]) for m in updated} < set(scopes)
    for message in updated:
        scope = scopes[(message["data"]["customerId"], message["data"]["resourceId"])]
        assert message["timestamp"] == scope.timestamp
        assert message["data"] == scope.message_data()
        assert all(entry_problem(entry) is None for entry in message["data"]["entitlements"])
    assert any(m["data"]["resourceId"] for m in updated)


def test_the_feeds_usage_and_credit_updates_land_on_what_it_wrote(
    feed: list[dict[str, Any]],
) -> None:
    written: dict[tuple[str, str | None], dict[str, Any]] = {}
    for message in feed:
        data = message["data"]
        scope = (data["customerId"], data["resourceId"])
        if message["type"] == "entitlements.updated":
            written[scope] = message
            continue
        snapshot = written[scope]  # the scope exists before its usage or credit message
        assert message["timestamp"] > snapshot["timestamp"]
        if message["type"] == "usage.updated":
            (entry,) = [
                e
                for e in snapshot["data"]["entitlements"]
                if e["feature"]["refId"] == data["featureId"]
            ]
            assert is_metered(entry["feature"])
        else:
            assert message["type"] == "credits.updated"
            currencies = [c["currencyId"] for c in snapshot["data"]["credits"]]
            assert data["currencyId"] in currencies
